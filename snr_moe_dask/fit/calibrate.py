"""The fit's calibration tasks: each expert's exact leave-one-out errors on a sample
of training chunks, in observed-SNR quantile bins (the model's ``calibration_``),
and with a gate the soft mixture's own: the gate's mixture of those errors.

They run on workers and need only numpy and scipy.
"""

from __future__ import annotations

import time

import numpy as np

from ..kernels import stats
from ..kernels.calibration import (
    calibration_table,
    cell_weights,
    expert_variance,
    factor_system,
    hat_diagonal,
    loo_residuals,
    mixture_bound,
)
from ..kernels.cells import assign_cells
from ..kernels.gate import gate_probabilities, hard_route_bins
from ..kernels.gate_features import gate_matrix
from ..kernels.mixture import expert_predictions
from ..kernels.selection import select_rows
from ..kernels.snr import find_bad_pixels, snr_statistics
from ..kernels.variables import routed_variable, spectrum_values
from .settings import FitSettings


def expert_system(solved: dict) -> dict:
    """What the calibration tasks need of the solution (graph task: a small key)."""
    keys = ("coef", "intercept", "mean_x", "alpha", "n_train", "experts", "fallback", "cell_map")
    return {key: solved[key] for key in keys}


def factor_expert(piece: dict | None, system: dict, settings: FitSettings, e: int) -> dict | None:
    """Expert ``e``'s factor for its hat-matrix diagonal (graph task); None for an
    expert served by the global model (it shares the global model's errors).

    ``piece`` holds the expert's statistics in one slot
    (:func:`snr_moe_dask.fit.solve.expert_piece`).
    """
    if piece is None or e >= len(system["experts"]) or system["experts"][e] in system["fallback"]:
        return None  # not an expert of the solve (a search chose fewer), or a fallback
    t0 = time.perf_counter()
    factor = factor_system(
        stats.slot_gram(piece, 0),
        piece["n"][0],
        float(system["alpha"][e]),
        standardize=settings.standardize,
    )
    factor["seconds"] = time.perf_counter() - t0
    return factor


def calibration_chunk(
    chunk,
    index: int,
    records: dict,
    system: dict,
    factors: list,
    gate: dict | None,
    settings: FitSettings,
) -> dict:
    """Every expert's held-out error on one training chunk (graph task).

    A spectrum in an expert's training set (the global model's: every used
    spectrum; a cell's expert: the spectra of its cells, as the pass recorded
    them) gets its exact leave-one-out residual
    ``r / (1 - h)`` (:mod:`snr_moe_dask.kernels.calibration`); for the other
    experts its plain residual is already held out. Spectra the fit excluded
    (a NaN target or SNR, too many bad pixels) are left out. With a gate, the
    soft mixture's held-out error is the gate's mixture of the experts' ones,
    ``sum_k p_k e_k`` (its prediction is ``sum_k p_k y_k``).

    Returns
    -------
    dict
        ``snr`` (m,) observed SNR, ``error`` (m, n_experts, n_targets),
        ``members`` (m, n_experts) which experts trained on each (and serve
        it under hard routing by the keys), ``soft`` (m, n_targets) the soft
        mixture's error (NaN where the gate has no probabilities; None
        without a gate) and ``seconds``; with a gate also ``p``, ``pred``
        and ``mixed`` (the gate's probabilities, the cells' experts' and the
        mixed predictions), ``routed`` (the learned gate's cell) and
        ``expert`` (the pass's); where every key has an observed version (SNR),
        ``observed``, the expert observed routing sends each spectrum to.
    """
    t0 = time.perf_counter()
    factors = factors[: len(system["experts"])]
    d = chunk.read()
    flux, y = d["flux"], np.asarray(d["y"], dtype=np.float64).reshape(len(d["flux"]), -1)
    bad = find_bad_pixels(flux, d["error"], d.get("mask"))
    snr, _ = snr_statistics(flux, d["error"], bad)
    cell = np.asarray(records[index]["cell"], dtype=np.int64)
    use, _ = select_rows(bad, y, cell, settings.n_bins, settings.max_bad_fraction)
    expert = np.where(cell >= 0, np.asarray(system["cell_map"])[np.clip(cell, 0, None)], -1)
    pred = expert_predictions(flux, bad, system["coef"], system["intercept"], system["mean_x"])
    error = y[:, None, :] - pred
    members = np.zeros((len(flux), len(factors)), dtype=bool)
    for e, factor in enumerate(factors):
        if factor is None:  # served by the global model: its errors and training set
            error[:, e], members[:, e] = error[:, 0], members[:, 0]
            continue
        members[:, e] = use & ((expert == e - 1) if e else True)
        rows = np.flatnonzero(members[:, e])
        xc = np.where(bad[rows], 0.0, flux[rows] - system["mean_x"][e])
        error[rows, e] = loo_residuals(error[rows, e], hat_diagonal(xc, factor))
    keep = use & np.isfinite(snr)
    out = {"snr": snr[keep], "error": error[keep], "members": members[keep], "soft": None}
    observed = _observed_cells(settings, d, flux, bad, snr)
    if observed is not None:
        mapped = np.asarray(system["cell_map"])[np.clip(observed, 0, None)]
        out["observed"] = np.where(observed >= 0, mapped, -1)[keep]
    if gate is not None:
        feats = gate_matrix(settings.gate_items, records[index]["features"], flux, bad, gate)
        p = gate_probabilities(feats, gate)
        k = p.shape[1]
        soft = np.einsum("mk,mkt->mt", np.nan_to_num(p), error[:, 1 : 1 + k])
        soft[~np.isfinite(p).all(axis=1)] = np.nan  # no probabilities: the global model serves
        mixed = np.einsum("mk,mkt->mt", np.nan_to_num(p), pred[:, 1 : 1 + k])
        out.update(soft=soft[keep], p=p[keep], pred=pred[keep, 1 : 1 + k], mixed=mixed[keep])
        out["routed"] = hard_route_bins(p)[keep]  # the learned gate's cell, -1 for none
        out["expert"] = expert[keep]
    out["seconds"] = time.perf_counter() - t0
    return out


