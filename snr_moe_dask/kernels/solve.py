"""Ridge solutions from centred sufficient statistics (numpy and scipy kernels).

Like ``sklearn.linear_model.Ridge(fit_intercept=True)``, the intercept is
left unpenalized by centring: with centred statistics S_xx, S_xy and means
x_bar, y_bar, the coefficients solve (S_xx + alpha I) w = S_xy and the
intercept is y_bar - x_bar w.

Each solver is a small private function; :func:`solve_ridge` chooses between
them and says which it used and why.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _solve_cholesky(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve with a float64 Cholesky factor; ``a`` (upper triangle) is kept."""
    factor = scipy.linalg.cho_factor(a.copy(order="F"), lower=False, check_finite=False)
    return scipy.linalg.cho_solve(factor, b, check_finite=False)


_REFINE_MAX_ITER = 30
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _sym_inf_norm(a: np.ndarray, block: int = 512) -> float:
    """The infinity norm of the symmetric matrix whose upper triangle ``a`` holds.

    Read by blocks of columns of the triangle, so no full-size temporary is made.
    """
    n = a.shape[0]
    row_sums = np.zeros(n)
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        blk = np.abs(a[:j1, j0:j1])
        blk[j0:j1] = np.triu(blk[j0:j1])
        row_sums[:j1] += blk.sum(axis=1)  # row i, columns j >= i
        row_sums[j0:j1] += blk.sum(axis=0) - np.diag(blk[j0:j1])  # row j, columns i < j
    return float(row_sums.max(initial=0.0))


def _solve_cholesky_refined(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Solve with a float32 Cholesky factor and float64 iterative refinement.

    The scheme of LAPACK's ``dsposv``: factor in float32 (half the time of
    float64), then repeat x += A^-1 r with r = b - A x formed in float64,
    until every column's residual is below ``||A|| eps sqrt(n) ||x||``, the
    accuracy of a float64 Cholesky solve. Returns None when float32 cannot
    do it (an entry outside its range, a factor that is not positive
    definite in float32, or no convergence in 30 steps): the caller then
    factors in float64.
    """
    n = a.shape[0]
    norm = _sym_inf_norm(a)
    if not np.isfinite(norm) or norm == 0 or norm > _FLOAT32_MAX / n:
        return None
    try:
        factor = scipy.linalg.cho_factor(a.astype(np.float32, order="F"), check_finite=False)
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(factor[0].diagonal()).all():
        return None
    tolerance = norm * np.finfo(np.float64).eps * np.sqrt(n)
    b = np.asarray(b, dtype=np.float64).reshape(n, -1)
    x = scipy.linalg.cho_solve(factor, b.astype(np.float32), check_finite=False).astype(np.float64)
    for _ in range(_REFINE_MAX_ITER):
        r = b - _symm(a, x)
        if np.all(np.abs(r).max(axis=0) <= tolerance * np.abs(x).max(axis=0)):
            return x
        scale = np.abs(r).max(axis=0)
        scale[scale == 0] = 1.0
        step = scipy.linalg.cho_solve(factor, (r / scale).astype(np.float32), check_finite=False)
        x += step.astype(np.float64) * scale
    return None


def _symm(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A x for the symmetric A whose upper triangle ``a`` holds; x of shape (n, k)."""
    return np.column_stack([scipy.linalg.blas.dsymv(1.0, a, col, lower=0) for col in x.T])


_EIGH_RCOND = 1e-10


def _solve_eigh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve through the eigendecomposition, dropping null directions (a pseudo-inverse).

    Eigenvalues below ``1e-10`` times the largest count as zero: a Gram
    matrix formed in floating point carries round-off of about n_pixels x eps
    of its largest eigenvalue, so smaller ones are noise.
    """
    w, v = scipy.linalg.eigh(a, lower=False, check_finite=False)
    keep = w > max(w.max(initial=0.0), 0.0) * _EIGH_RCOND
    return v[:, keep] @ ((v[:, keep].T @ b) / w[keep, None])


def feature_scale(gram_diag: np.ndarray, n: float) -> np.ndarray:
    """Standard deviation of each feature from the centred Gram diagonal (1 where it
    is 0), as ``StandardScaler`` scales."""
    std = np.sqrt(np.clip(gram_diag, 0, None) / n)
    return np.where(std > 0, std, 1.0)


def solve_ridge(
    n: float,
    mean_x: np.ndarray,
    mean_y: np.ndarray,
    sxx: np.ndarray,
    sxy: np.ndarray,
    alpha: float,
    *,
    standardize: bool = False,
    refine: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Solve one ridge problem from centred statistics.

    Parameters
    ----------
    n : float
        Number of spectra (at least 1).
    mean_x : ndarray of shape (n_pixels,)
    mean_y : ndarray of shape (n_targets,)
    sxx : ndarray of shape (n_pixels, n_pixels)
        Centred X^T X; only its upper triangle is read (pass a
        Fortran-ordered array, as :func:`snr_moe_dask.kernels.stats.gram_upper`
        returns, to avoid a copy).
    sxy : ndarray of shape (n_pixels, n_targets)
    alpha : float
        Non-negative penalty on the coefficients (not on the intercept).
    standardize : bool
        Penalize coefficients of features scaled to unit variance, like
        scaling X with ``StandardScaler`` before ``Ridge``; the returned
        coefficients apply to the unscaled features.
    refine : bool
        Factor in float32 and refine in float64 (see
        :func:`_solve_cholesky_refined`), falling back to a float64 factor
        when that cannot reach float64 accuracy; False always factors in
        float64.

    Returns
    -------
    coef : ndarray of shape (n_pixels, n_targets)
    intercept : ndarray of shape (n_targets,)
    info : dict
        ``solver`` ("cholesky" or "eigh") and ``reason`` for a fallback.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0; got {alpha}")
    scale = feature_scale(np.diag(sxx), n) if standardize else np.ones_like(mean_x)
    a = np.array(sxx, dtype=np.float64, order="F")
    if standardize:
        a /= np.outer(scale, scale)
    a[np.diag_indices_from(a)] += alpha
    b = sxy / scale[:, None]
    info = {"solver": "cholesky", "reason": ""}
    try:
        coef = _solve_cholesky_refined(a, b) if refine else None
        if coef is None:
            coef = _solve_cholesky(a, b)
    except np.linalg.LinAlgError as exc:
        info = {"solver": "eigh", "reason": f"not positive definite ({exc})"}
        coef = _solve_eigh(a, b)
    if not np.all(np.isfinite(coef)):
        info = {"solver": "eigh", "reason": "Cholesky gave non-finite coefficients"}
        coef = _solve_eigh(a, b)
    coef = coef / scale[:, None]
    intercept = mean_y - mean_x @ coef
    return coef, intercept, info
