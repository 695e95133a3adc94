"""Packed symmetric Gram matrices: half the memory for per-cell statistics (numpy kernels).

The accumulator of :mod:`snr_moe_dask.kernels.stats` keeps one triangle of
each slot's centred Gram matrix ``sxx[k]`` in a full ``(P, P)`` array: the
upper triangle of the Fortran-ordered view ``sxx[k].T``
(:func:`~snr_moe_dask.kernels.stats.gram_upper`). Packing stores just that
triangle, ``P (P + 1) / 2`` numbers, in LAPACK's upper packed layout
(``uplo="U"``, column by column): element ``G[i, j]``, ``i <= j``, of the
symmetric matrix ``G`` is at ``i + j (j + 1) / 2``. That is row ``j`` of
``sxx[k]`` up to its diagonal, so packing reads contiguous rows, and BLAS and
LAPACK packed routines (``dspr``, ``dpptrf``) work on it in place.

Memory
------
The Gram part of an accumulator with ``C`` cells, ``F`` folds and ``P``
pixels takes

    unpacked: C * F * P**2 * 8 bytes
    packed:   C * F * P * (P + 1) / 2 * 8 bytes  (just over half)

per fold chain, and the other statistics add ``C * F * (P + P * T + T**2 + T
+ 1) * 8`` bytes for ``T`` targets (small next to the Gram part). With 16
fine cells at 4096 pixels, one fold slot per cell takes 2.15 GB unpacked and
1.07 GB packed; with 5 folds, 10.7 GB and 5.4 GB. :func:`accumulator_bytes`
computes these numbers.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas


def packed_size(n_pixels: int) -> int:
    """Length of a packed triangle, ``n_pixels (n_pixels + 1) / 2``."""
    return int(n_pixels) * (int(n_pixels) + 1) // 2


def _n_pixels(packed_length: int) -> int:
    """The P with ``packed_size(P) == packed_length``; ValueError if there is none."""
    p = int((np.sqrt(8 * packed_length + 1) - 1) // 2)
    for candidate in (p - 1, p, p + 1):
        if candidate >= 0 and packed_size(candidate) == packed_length:
            return candidate
    raise ValueError(
        f"a packed triangle has P (P + 1) / 2 entries; got {packed_length}, which is not "
        "of that form: pass the output of pack_upper"
    )


def pack_upper(sxx: np.ndarray) -> np.ndarray:
    """Pack the kept triangle of one or more Gram matrices.

    Parameters
    ----------
    sxx : ndarray of shape (..., P, P)
        Matrices whose kept triangle is the upper triangle of ``sxx.T``, as
        the accumulator holds them (the lower triangle of ``sxx`` in C
        order); for a symmetric matrix this is just its triangle.

    Returns
    -------
    ndarray of float64, shape (..., P (P + 1) / 2)
        LAPACK upper packed layout (see the module docstring).
    """
    sxx = np.asarray(sxx)
    if sxx.ndim < 2 or sxx.shape[-1] != sxx.shape[-2]:
        raise ValueError(
            f"sxx must have shape (..., P, P) (square in its last two axes); got {sxx.shape}"
        )
    p = sxx.shape[-1]
    out = np.empty((*sxx.shape[:-2], packed_size(p)), dtype=np.float64)
    start = 0
    for j in range(p):  # row j of sxx up to the diagonal = column j of the kept triangle
        out[..., start : start + j + 1] = sxx[..., j, : j + 1]
        start += j + 1
    return out


def upper_matrix(packed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return one packed triangle as a Fortran-ordered matrix holding it on and above
    the diagonal, shape (P, P): what BLAS and LAPACK read with ``lower=0``, built by
    contiguous column copies. ``out``: a Fortran-ordered (P, P) array to fill (only
    its triangle is written); by default a new one, zero below the diagonal."""
    packed = np.asarray(packed, dtype=np.float64)
    p = _n_pixels(packed.size)
    if out is None:
        out = np.zeros((p, p), order="F")
    start = 0
    for j in range(p):  # column j of the triangle is contiguous in both layouts
        out[: j + 1, j] = packed[start : start + j + 1]
        start += j + 1
    return out


def unpack_upper(packed: np.ndarray, n_pixels: int | None = None, block: int = 256) -> np.ndarray:
    """Return the full symmetric matrices of packed triangles.

    Parameters
    ----------
    packed : ndarray of shape (..., P (P + 1) / 2)
        From :func:`pack_upper`.
    n_pixels : int, optional
        ``P``; inferred from the length when omitted.
    block : int
        Columns mirrored at a time below the diagonal.

    Returns
    -------
    ndarray of float64, shape (..., P, P)
        Symmetric; equal (exactly) to
        :func:`~snr_moe_dask.kernels.stats.full_gram` of the packed matrix.
    """
    packed = np.asarray(packed, dtype=np.float64)
    p = _n_pixels(packed.shape[-1]) if packed.ndim else -1
    if n_pixels is not None and int(n_pixels) != p:
        raise ValueError(
            f"n_pixels={n_pixels} needs packed triangles of length {packed_size(n_pixels)}; "
            f"got shape {packed.shape}"
        )
    lead = packed.shape[:-1]
    full = np.empty((*lead, p, p))
    for index in np.ndindex(*lead):
        upper = upper_matrix(packed[index], out=full[index].T)
        for j0 in range(0, p, block):  # mirror a block of columns into rows below the diagonal
            j1 = min(j0 + block, p)
            upper[j1:, j0:j1] = upper[j0:j1, j1:].T
            diagonal = upper[j0:j1, j0:j1]
            lower = np.tril_indices(j1 - j0, -1)
            diagonal[lower] = diagonal.T[lower]
    return full


