"""Prediction's graph tasks: every expert on a chunk of spectra, routed every
requested way.

They need only numpy and zarr, so a worker running them imports neither
xarray nor scikit-learn.
"""

from __future__ import annotations

import numpy as np

from ..kernels.binning import NO_BIN, assign_bins
from ..kernels.gate import gate_probabilities, leakage_prediction
from ..kernels.mixture import expert_predictions, routed_predictions
from ..kernels.quality import quality_features
from ..kernels.snr import find_bad_pixels, snr_statistics


def predict_chunk(chunk, params: dict) -> dict[str, np.ndarray]:
    """Read one chunk and predict it (graph task; see :func:`predict_block`)."""
    d = chunk.read()
    return predict_block(d["flux"], d["error"], d.get("mask"), d.get("snr"), params)


def predict_block(
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray | None,
    true_snr: np.ndarray | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """Predict one block with every expert and route it every requested way.

    Parameters
    ----------
    flux, error : ndarray of shape (m, n_pixels)
    mask : ndarray of bool or None
    true_snr : ndarray of shape (m,) or None
        Needed for oracle routing.
    params : dict
        ``coef``, ``intercept``, ``mean_x``, ``edges``, ``bin_to_expert``,
        ``routings`` (the first is the primary routing), ``target_index``,
        ``error_scale``; ``gate`` and ``gate_threshold`` for learned
        routings; optionally ``fixed`` (coefficients and intercepts of the
        fixed-alpha comparison model). See
        :func:`snr_moe_dask.predict.graph.model_params`.

    Returns
    -------
    dict
        ``y_global``, ``y_moe`` (primary routing), ``snr`` (the SNR that
        routed: true for oracle, else observed), ``snr_observed`` (m,)
        float64; ``bin`` (m,) int64 (-1 = none); ``bad_pixels`` (m,) int64;
        ``y_moe_all`` (m, n_targets); ``bin_true`` (m,) (-1 where the true
        SNR is unknown); and per routing r: ``y_<r>``, ``bin_<r>``,
        ``fallback_<r>``; with a gate, ``gate_p_max`` and ``y_leakage``; with
        ``fixed``, ``y_fixed_alpha``.
    """
    if params.get("error_scale", 1.0) != 1.0:
        error = error * np.float32(params["error_scale"])
    gate = params.get("gate")
    bad = find_bad_pixels(flux, error, mask)
    snr_obs, snr_mean = snr_statistics(
        flux, error, bad, mean=gate is not None and gate["feature_set"] == "snr"
    )
    pred, pred_fixed = _expert_predictions(flux, bad, params)
    t = params["target_index"]
    true = None if true_snr is None else np.asarray(true_snr, np.float64)
    probs, out = None, {}
    if gate is not None:
        feats = quality_features(gate["feature_set"], flux, error, bad, snr_obs, snr_mean)
        probs = gate_probabilities(feats, gate)
        out["gate_p_max"] = np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        out["y_leakage"] = leakage_prediction(feats, gate)
    route = {"true_snr": true, "observed_snr": snr_obs, "probabilities": probs, "params": params}
    routed = {r: routed_predictions(pred, r, **route) for r in params["routings"]}
    for r, result in routed.items():
        out.update({f"y_{r}": result["y"][:, t], f"bin_{r}": result["bin"]})
        out[f"fallback_{r}"] = result["fallback"]
    primary = routed[params["routings"][0]]
    if pred_fixed is not None:  # the fixed-alpha experts, routed the same way
        out["y_fixed_alpha"] = routed_predictions(pred_fixed, params["routings"][0], **route)["y"][
            :, t
        ]
    out.update(
        y_global=pred[:, 0, t],
        y_moe=primary["y"][:, t],
        y_moe_all=primary["y"],
        snr=true if params["routings"][0] == "oracle" else snr_obs,
        snr_observed=snr_obs,
        bin=primary["bin"],
        bin_true=np.full(len(flux), NO_BIN) if true is None else assign_bins(true, params["edges"]),
        bad_pixels=bad.sum(axis=1).astype(np.int64),
    )
    return out


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
