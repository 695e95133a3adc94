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
    pred = (np.asarray(x, dtype=np.float64) @ flat).reshape(len(x), n_experts, n_targets)
    pred += intercept[None]
    rows = np.flatnonzero(bad.any(axis=1))
    for r in rows:
        cols = bad[r]
        pred[r] += np.einsum("ep,ept->et", mean_x[:, cols], coef[:, cols, :])
    return pred


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
        The expert serving each bin (0 where a bin fell back to the global model).

    Returns
    -------
    y_moe : ndarray of shape (m, n_targets)
    bins : ndarray of int, shape (m,)
        The bin, or -1 where the SNR is NaN (served by the global model).
    """
    bins = assign_bins(route_snr, edges)
    expert = np.where(bins == NO_BIN, 0, bin_to_expert[np.clip(bins, 0, None)])
    return pred[np.arange(len(pred)), expert], bins


def evaluate_block(
    flux: np.ndarray,
    error: np.ndarray,
    mask: np.ndarray | None,
    y: np.ndarray | None,
    true_snr: np.ndarray | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """Predict one block with every expert and route it (graph task).

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
        ``routing``, ``target_index`` and ``max_bad_fraction``.

    Returns
    -------
    dict
        ``y_true``, ``y_global``, ``y_moe``, ``snr``, ``snr_observed`` (m,)
        float64; ``bin`` (m,) int64 (-1 = no SNR); ``used`` (m,) bool (False
        for spectra excluded from metrics: NaN target or too many bad pixels);
        ``bad_pixels`` (m,) int64.
    """
    from .snr import compute_snr, find_bad_pixels

    bad = find_bad_pixels(flux, error, mask)
    snr_obs = compute_snr(flux, error, bad)
    route = snr_obs if params["routing"] == "observed" else np.asarray(true_snr, np.float64)
    pred = expert_predictions(flux, bad, params["coef"], params["intercept"], params["mean_x"])
    y_moe, bins = route_predictions(pred, route, params["edges"], params["bin_to_expert"])
    t = params["target_index"]
    n_bad = bad.sum(axis=1)
    y_true = np.full(len(flux), np.nan) if y is None else np.asarray(y, np.float64)
    used = np.isfinite(y_true) & (n_bad <= params["max_bad_fraction"] * flux.shape[1])
    return {
        "y_true": y_true,
        "y_global": pred[:, 0, t],
        "y_moe": y_moe[:, t],
        "y_moe_all": y_moe,
        "snr": route,
        "snr_observed": snr_obs,
        "bin": bins,
        "used": used,
        "bad_pixels": n_bad.astype(np.int64),
    }
