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

SOLVERS = ("cholesky", "eigh")


def _solve_cholesky(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    factor = scipy.linalg.cho_factor(a, lower=False, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve(factor, b, check_finite=False)


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
        Fortran-ordered array, as :func:`snr_moe_dask.stats.gram_upper`
        returns, to avoid a copy).
    sxy : ndarray of shape (n_pixels, n_targets)
    alpha : float
        Non-negative penalty on the coefficients (not on the intercept).
    standardize : bool
        Penalize coefficients of features scaled to unit variance, like
        scaling X with ``StandardScaler`` before ``Ridge``; the returned
        coefficients apply to the unscaled features.

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
        coef = _solve_cholesky(a.copy(order="F"), b)
    except np.linalg.LinAlgError as exc:
        info = {"solver": "eigh", "reason": f"not positive definite ({exc})"}
        coef = _solve_eigh(a, b)
    if not np.all(np.isfinite(coef)):
        info = {"solver": "eigh", "reason": "Cholesky gave non-finite coefficients"}
        coef = _solve_eigh(a, b)
    coef = coef / scale[:, None]
    intercept = mean_y - mean_x @ coef
    return coef, intercept, info
