"""Predictions of every expert, and routing to one of them (numpy kernels)."""

from __future__ import annotations

import numpy as np

from .binning import NO_BIN, assign_bins


def expert_predictions(
    x: np.ndarray,
    bad: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
    mean_x: np.ndarray,
) -> np.ndarray:
    """Return every expert's prediction for a block of spectra.

    A bad pixel is imputed with the expert's training mean for that pixel, so
    it contributes nothing, as in the fit.

    Parameters
    ----------
    x : ndarray of shape (m, n_pixels)
    bad : ndarray of bool, shape (m, n_pixels)
    coef : ndarray of shape (n_experts, n_pixels, n_targets)
    intercept : ndarray of shape (n_experts, n_targets)
    mean_x : ndarray of shape (n_experts, n_pixels)

    Returns
    -------
    ndarray of shape (m, n_experts, n_targets), float64
    """
    n_experts, n_pixels, n_targets = coef.shape
    x = np.where(bad, 0.0, x) if bad.any() else x
    flat = coef.transpose(1, 0, 2).reshape(n_pixels, n_experts * n_targets)
    pred = _float64_product(x, flat).reshape(len(x), n_experts, n_targets)
    pred += intercept[None]
    rows = np.flatnonzero(bad.any(axis=1))
    for r in rows:
        cols = bad[r]
        pred[r] += np.einsum("ep,ept->et", mean_x[:, cols], coef[:, cols, :])
    return pred


def _float64_product(x: np.ndarray, b: np.ndarray, block: int = 128) -> np.ndarray:
    """``x.astype(float64) @ b``, converting ``block`` rows at a time into a small
    buffer that stays in cache: half the time of converting the whole block of
    spectra first (BENCHMARKS.md)."""
    if x.dtype == np.float64:
        return x @ b
    out = np.empty((len(x), b.shape[1]))
    buf = np.empty((min(block, len(x)), x.shape[1]))
    for start in range(0, len(x), block):
        rows = slice(start, min(start + block, len(x)))
        part = buf[: rows.stop - rows.start]
        part[...] = x[rows]
        np.matmul(part, b, out=out[rows])
    return out


