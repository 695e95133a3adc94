"""The deployable gate: route spectra to experts without their true cell.

A multinomial logistic regression on standardized features
(:mod:`snr_moe_dask.kernels.gate_features`: quality features, per-spectrum
variables, leading principal components) predicts each spectrum's cell (its
SNR bin, or its cell of a grid of keys). It is
trained with scikit-learn on the small feature table gathered from the fit
pass, and stored as plain arrays, so applying it is numpy:

- ``learned`` routing sends a spectrum to the expert of its most probable bin;
- ``soft`` routing mixes the experts, ``sum_k p_k expert_k``, and falls back
  to the global model when ``max_k p_k`` is below a threshold (default 0.4).

The leakage check fits a ridge model of the target on the same standardized
features: if the features predicted the target well, the gate could smuggle
label information into the routing. Its R^2 on a test store is reported.
"""

from __future__ import annotations

import numpy as np

from .gate_features import feature_names, parse_features


def _standardize(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)


def _sample(n: int, max_rows: int) -> np.ndarray:
    """A deterministic, evenly spread subset of at most ``max_rows`` of ``n`` rows."""
    if n <= max_rows:
        return np.arange(n)
    return np.linspace(0, n - 1, max_rows).round().astype(np.int64)


def fit_gate(
    features: np.ndarray,
    bins: np.ndarray,
    y: np.ndarray,
    n_bins: int,
    *,
    feature_set: str = "snr",
    max_rows: int = 200_000,
    leakage_alpha: float = 1.0,
    names=None,
) -> dict:
    """Train the gate and the leakage check (graph task).

    Parameters
    ----------
    features : ndarray of shape (n, n_features)
    bins : ndarray of int, shape (n,)
        True bin of each spectrum, -1 where unknown.
    y : ndarray of shape (n,)
        The first target, NaN where unknown.
    n_bins : int
    feature_set : str
        The features' spec (see :mod:`snr_moe_dask.kernels.gate_features`).
    max_rows : int
        Train on at most this many spectra, evenly spread over the store.
    leakage_alpha : float
        Ridge penalty of the leakage check.
    names : list of str, optional
        One name per feature column; default the spec's
        (:func:`~snr_moe_dask.kernels.gate_features.feature_names`).

    Returns
    -------
    dict or None
        None when no spectrum has finite features and a known bin. Otherwise
        ``mean``, ``scale`` (n_features,), ``coef`` (n_bins, n_features),
        ``intercept`` (n_bins,), ``classes`` (bins seen in training),
        ``leak_coef`` (n_features,), ``leak_intercept``, ``n_train``,
        ``train_accuracy``, ``leak_r2_train``, ``feature_set`` and ``features``.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    ok = np.isfinite(features).all(axis=1) & (bins >= 0)
    rows = np.flatnonzero(ok)[_sample(int(ok.sum()), max_rows)]
    if rows.size == 0:
        return None  # nothing to learn from; the model is saved without a gate
    x, b = features[rows], bins[rows]
    mean, scale = _standardize(x)
    z = (x - mean) / scale
    coef = np.zeros((n_bins, x.shape[1]))
    intercept = np.full(n_bins, -np.inf)  # bins never seen get probability 0
    classes = np.unique(b)
    if classes.size == 1:
        intercept[classes[0]] = 0.0
        accuracy = 1.0
    else:
        lr = LogisticRegression(max_iter=1000).fit(z, b)
        if classes.size == 2:  # binary: one logit for class 1, as a two-class softmax
            coef[classes[1]], intercept[classes] = lr.coef_[0], [0.0, lr.intercept_[0]]
        else:
            coef[classes], intercept[classes] = lr.coef_, lr.intercept_
        accuracy = float(lr.score(z, b))
    target = y[rows]
    has_y = np.isfinite(target)
    leak_coef, leak_intercept, leak_r2 = np.zeros(x.shape[1]), float("nan"), float("nan")
    if has_y.sum() >= 2:
        leak = Ridge(alpha=leakage_alpha).fit(z[has_y], target[has_y])
        leak_coef = leak.coef_ / scale
        leak_intercept = float(leak.intercept_ - leak_coef @ mean)
        leak_r2 = float(leak.score(z[has_y], target[has_y]))
    return {
        "mean": mean,
        "scale": scale,
        "coef": coef,
        "intercept": intercept,
        "classes": classes,
        "leak_coef": leak_coef,
        "leak_intercept": leak_intercept,
        "n_train": int(rows.size),
        "train_accuracy": accuracy,
        "leak_r2_train": leak_r2,
        "feature_set": feature_set,
        "features": list(names or feature_names(parse_features(feature_set))),
    }


def gate_probabilities(features: np.ndarray, gate: dict) -> np.ndarray:
    """Bin probabilities (softmax of the gate's logits), shape (m, n_bins).

    Rows with a non-finite feature get NaN probabilities.
    """
    z = (features - gate["mean"]) / gate["scale"]
    with np.errstate(invalid="ignore", over="ignore"):
        logits = z @ gate["coef"].T + gate["intercept"]
        logits -= np.max(np.nan_to_num(logits, nan=-np.inf), axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
    return p


def leakage_prediction(features: np.ndarray, gate: dict) -> np.ndarray:
    """The leakage check's prediction of the first target from the features, shape (m,)."""
    return features @ gate["leak_coef"] + gate["leak_intercept"]


def soft_route(
    expert_pred: np.ndarray, global_pred: np.ndarray, p: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mix the experts by the gate's probabilities, or fall back to the global model.

    Parameters
    ----------
    expert_pred : ndarray of shape (m, n_bins, n_targets)
        Each bin's expert (a bin that fell back holds the global model).
    global_pred : ndarray of shape (m, n_targets)
    p : ndarray of shape (m, n_bins)
        Gate probabilities; NaN rows fall back.
    threshold : float
        Fall back where ``max_k p_k < threshold``.

    Returns
    -------
    y : ndarray of shape (m, n_targets)
    fallback : ndarray of bool, shape (m,)
    """
    fallback = ~(np.nanmax(np.nan_to_num(p, nan=-1.0), axis=1) >= threshold)
    mixed = np.einsum("mk,mkt->mt", np.nan_to_num(p), expert_pred)
    return np.where(fallback[:, None], global_pred, mixed), fallback


def hard_route_bins(p: np.ndarray) -> np.ndarray:
    """The most probable bin of each spectrum, -1 where the probabilities are NaN."""
    ok = np.isfinite(p).all(axis=1)
    return np.where(ok, np.argmax(np.nan_to_num(p, nan=-1.0), axis=1), -1)
