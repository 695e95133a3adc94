"""Exact K-fold cross-validation of ridge over an alpha path, from fold statistics
(numpy kernels).

The fit pass keeps centred statistics per (bin, fold) slot (see
:mod:`snr_moe_dask.kernels.stats`). For one expert and one held-out fold, the
training statistics are the merge of the other folds' statistics, and the
validation error of the ridge solution w(alpha) on the held-out spectra is a
function of the held-out fold's own statistics:

    SSE(alpha) = S_yy - 2 w^T S_xy + w^T S_xx w + n_v d^2,
    d = (ybar_v - ybar_t) - (xbar_v - xbar_t)^T w,

with S the held-out fold's centred sums and bars the folds' means (the
intercept ybar_t - xbar_t^T w is fitted on the training folds, as
``Ridge(fit_intercept=True)`` does). One eigendecomposition of the training
Gram matrix, S_t = V diag(l) V^T, gives w(alpha) = V diag(1 / (l + alpha))
V^T S_xy,t for the whole alpha path, so no spectrum is read twice.

Folds are assigned from each spectrum's index in its store and a seed, so
they do not depend on chunking or on which worker reads what.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from . import stats
from .solve import feature_scale

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def assign_folds(index: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Return the fold (0 ... n_folds - 1) of each spectrum index.

    A SplitMix64 hash of ``index`` and ``seed``, taken modulo ``n_folds``:
    deterministic, independent of chunking, and close to uniform.

    Parameters
    ----------
    index : ndarray of int, shape (m,)
        Spectrum indices in the store.
    n_folds : int
    seed : int

    Returns
    -------
    ndarray of int64, shape (m,)
    """
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n_folds)).astype(np.int64)


def alpha_grid(start: float, stop: float, num: int) -> np.ndarray:
    """A log-spaced grid of ``num`` alphas from ``start`` to ``stop`` inclusive."""
    if not (0 < start <= stop) or num < 1:
        raise ValueError(
            f"alpha grid needs 0 < start <= stop and num >= 1; got {start}, {stop}, {num}"
        )
    return np.geomspace(start, stop, int(num))


def fold_sse(train: dict, valid: dict, alphas: np.ndarray, standardize: bool) -> np.ndarray:
    """Held-out sum of squared errors for every alpha, per target.

    Parameters
    ----------
    train, valid : dict
        One-slot accumulators (:func:`snr_moe_dask.kernels.stats.pooled_stats`) of
        the training folds and the held-out fold.
    alphas : ndarray of shape (n_alphas,)
    standardize : bool
        Scale features by the training folds' standard deviation before
        penalizing (like ``StandardScaler`` fitted on the training folds).

    Returns
    -------
    ndarray of shape (n_alphas, n_targets)
    """
    s_t = stats.full_gram(train["sxx"][0])
    scale = np.ones(s_t.shape[0])
    if standardize:
        scale = feature_scale(np.diag(s_t), train["n"][0])
        s_t /= np.outer(scale, scale)
    lam, v = scipy.linalg.eigh(s_t, overwrite_a=True, check_finite=False, driver="evd", lower=False)
    lam = np.clip(lam, 0.0, None)
    z = v.T @ (train["sxy"][0] / scale[:, None])  # (P, T)
    n_alphas, n_targets = len(alphas), z.shape[1]
    # w(alpha) for every alpha at once: columns ordered (alpha, target).
    shrunk = z[:, None, :] / (lam[:, None, None] + alphas[None, :, None])
    w = v @ shrunk.reshape(-1, n_alphas * n_targets)
    w /= scale[:, None]
    s_v = stats.full_gram(valid["sxx"][0])
    quad = np.einsum("pc,pc->c", w, s_v @ w).reshape(n_alphas, n_targets)
    sxy_v = valid["sxy"][0]  # (P, T)
    cross = np.einsum("pat,pt->at", w.reshape(-1, n_alphas, n_targets), sxy_v)
    d = (valid["mean_y"][0] - train["mean_y"][0])[None, :] - np.einsum(
        "p,pat->at", valid["mean_x"][0] - train["mean_x"][0], w.reshape(-1, n_alphas, n_targets)
    )
    syy = np.diag(valid["syy"][0])[None, :]
    return syy - 2.0 * cross + quad + valid["n"][0] * d**2


def expert_folds(acc: dict, slots: list[int], n_folds: int) -> dict:
    """One expert's statistics per fold: slot ``f`` pools fold ``f`` of the expert's
    bins (graph task; one per expert, so its fold tasks need only this)."""
    return stats.pooled_stats(acc, [[k * n_folds + f for k in slots] for f in range(n_folds)])


def fold_sse_task(
    folds: dict, fold: int, alphas: np.ndarray, standardize: bool
) -> tuple[np.ndarray, float]:
    """Held-out SSE of one expert for one fold (graph task).

    Parameters
    ----------
    folds : dict
        The expert's per-fold statistics (:func:`expert_folds`).
    fold : int
        The held-out fold; the others are the training folds.
    alphas : ndarray
    standardize : bool

    Returns
    -------
    sse : ndarray of shape (n_alphas, n_targets)
        NaN when the held-out fold or the training folds are empty.
    n_valid : float
        Spectra in the held-out fold.
    """
    n_folds = folds["n"].size
    train = stats.pooled_stats(folds, [[f for f in range(n_folds) if f != fold]])
    valid = {key: value[fold : fold + 1] for key, value in folds.items()}  # views
    n_valid = float(valid["n"][0])
    if train["n"][0] < 1 or n_valid < 1:
        return np.full((len(alphas), folds["mean_y"].shape[1]), np.nan), n_valid
    return fold_sse(train, valid, alphas, standardize), n_valid


