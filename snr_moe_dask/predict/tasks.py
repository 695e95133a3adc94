"""Prediction's graph tasks: every expert on a chunk of spectra, routed every
requested way.

They need only numpy and zarr, so a worker running them imports neither
xarray nor scikit-learn.
"""

from __future__ import annotations

import numpy as np

from ..kernels.binning import NO_BIN
from ..kernels.calibration import routed_sigma, routed_variance, soft_scale
from ..kernels.cells import Key, assign_cells
from ..kernels.gate import gate_probabilities, leakage_prediction
from ..kernels.gate_features import base_names, gate_matrix, parse_features
from ..kernels.mixture import expert_predictions, routed_predictions
from ..kernels.snr import find_bad_pixels, snr_statistics
from ..kernels.variables import is_derived, routed_variable, spectrum_values
from ..store.blocks import write_rows

KEY_ROUTINGS = ("oracle", "observed")


def predict_chunk(chunk, params: dict) -> dict[str, np.ndarray]:
    """Read one chunk and predict it (graph task; see :func:`predict_block`)."""
    d = chunk.read()
    stored = {**d.get("variables", {}), "snr": d.get("snr")}
    return predict_block(d["flux"], d["error"], d.get("mask"), stored, params)


def predict_block(
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray | None,
    stored: dict | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """Predict one block with every expert and route it every requested way.

    Parameters
    ----------
    flux, error : ndarray of shape (m, n_pixels)
    mask : ndarray of bool or None
    stored : dict of str to ndarray of shape (m,), or None
        The store variables read with the block: the true ``snr`` (None when
        not read) and the variables the keys and the gate need for the
        routings asked.
    params : dict
        ``coef``, ``intercept``, ``mean_x``, ``keys`` (the experts' keys,
        ``(name, edges)``), ``routings`` (the first is the primary routing),
        ``target_index``, ``error_scale``; ``gate`` and ``gate_threshold``
        for learned routings; optionally ``fixed`` (coefficients and
        intercepts of the fixed-alpha comparison model) and ``calibration``
        (the model's error model, or None). See
        :func:`snr_moe_dask.predict.graph.model_params`.

    Returns
    -------
    dict
        ``y_global``, ``y_moe`` (primary routing), ``snr`` (the true SNR for
        oracle routing when read, else the observed), ``snr_observed`` (m,)
        float64; ``bin`` (m,) int64, the routed cell (-1 = none);
        ``bad_pixels`` (m,) int64; ``y_moe_all`` (m, n_targets); ``bin_true``
        (m,) the cell of the keys' true values (-1 where unknown); and per
        routing r: ``y_<r>``, ``bin_<r>``, ``fallback_<r>``; with a gate,
        ``gate_p`` (m, n_cells), ``gate_p_max`` and ``y_leakage``; with
        ``fixed``, ``y_fixed_alpha``; with a calibration, per routing
        ``err_<r>`` (m,) and ``err_moe_all`` (m, n_targets), the 1-sigma
        uncertainties (see :mod:`snr_moe_dask.kernels.calibration`).
    """
    if params.get("error_scale", 1.0) != 1.0:
        error = error * np.float32(params["error_scale"])
    stored = {k: v for k, v in (stored or {}).items() if v is not None}
    gate = params.get("gate")
    bad = find_bad_pixels(flux, error, mask)
    keys = [Key(name, edges) for name, edges in params["keys"]]
    routes = {
        r: [routed_variable(k.name, r) for k in keys]
        for r in KEY_ROUTINGS
        if r in params["routings"]
    }
    oracle = [routed_variable(k.name, "oracle") for k in keys]
    known = all(v in stored or is_derived(v) for v in oracle)
    items = parse_features(gate["feature_set"]) if gate is not None else ()
    needed = [*sum(routes.values(), []), *(oracle if known else []), *base_names(items)]
    snr_obs, snr_mean = snr_statistics(flux, error, bad, mean="snr_mean" in needed)
    values = spectrum_values(
        needed, flux=flux, error=error, bad=bad, snr=snr_obs, snr_mean=snr_mean, stored=stored
    )
    cells = {r: assign_cells([values[v] for v in names], keys) for r, names in routes.items()}
    pred, pred_fixed = _expert_predictions(flux, bad, params)
    t = params["target_index"]
    probs, out = None, {}
    if gate is not None:
        feats = _gate_features(items, values, flux, bad, gate)
        probs = gate_probabilities(feats, gate)
        out["gate_p"] = probs
        out["gate_p_max"] = np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        out["y_leakage"] = leakage_prediction(feats, gate)
    route = {"cells": cells, "probabilities": probs, "params": params}
    routed = {r: routed_predictions(pred, r, **route) for r in params["routings"]}
    for r, result in routed.items():
        out.update({f"y_{r}": result["y"][:, t], f"bin_{r}": result["bin"]})
        out[f"fallback_{r}"] = result["fallback"]
    primary = routed[params["routings"][0]]
    if params.get("calibration") is not None:
        sigma = _uncertainties(params["calibration"], snr_obs, routed, pred, probs)
        out.update({f"err_{r}": value[:, t] for r, value in sigma.items()})
        out["err_moe_all"] = sigma[params["routings"][0]]
    if pred_fixed is not None:  # the fixed-alpha experts, routed the same way
        fixed = routed_predictions(pred_fixed, params["routings"][0], **route)
        out["y_fixed_alpha"] = fixed["y"][:, t]
    true_snr = stored.get("snr")
    out.update(
        y_global=pred[:, 0, t],
        y_moe=primary["y"][:, t],
        y_moe_all=primary["y"],
        snr=np.asarray(true_snr, np.float64)
        if params["routings"][0] == "oracle" and true_snr is not None
        else snr_obs,
        snr_observed=snr_obs,
        bin=primary["bin"],
        bin_true=assign_cells([values[v] for v in oracle], keys)
        if known
        else np.full(len(flux), NO_BIN),
        bad_pixels=bad.sum(axis=1).astype(np.int64),
    )
    return out


def _uncertainties(table, snr, routed, pred, probs) -> dict:
    """Each routing's 1-sigma uncertainties from the model's error model (see
    :func:`~snr_moe_dask.kernels.calibration.routed_variance`)."""
    soft = soft_scale(table, snr) if "soft" in routed else None
    return {
        r: routed_sigma(r, res, pred, routed_variance(table, r, snr), probs, soft)
        for r, res in routed.items()
    }


def _gate_features(items, values, flux, bad, gate) -> np.ndarray:
    """The gate's feature matrix for a block (see :mod:`snr_moe_dask.kernels.gate_features`)."""
    names = base_names(items)
    base = np.column_stack([values[n] for n in names]) if names else np.zeros((len(flux), 0))
    return gate_matrix(items, base, flux, bad, gate)


def _expert_predictions(flux, bad, params) -> tuple[np.ndarray, np.ndarray | None]:
    """Every expert's predictions, and the fixed-alpha experts' (one product for both)."""
    coef, intercept, mean_x = params["coef"], params["intercept"], params["mean_x"]
    fixed = params.get("fixed")
    if fixed is not None:
        coef = np.concatenate([coef, fixed["coef"]])
        intercept = np.concatenate([intercept, fixed["intercept"]])
        mean_x = np.concatenate([mean_x, mean_x])
    pred = expert_predictions(flux, bad, coef, intercept, mean_x)
    n_experts = params["coef"].shape[0]
    return pred[:, :n_experts], (pred[:, n_experts:] if fixed is not None else None)


#: The bits of ``flag`` in ``snr-moe predict``'s outputs (0: nothing to say).
FLAGS = {
    "BAD_PIXELS": 1,  # more than the model's max_bad_fraction of pixels are bad (fit excludes such)
    "NO_GOOD_PIXEL": 2,  # not one usable pixel: no prediction (NaN)
    "FALLBACK": 4,  # served by the global model: no bin or gate probabilities, or max p too low
    "EXPERT_FALLBACK": 8,  # the routed expert had too few training spectra: global coefficients
    "SNR_EXTRAPOLATED": 16,  # observed SNR outside the error model's sample: its edge value is used
    "NO_UNCERTAINTY": 32,  # the model has no error model (fitted with calibration 0): _err is NaN
}


def flag_spectra(block: dict, routed_bin, fallback, params: dict, n_pixels: int) -> np.ndarray:
    """The :data:`FLAGS` bitmask of each spectrum, shape (m,) int32."""
    flag = np.zeros(len(fallback), dtype=np.int32)
    bad = block["bad_pixels"]
    flag |= np.where(bad > params["max_bad_fraction"] * n_pixels, FLAGS["BAD_PIXELS"], 0)
    flag |= np.where(bad >= n_pixels, FLAGS["NO_GOOD_PIXEL"], 0)
    flag |= np.where(fallback, FLAGS["FALLBACK"], 0)
    served = np.where(routed_bin == NO_BIN, 0, routed_bin + 1)
    flag |= np.where(np.isin(served, params["fallback_experts"]), FLAGS["EXPERT_FALLBACK"], 0)
    cal = params.get("calibration")
    if cal is None:
        flag |= FLAGS["NO_UNCERTAINTY"]
    else:
        lo, hi = cal["snr_edges"][0, 0], cal["snr_edges"][0, -1]  # the sample's range
        snr = block["snr_observed"]
        flag |= np.where((snr < lo) | (snr > hi), FLAGS["SNR_EXTRAPOLATED"], 0)
    return flag


def predict_and_write(chunk, path: str, start: int, params: dict) -> dict:
    """Predict one chunk for ``snr-moe predict`` and write it into ``predictions.zarr``
    (graph task): per target ``T`` and ``T_err``, ``expert``, ``gate_p``,
    ``snr_observed``, ``n_bad_pixels`` and ``flag``. Returns the chunk's counts.
    """
    d = chunk.read()
    flux = d["flux"]
    stored = {**d.get("variables", {}), "snr": d.get("snr")}
    block = predict_block(flux, d["error"], d.get("mask"), stored, params)
    routing = params["routings"][0]
    fallback = block[f"fallback_{routing}"]
    routed_bin = np.where(fallback, NO_BIN, block[f"bin_{routing}"])
    flag = flag_spectra(block, routed_bin, fallback, params, flux.shape[1])
    none = (flag & FLAGS["NO_GOOD_PIXEL"]) != 0
    y = np.where(none[:, None], np.nan, block["y_moe_all"])
    err = block.get("err_moe_all", np.full_like(y, np.nan))
    out = {
        "expert": np.where(routed_bin == NO_BIN, 0, routed_bin + 1).astype(np.int16),
        "snr_observed": block["snr_observed"],
        "n_bad_pixels": block["bad_pixels"].astype(np.int32),
        "flag": flag,
    }
    for j, name in params["outputs"]:
        out[name] = y[:, j]
        out[f"{name}_err"] = np.where(none, np.nan, err[:, j])
    if "gate_p" in block:
        out["gate_p"] = block["gate_p"]
    write_rows(path, start, out)
    n_experts = params["coef"].shape[0]
    return {
        "n": np.array([len(flux)]),
        "flags": np.array([((flag & bit) != 0).sum() for bit in FLAGS.values()]),
        "experts": np.bincount(out["expert"], minlength=n_experts),
    }
