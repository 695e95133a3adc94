"""Prediction's graph tasks: every expert on a chunk of spectra, routed every
requested way.

They need only numpy and zarr, so a worker running them imports neither
xarray nor scikit-learn.
"""

from __future__ import annotations

import numpy as np

from ..kernels.binning import NO_BIN
from ..kernels.cells import Key, assign_cells
from ..kernels.gate import gate_probabilities, leakage_prediction
from ..kernels.gate_features import assemble, base_names, parse_features, project
from ..kernels.mixture import expert_predictions, routed_predictions
from ..kernels.snr import find_bad_pixels, snr_statistics
from ..kernels.variables import is_derived, routed_variable, spectrum_values

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
        intercepts of the fixed-alpha comparison model). See
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
        ``gate_p_max`` and ``y_leakage``; with ``fixed``, ``y_fixed_alpha``.
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
        out["gate_p_max"] = np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        out["y_leakage"] = leakage_prediction(feats, gate)
    route = {"cells": cells, "probabilities": probs, "params": params}
    routed = {r: routed_predictions(pred, r, **route) for r in params["routings"]}
    for r, result in routed.items():
        out.update({f"y_{r}": result["y"][:, t], f"bin_{r}": result["bin"]})
        out[f"fallback_{r}"] = result["fallback"]
    primary = routed[params["routings"][0]]
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


def _gate_features(items, values, flux, bad, gate) -> np.ndarray:
    """The gate's feature matrix for a block (see :mod:`snr_moe_dask.kernels.gate_features`)."""
    names = base_names(items)
    base = np.column_stack([values[n] for n in names]) if names else np.zeros((len(flux), 0))
    projections = None
    if gate.get("components") is not None:
        projections = project(flux, bad, gate["component_mean"], gate["components"])
    return assemble(items, base, projections)


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
