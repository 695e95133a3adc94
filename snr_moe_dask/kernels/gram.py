"""In-place BLAS updates of the Gram triangles an accumulator keeps, unpacked or packed
(numpy kernels for :mod:`snr_moe_dask.kernels.stats`).

An unpacked slot ``sxx`` (C order, shape (P, P)) keeps the upper triangle of
its Fortran-ordered view ``sxx.T``, which BLAS ``syrk`` and ``syr`` update in
place; a packed slot is one triangle of :mod:`snr_moe_dask.kernels.packed`,
updated from a per-thread scratch product.
"""

from __future__ import annotations

import threading

import numpy as np
from scipy.linalg import blas

from . import packed as P

_SCRATCH = threading.local()


def _scratch(n: int, dtype) -> np.ndarray:
    """A per-thread, Fortran-ordered buffer for BLAS output, zero below the diagonal.

    Per thread, because a worker with several threads folds several chunks at once.
    """
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (n, np.dtype(dtype).str)
    if key not in buffers:
        buffers[key] = np.zeros((n, n), dtype=dtype, order="F")
    return buffers[key]


def _upper(sxx: np.ndarray) -> np.ndarray:
    """The Fortran-ordered view holding a slot's kept triangle (as ``stats.gram_upper``)."""
    return sxx.T


def syrk_into(xc: np.ndarray, out: np.ndarray) -> None:
    """out (triangle) += xc^T xc, with xc of shape (m, n_pixels), C-ordered."""
    a = xc.T  # Fortran-ordered (n_pixels, m): syrk with trans=0 gives a a^T = xc^T xc
    if xc.dtype == np.float64:
        blas.dsyrk(1.0, a, beta=1.0, c=_upper(out), trans=0, lower=0, overwrite_c=1)
        return
    # ssyrk writes only the upper triangle of the scratch, whose lower triangle
    # stays zero, so adding the whole buffer adds just the product.
    scratch = _scratch(xc.shape[1], np.float32)
    prod = blas.ssyrk(1.0, a, beta=0.0, c=scratch, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(prod, scratch):  # pragma: no cover - BLAS copied after all
        prod = np.triu(prod)
    np.add(_upper(out), prod, out=_upper(out))


def product(xc: np.ndarray) -> np.ndarray:
    """``xc^T xc`` in the upper triangle of this thread's Fortran scratch buffer (for
    a packed slot, which BLAS cannot update in place)."""
    scratch = _scratch(xc.shape[1], xc.dtype)
    syrk = blas.dsyrk if xc.dtype == np.float64 else blas.ssyrk
    prod = syrk(1.0, xc.T, beta=0.0, c=scratch, trans=0, lower=0, overwrite_c=1)
    return prod if np.shares_memory(prod, scratch) else np.triu(prod)


def syr(alpha: float, x: np.ndarray, out: np.ndarray) -> None:
    """out (triangle) += alpha x x^T."""
    blas.dsyr(alpha, x, lower=0, a=_upper(out), overwrite_a=1)


def add_gram(target: np.ndarray, source: np.ndarray) -> None:
    """Add one slot's Gram matrix into another's, packed or not."""
    if target.ndim == 1:
        if source.ndim == 1:
            target += source
        else:
            P.add_upper(target, _upper(source))
    elif source.ndim == 1:
        P.add_to_kept(target, source)
    else:
        _upper(target)[...] += _upper(source)


def rank_one(sxx: np.ndarray, weight: float, d: np.ndarray) -> None:
    """``sxx += weight d d^T`` on one slot's kept (or packed) triangle."""
    if sxx.ndim == 1:
        P.rank_one(sxx, weight, d)
    else:
        syr(weight, d, sxx)


def centre(xk, precision):
    """Centre rows in place. Returns ``(xc, mean, shift)``.

    In float64 the rows are centred on their mean. In float32 they are
    centred on the mean rounded to float32, in one float32 pass; ``shift`` =
    mean - that centre, for an exact rank-1 correction.
    """
    mean = xk.mean(axis=0, dtype=np.float64)
    if precision == "float64":
        return np.subtract(xk, mean, out=xk), mean, None
    centre = mean.astype(np.float32)
    xc = np.subtract(xk, centre, out=xk, dtype=np.float32)
    shift = mean - centre.astype(np.float64)
    return xc, mean, shift if shift.any() else None