def gcv_curve(acc: dict, alphas: np.ndarray, standardize: bool) -> np.ndarray:
    """Generalized cross-validation score of ridge over an alpha path, per target.

    GCV(alpha) = n RSS(alpha) / (n - df(alpha))^2 (Golub, Heath & Wahba 1979),
    with the residual sum of squares of the fit on all ``n`` spectra and its
    effective number of parameters, df = 1 + sum_i l_i / (l_i + alpha) (the 1 is
    the unpenalized intercept), both from one eigendecomposition of the centred
    Gram matrix S_xx = V diag(l) V^T: with z = V^T S_xy,

        RSS(alpha) = S_yy - sum_i z_i^2 (l_i + 2 alpha) / (l_i + alpha)^2.

    It is a rotation-invariant approximation of leave-one-out CV, exact as a
    criterion (nothing is sampled), from the same statistics as the fit.

    Parameters
    ----------
    acc : dict
        A one-slot accumulator (:func:`snr_moe_dask.kernels.stats.pooled_stats`).
    alphas : ndarray of shape (n_alphas,)
    standardize : bool
        Penalize standardized coefficients (the eigenvalues are those of the
        scaled Gram matrix).

    Returns
    -------
    ndarray of shape (n_alphas, n_targets)
        ``inf`` where df >= n (the fit interpolates: no estimate of its error).
    """
    n = float(acc["n"][0])
    s = stats.full_gram(acc["sxx"][0])
    scale = np.ones(s.shape[0])
    if standardize:
        scale = feature_scale(np.diag(s), n)
        s /= np.outer(scale, scale)
    lam, v = scipy.linalg.eigh(s, overwrite_a=True, check_finite=False, driver="evd", lower=False)
    lam = np.clip(lam, 0.0, None)
    z2 = (v.T @ (acc["sxy"][0] / scale[:, None])) ** 2  # (P, T)
    denom = lam[:, None] + alphas[None, :]  # (P, A)
    shrink = (lam[:, None] + 2.0 * alphas[None, :]) / denom**2
    rss = np.clip(np.diag(acc["syy"][0])[None, :] - shrink.T @ z2, 0.0, None)  # (A, T)
    df = 1.0 + (lam[:, None] / denom).sum(axis=0)  # (A,)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = n * rss / ((n - df) ** 2)[:, None]
    score[df >= n] = np.inf
    return score


def gcv_task(acc: dict, alphas: np.ndarray, standardize: bool) -> tuple[np.ndarray, float]:
    """GCV curve of one expert (graph task): ``(score (n_alphas, n_targets), n)``;
    NaN scores for an expert with fewer than 2 spectra."""
    n = float(acc["n"][0])
    if n < 2:
        return np.full((len(alphas), acc["mean_y"].shape[1]), np.nan), n
    return gcv_curve(acc, alphas, standardize), n


def summarize_gcv(scores: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    """The CV record of :func:`summarize_cv` for GCV: one "fold" per expert.

    Parameters
    ----------
    scores : ndarray of shape (n_experts, n_alphas, n_targets)
    n : ndarray of shape (n_experts,)
    """
    mean = scores.mean(axis=2)
    usable = np.isfinite(mean)
    best = np.where(usable.any(axis=1), np.argmin(np.where(usable, mean, np.inf), axis=1), -1)
    return {
        "mse": mean[:, None, :],
        "mean": mean,
        "se": np.full_like(mean, np.nan),
        "best": best,
        "n_valid": n[:, None],
    }


def summarize_cv(sse: np.ndarray, n_valid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-fold MSE, its mean over folds and standard error, and the best alpha index.

    Parameters
    ----------
    sse : ndarray of shape (n_experts, n_folds, n_alphas, n_targets)
    n_valid : ndarray of shape (n_experts, n_folds)

    Returns
    -------
    dict
        ``mse`` (n_experts, n_folds, n_alphas): per-fold MSE averaged over
        targets (NaN for an empty fold); ``mean`` and ``se``
        (n_experts, n_alphas): mean over non-empty folds (as
        ``cross_val_score`` averages) and its standard error; ``best``
        (n_experts,) index of the lowest mean, -1 where fewer than two
        folds are usable.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = (sse / n_valid[:, :, None, None]).mean(axis=3)
    usable = np.isfinite(mse).all(axis=2)
    k = usable.sum(axis=1)
    n_experts, _, n_alphas = mse.shape
    mean = np.full((n_experts, n_alphas), np.nan)
    se = np.full((n_experts, n_alphas), np.nan)
    best = np.full(n_experts, -1)
    for e in range(n_experts):
        if k[e] < 2:
            continue
        folds = mse[e][usable[e]]
        mean[e] = folds.mean(axis=0)
        se[e] = folds.std(axis=0, ddof=1) / np.sqrt(k[e])
        best[e] = int(np.argmin(mean[e]))
    return {"mse": mse, "mean": mean, "se": se, "best": best}