def route_predictions(
    pred: np.ndarray, route_snr: np.ndarray, edges, bin_to_expert: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pick each spectrum's expert by its SNR bin.

    Parameters
    ----------
    pred : ndarray of shape (m, n_experts, n_targets)
        Expert 0 is the global model.
    route_snr : ndarray of shape (m,)
    edges : sequence of float
    bin_to_expert : ndarray of int, shape (n_bins,)
        The expert serving each bin.

    Returns
    -------
    y_moe : ndarray of shape (m, n_targets)
    bins : ndarray of int, shape (m,)
        The bin, or -1 where the SNR is NaN (served by the global model).
    """
    bins = assign_bins(route_snr, edges)
    return route_by_bins(pred, bins, bin_to_expert), bins


def route_by_bins(pred: np.ndarray, bins: np.ndarray, bin_to_expert: np.ndarray) -> np.ndarray:
    """Each spectrum's prediction by the expert of its bin; the global model where bin is -1."""
    expert = np.where(bins == NO_BIN, 0, bin_to_expert[np.clip(bins, 0, None)])
    return pred[np.arange(len(pred)), expert]


def routed_predictions(
    pred: np.ndarray,
    routing: str,
    *,
    true_snr: np.ndarray | None,
    observed_snr: np.ndarray,
    probabilities: np.ndarray | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """One routing's predictions for a block.

    Returns
    -------
    dict
        ``y`` (m, n_targets); ``bin`` (m,) the routed bin (the most
        probable bin for the learned gates; -1 for none); ``fallback`` (m,)
        bool, True where the global model served the spectrum because the
        routing had no bin (or, for ``soft``, max p < threshold).
    """
    from .gate import hard_route_bins, soft_route

    if routing in ("oracle", "observed"):
        snr = true_snr if routing == "oracle" else observed_snr
        y, bins = route_predictions(pred, snr, params["edges"], params["bin_to_expert"])
        return {"y": y, "bin": bins, "fallback": bins == NO_BIN}
    bins = hard_route_bins(probabilities)
    if routing == "learned":
        return {
            "y": route_by_bins(pred, bins, params["bin_to_expert"]),
            "bin": bins,
            "fallback": bins == NO_BIN,
        }
    experts = pred[:, params["bin_to_expert"]]
    y, fallback = soft_route(experts, pred[:, 0], probabilities, params["gate_threshold"])
    return {"y": y, "bin": bins, "fallback": fallback}


def evaluate_block(
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray | None,
    y: np.ndarray | None,
    true_snr: np.ndarray | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """Predict one block with every expert and route it every requested way (graph task).

    Parameters
    ----------
    flux, error : ndarray of shape (m, n_pixels)
    mask : ndarray of bool or None
    y : ndarray of shape (m,) or None
        The evaluated target, if known.
    true_snr : ndarray of shape (m,) or None
        Needed for oracle routing.
    params : dict
        ``coef``, ``intercept``, ``mean_x``, ``edges``, ``bin_to_expert``,
        ``routings`` (the first is the primary routing), ``target_index``,
        ``max_bad_fraction``, ``error_scale``; ``gate`` and
        ``gate_threshold`` for learned routings; optionally ``fixed``
        (coefficients and intercepts of the fixed-alpha comparison model).

    Returns
    -------
    dict
        ``y_true``, ``y_global``, ``y_moe`` (primary routing), ``snr`` (the
        SNR that routed: true for oracle, else observed), ``snr_observed``
        (m,) float64; ``bin`` (m,) int64 (-1 = none); ``used`` (m,) bool
        (False for spectra excluded from metrics: NaN target or too many bad
        pixels); ``bad_pixels`` (m,) int64; ``y_moe_all`` (m, n_targets);
        ``bin_true`` (m,) (-1 where the true SNR is unknown); and per routing
        r: ``y_<r>``, ``bin_<r>``, ``fallback_<r>``; with a gate,
        ``gate_p_max`` and ``y_leakage``; with ``fixed``, ``y_fixed_alpha``.
    """
    from .gate import gate_probabilities, leakage_prediction
    from .quality import quality_features
    from .snr import find_bad_pixels, snr_statistics

    if params.get("error_scale", 1.0) != 1.0:
        error = error * np.float32(params["error_scale"])
    gate = params.get("gate")
    bad = find_bad_pixels(flux, error, mask)
    snr_obs, snr_mean = snr_statistics(
        flux, error, bad, mean=gate is not None and gate["feature_set"] == "snr"
    )
    coef, intercept, mean_x = params["coef"], params["intercept"], params["mean_x"]
    fixed = params.get("fixed")
    if fixed is not None:  # one product for both coefficient sets
        coef = np.concatenate([coef, fixed["coef"]])
        intercept = np.concatenate([intercept, fixed["intercept"]])
        mean_x = np.concatenate([mean_x, mean_x])
    pred = expert_predictions(flux, bad, coef, intercept, mean_x)
    n_experts = params["coef"].shape[0]
    pred, pred_fixed = pred[:, :n_experts], pred[:, n_experts:]
    t = params["target_index"]
    true = None if true_snr is None else np.asarray(true_snr, np.float64)
    probs = None
    out: dict[str, np.ndarray] = {}
    if gate is not None:
        feats = quality_features(gate["feature_set"], flux, error, bad, snr_obs, snr_mean)
        probs = gate_probabilities(feats, gate)
        out["gate_p_max"] = np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        out["y_leakage"] = leakage_prediction(feats, gate)
    routed = {}
    for r in params["routings"]:
        routed[r] = routed_predictions(
            pred,
            r,
            true_snr=true,
            observed_snr=snr_obs,
            probabilities=probs,
            params=params,
        )
        out[f"y_{r}"] = routed[r]["y"][:, t]
        out[f"bin_{r}"] = routed[r]["bin"]
        out[f"fallback_{r}"] = routed[r]["fallback"]
    primary = routed[params["routings"][0]]
    if fixed is not None:  # the fixed-alpha experts, routed the same way
        out["y_fixed_alpha"] = routed_predictions(
            pred_fixed,
            params["routings"][0],
            true_snr=true,
            observed_snr=snr_obs,
            probabilities=probs,
            params=params,
        )["y"][:, t]
    n_bad = bad.sum(axis=1)
    y_true = np.full(len(flux), np.nan) if y is None else np.asarray(y, np.float64)
    used = np.isfinite(y_true) & (n_bad <= params["max_bad_fraction"] * flux.shape[1])
    out.update(
        {
            "y_true": y_true,
            "y_global": pred[:, 0, t],
            "y_moe": primary["y"][:, t],
            "y_moe_all": primary["y"],
            "snr": true if params["routings"][0] == "oracle" else snr_obs,
            "snr_observed": snr_obs,
            "bin": primary["bin"],
            "bin_true": (
                np.full(len(flux), NO_BIN) if true is None else assign_bins(true, params["edges"])
            ),
            "used": used,
            "bad_pixels": n_bad.astype(np.int64),
        }
    )
    return out