def fit_calibration(parts: list, factors: list, settings: FitSettings, chunks: list) -> dict | None:
    """The error model from the sampled chunks' held-out errors (graph task)."""
    snr = np.concatenate([p["snr"] for p in parts])
    error = np.concatenate([p["error"] for p in parts])
    members = np.concatenate([p["members"] for p in parts])
    table = calibration_table(snr, error**2, settings.calibration_bins, members)
    if table is None:
        return None
    if parts[0]["soft"] is not None:
        table.update(_soft_table(parts, snr, table, settings.calibration_bins))
        routed = np.concatenate([part["routed"] for part in parts])
        table.update(_routed_table("learned", routed, snr, error, settings.calibration_bins))
    if "observed" in parts[0]:
        routed = np.concatenate([part["observed"] for part in parts])
        table.update(_routed_table("observed", routed, snr, error, settings.calibration_bins))
    seconds = sum(p["seconds"] for p in parts) + sum(f["seconds"] for f in factors if f)
    table.update(
        method="exact leave-one-out residuals of the spectra each expert serves, in "
        "observed-SNR quantile bins"
        + (
            "; the soft mixture's bound scaled to its own held-out errors"
            if "soft_scale" in table
            else ""
        ),
        n_spectra=int(snr.size),
        chunks=[int(c) for c in chunks],
        task_seconds=float(seconds),
    )
    return table


def _routed_table(
    routing: str, routed: np.ndarray, snr: np.ndarray, error: np.ndarray, n_bins: int
) -> dict:
    """Each expert's errors over the spectra a routing sends to it (``routed``: the
    cell's expert per spectrum, -1 for none; the global model's table: every one)."""
    served = np.zeros(error.shape[:2], dtype=bool)
    served[:, 0] = True
    ok = np.flatnonzero((routed >= 0) & (routed + 1 < error.shape[1]))
    served[ok, routed[ok] + 1] = True
    found = calibration_table(snr, error**2, n_bins, served)
    return {f"{routing}_{key}": value for key, value in found.items()}


def _observed_cells(settings: FitSettings, d: dict, flux, bad, snr) -> np.ndarray | None:
    """Each spectrum's cell by its keys' observed values, or None when a key has no
    observed version (a label such as ``teff``)."""
    try:
        names = [routed_variable(k.name, "observed") for k in settings.grid]
    except ValueError:
        return None
    snr_mean = snr_statistics(flux, d["error"], bad, mean=True)[1] if "snr_mean" in names else None
    stored = {**d.get("variables", {}), "snr": d.get("snr")}
    values = spectrum_values(
        names, flux=flux, error=d["error"], bad=bad, snr=snr, snr_mean=snr_mean, stored=stored
    )
    return assign_cells([values[v] for v in names], settings.grid)


def _soft_table(parts: list, snr: np.ndarray, table: dict, n_bins: int) -> dict:
    """The soft mixture's factor on its bound, ``(sum_k p_k e_k)^2 / B``, averaged in
    observed-SNR quantile bins where every expert's spectra weigh the same
    (:mod:`snr_moe_dask.kernels.calibration`)."""
    soft, p, pred, mixed, expert = (
        np.concatenate([part[key] for part in parts])
        for key in ("soft", "p", "pred", "mixed", "expert")
    )
    k = p.shape[1]
    bound = mixture_bound(p, pred, mixed, expert_variance(table, snr)[:, 1 : 1 + k])
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero bound: left out as NaN
        ratio = np.where(bound > 0, soft**2 / bound, np.nan)
    factor = calibration_table(snr, ratio[:, None, :], n_bins, weight=cell_weights(expert))
    return {
        "soft_snr_edges": factor["snr_edges"][0],
        "soft_snr_centre": factor["snr_centre"][0],
        "soft_scale": factor["variance"][0],
        "soft_count": factor["count"][0],
    }
