"""Predictions of every expert, and routing to one of them (numpy kernels)."""

from __future__ import annotations

import numpy as np

from .binning import NO_BIN
from .gate import hard_route_bins, soft_route


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


def route_by_bins(pred: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Each spectrum's prediction by the expert of its bin (bin k is expert k + 1;
    expert 0, the global model, where the bin is -1).

    Parameters
    ----------
    pred : ndarray of shape (m, n_experts, n_targets)
    bins : ndarray of int, shape (m,)

    Returns
    -------
    ndarray of shape (m, n_targets)
    """
    expert = np.where(bins == NO_BIN, 0, bins + 1)
    return pred[np.arange(len(pred)), expert]


def routed_predictions(
    pred: np.ndarray,
    routing: str,
    *,
    cells: dict[str, np.ndarray],
    probabilities: np.ndarray | None,
    params: dict,
) -> dict[str, np.ndarray]:
    """One routing's predictions for a block.

    ``oracle`` and ``observed`` route by ``cells[routing]``, each spectrum's
    cell from its keys' true or observed values
    (:func:`snr_moe_dask.kernels.cells.assign_cells`); ``learned`` takes the
    gate's most probable cell; ``soft`` mixes the experts by the gate's
    probabilities (see :func:`snr_moe_dask.kernels.gate.soft_route`).

    Returns
    -------
    dict
        ``y`` (m, n_targets); ``bin`` (m,) the routed bin (the most
        probable bin for the learned gates; -1 for none); ``fallback`` (m,)
        bool, True where the global model served the spectrum because the
        routing had no bin (or, for ``soft``, max p < threshold).
    """
    if routing in ("oracle", "observed"):
        bins = cells[routing]
        return {"y": route_by_bins(pred, bins), "bin": bins, "fallback": bins == NO_BIN}
    bins = hard_route_bins(probabilities)
    if routing == "learned":
        return {"y": route_by_bins(pred, bins), "bin": bins, "fallback": bins == NO_BIN}
    y, fallback = soft_route(pred[:, 1:], pred[:, 0], probabilities, params["gate_threshold"])
    return {"y": y, "bin": bins, "fallback": fallback}