def add_packed(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Add packed triangles elementwise (``out = a + b``; ``out=a`` adds in place).

    This is the merge of two Gram matrices centred on the same means; for
    statistics centred on their own means use :func:`merge_packed`.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"packed triangles must have one shape to add; got {a.shape}, {b.shape}")
    return np.add(a, b, out=out)


def merge_packed(
    a: np.ndarray,
    b: np.ndarray,
    n_a: float,
    n_b: float,
    mean_a: np.ndarray,
    mean_b: np.ndarray,
) -> np.ndarray:
    """Merge two packed centred Gram matrices into that of the union (a new array).

    The pairwise update of Chan, Golub & LeVeque (1979), as
    :func:`~snr_moe_dask.kernels.stats.merge_into` does unpacked:
    ``S = S_a + S_b + (n_a n_b / (n_a + n_b)) d d^T``, ``d = mean_b - mean_a``,
    the rank-one term by BLAS ``dspr`` on the packed layout.

    Parameters
    ----------
    a, b : ndarray of shape (P (P + 1) / 2,)
        Packed centred Gram matrices of two sets of spectra.
    n_a, n_b : float
        Their numbers of spectra.
    mean_a, mean_b : ndarray of shape (P,)
        Their feature means.

    Returns
    -------
    ndarray of shape (P (P + 1) / 2,)
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"merge_packed takes one packed triangle, shape (L,); got {a.shape}")
    p = _n_pixels(a.size)
    d = np.asarray(mean_b, dtype=np.float64) - np.asarray(mean_a, dtype=np.float64)
    if d.shape != (p,):
        raise ValueError(f"mean_a and mean_b must have shape ({p},); got {d.shape}")
    out = add_packed(a, np.asarray(b, dtype=np.float64))
    n = float(n_a) + float(n_b)
    if n_a > 0 and n_b > 0:
        out = blas.dspr(p, float(n_a) * float(n_b) / n, d, out, lower=0, overwrite_ap=1)
    return out


def accumulator_bytes(
    n_cells: int, n_folds: int, n_pixels: int, n_targets: int = 1, *, packed: bool = False
) -> int:
    """Bytes of an accumulator's float64 statistics (``n``, means, ``sxx``, ``sxy``, ``syy``).

    ``n_cells * n_folds * (gram + P + P * T + T**2 + T + 1) * 8`` with
    ``gram = P**2``, or ``P (P + 1) / 2`` when ``packed``.
    """
    p, t = int(n_pixels), int(n_targets)
    gram = packed_size(p) if packed else p * p
    return int(n_cells) * int(n_folds) * (gram + p + p * t + t * t + t + 1) * 8


# -- in-place updates of one packed slot, as the accumulator needs them ----------------------


def add_upper(packed: np.ndarray, upper: np.ndarray) -> None:
    """Add the upper triangle of ``upper`` into one packed triangle, in place.

    Parameters
    ----------
    packed : ndarray of float64, shape (P (P + 1) / 2,)
        Modified in place.
    upper : ndarray of shape (P, P)
        Read only on and above the diagonal, column by column: pass a
        Fortran-ordered matrix (a BLAS ``syrk`` output, or
        :func:`~snr_moe_dask.kernels.stats.gram_upper` of an accumulator
        slot), whose columns are contiguous.
    """
    start = 0
    for j in range(upper.shape[0]):
        packed[start : start + j + 1] += upper[: j + 1, j]
        start += j + 1


def add_to_kept(sxx: np.ndarray, packed: np.ndarray) -> None:
    """Add one packed triangle into the kept triangle of an unpacked accumulator slot.

    Parameters
    ----------
    sxx : ndarray of float64, shape (P, P)
        An accumulator slot (C order), whose kept triangle is row ``j`` up to
        the diagonal; modified in place.
    packed : ndarray of shape (P (P + 1) / 2,)
    """
    start = 0
    for j in range(sxx.shape[0]):
        sxx[j, : j + 1] += packed[start : start + j + 1]
        start += j + 1


def rank_one(packed: np.ndarray, weight: float, d: np.ndarray) -> None:
    """``packed += weight d d^T`` in place (BLAS ``dspr``); ``d`` of shape (P,)."""
    out = blas.dspr(d.size, float(weight), d, packed, lower=0, overwrite_ap=1)
    if not np.shares_memory(out, packed):  # pragma: no cover - f2py copied after all
        packed[...] = out


def times(packed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The product ``G x`` of the symmetric matrix of a packed triangle (BLAS ``dspmv``).

    Parameters
    ----------
    packed : ndarray of shape (P (P + 1) / 2,)
    x : ndarray of shape (P, T)

    Returns
    -------
    ndarray of float64, shape (P, T)
    """
    x = np.asarray(x, dtype=np.float64)
    p = _n_pixels(packed.size)
    return np.column_stack([blas.dspmv(p, 1.0, packed, x[:, t]) for t in range(x.shape[1])])
