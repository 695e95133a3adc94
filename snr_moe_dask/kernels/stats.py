"""Per-bin sufficient statistics for ridge regression, and their merge (numpy kernels).

An accumulator is a plain dict of numpy arrays, for ``n_bins`` bins,
``n_pixels`` features and ``n_targets`` targets. Its statistics are kept per
slot: one slot per bin, or, for cross-validation with ``n_folds`` folds, one
per (bin, fold) pair, slot ``bin * n_folds + fold``
(``n_slots = n_bins * n_folds``):

=================  =============================  ======================================
key                shape                          meaning
=================  =============================  ======================================
``n``              (n_slots,)                     spectra used
``mean_x``         (n_slots, n_pixels)            feature means
``mean_y``         (n_slots, n_targets)           target means
``sxx``            (n_slots, n_pixels, n_pixels)  centred X^T X (one triangle, see below)
``sxy``            (n_slots, n_pixels, n_targets) centred X^T y
``syy``            (n_slots, n_targets, n_targets) centred y^T y
``bad_pixels``     (n_bins + 1,)                  bad pixels in spectra used
``excluded_bad``   (n_bins + 1,)                  spectra over the bad-pixel limit
``excluded_label`` (n_bins + 1,)                  spectra with a NaN target
``excluded_no_snr`` (n_bins + 1,)                 spectra with a NaN routing SNR
=================  =============================  ======================================

The last slot of the count arrays holds spectra with no bin (NaN SNR),
which are always excluded.

An accumulator may keep its Gram matrices *packed* (``new_accumulator(...,
packed=True)``): ``sxx`` then has shape (n_slots, n_pixels (n_pixels + 1) / 2),
each slot one triangle in LAPACK's upper packed layout
(:mod:`snr_moe_dask.kernels.packed`), half the memory, for the many slots of
a fit keyed by fine cells. Every function here takes either kind; read a
slot's Gram matrix with :func:`slot_gram` or multiply by it with
:func:`gram_times`. :func:`pooled_stats` always returns unpacked slots.

While a fold chain runs, its accumulator may also hold ``buffer_x``
(n_slots, rows, n_pixels), ``buffer_y`` and ``buffer_n``: each slot's rows
not yet folded (see :func:`fold_chunk`). They are folded and dropped with
the chain's last chunk, so a merged accumulator never has them.

Each chunk is centred on its own per-slot means and merged with the pairwise
update of Chan, Golub & LeVeque (1979), in float64. With ``precision =
"float32"`` the chunk's centred product X_c^T X_c is formed in float32 (BLAS
ssyrk) and added to the float64 accumulator: centring first keeps the float32
round-off relative to the spread of the data, not to its mean.

For speed the products are BLAS ``syrk`` calls writing in place, so only one
triangle of ``sxx`` is kept during the pass: the upper triangle of the
Fortran-ordered view ``sxx[k].T``. :func:`full_gram` returns the symmetric
matrix. A fold updates its accumulator in place: it owns it, because in the
graph each fold chain's accumulator has exactly one consumer (the tasks
that read the merged accumulator, for CV, the solve and the gate, do not
modify it).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas

from . import packed as P
from .binning import assign_bins
from .gram import add_gram, centre, product, rank_one, syrk_into
from .selection import float32_safe, impute_bad_pixels, select_rows

PRECISIONS = ("float32", "float64")
_COUNT_KEYS = ("bad_pixels", "excluded_bad", "excluded_label", "excluded_no_snr")


def new_accumulator(
    n_bins: int, n_pixels: int, n_targets: int, n_folds: int = 1, *, packed: bool = False
) -> dict[str, np.ndarray]:
    """Return an empty accumulator (all zeros) with ``n_bins * n_folds`` slots, its
    Gram matrices packed triangles with ``packed``."""
    n_slots = n_bins * n_folds
    gram = (P.packed_size(n_pixels),) if packed else (n_pixels, n_pixels)
    return {
        "n": np.zeros(n_slots),
        "mean_x": np.zeros((n_slots, n_pixels)),
        "mean_y": np.zeros((n_slots, n_targets)),
        "sxx": np.zeros((n_slots, *gram)),
        "sxy": np.zeros((n_slots, n_pixels, n_targets)),
        "syy": np.zeros((n_slots, n_targets, n_targets)),
        **{key: np.zeros(n_bins + 1, dtype=np.int64) for key in _COUNT_KEYS},
    }


def gram_upper(sxx: np.ndarray) -> np.ndarray:
    """The Fortran-ordered view of ``sxx`` whose upper triangle BLAS updates and
    which holds the Gram matrix."""
    return sxx.T


def full_gram(sxx: np.ndarray) -> np.ndarray:
    """Return the full symmetric matrix from one kept triangle (or one packed
    triangle), shape (n_pixels, n_pixels)."""
    if np.ndim(sxx) == 1:
        return P.unpack_upper(sxx)
    upper = np.triu(gram_upper(sxx))
    return upper + np.triu(upper, 1).T


def column_norms(upper: np.ndarray, scale: np.ndarray | None = None, block: int = 512):
    """The norm of each column, ``||S e_j||``, of the symmetric matrix S whose upper
    triangle ``upper`` holds (as :func:`slot_gram` returns it; what lies below the
    diagonal is not read), divided first by ``outer(scale, scale)`` when given.

    Read a block of columns of the triangle at a time, so no full symmetric copy
    is made: entry (i, j), i < j, adds its square to columns j and i.
    """
    p = upper.shape[0]
    if scale is not None:
        inv = 1.0 / np.asarray(scale, dtype=np.float64)
    squares = np.zeros(p)
    for j0 in range(0, p, block):
        j1 = min(j0 + block, p)
        above = upper[:j0, j0:j1]  # strictly above the diagonal: a view
        diagonal = np.triu(upper[j0:j1, j0:j1])
        if scale is not None:
            above = above * np.outer(inv[:j0], inv[j0:j1])
            diagonal *= np.outer(inv[j0:j1], inv[j0:j1])
        squares[j0:j1] += np.einsum("ij,ij->j", above, above)
        squares[:j0] += np.einsum("ij,ij->i", above, above)
        d2 = diagonal * diagonal
        squares[j0:j1] += d2.sum(axis=0) + d2.sum(axis=1) - np.diagonal(d2)
    return np.sqrt(squares)


def is_packed(acc: dict) -> bool:
    """Whether ``acc`` keeps its Gram matrices as packed triangles."""
    return np.ndim(acc["sxx"]) == 2


def slot_gram(acc: dict, k: int) -> np.ndarray:
    """Slot ``k``'s Gram matrix, shape (n_pixels, n_pixels), valid on and above the
    diagonal: a Fortran-ordered view (:func:`gram_upper`), or, for a packed
    accumulator, a new Fortran-ordered matrix holding the triangle (zeros below)."""
    sxx = acc["sxx"][k]
    return P.upper_matrix(sxx) if sxx.ndim == 1 else gram_upper(sxx)


def gram_times(acc: dict, k: int, w: np.ndarray) -> np.ndarray:
    """``S_k @ w`` for slot ``k``'s Gram matrix and ``w`` of shape (n_pixels, T)."""
    sxx = acc["sxx"][k]
    if sxx.ndim == 1:
        return P.times(sxx, w)
    return blas.dsymm(1.0, gram_upper(sxx), np.asarray(w, dtype=np.float64), lower=0)


def merge_into(acc: dict, k: int, n_b: float, mean_x_b, mean_y_b, sxx_b, sxy_b, syy_b) -> None:
    """Merge one bin's centred statistics into ``acc`` in place (Chan et al.).

    ``sxx_b`` is a slot's Gram matrix as an accumulator keeps it (a kept
    triangle, or a packed one), either kind into either kind. It may be None
    when the caller has already added the centred product to ``acc["sxx"][k]``
    (the in-place BLAS path).
    """
    n_a = acc["n"][k]
    n = n_a + n_b
    if n_b == 0:
        return
    dx = mean_x_b - acc["mean_x"][k]
    dy = mean_y_b - acc["mean_y"][k]
    w = n_a * n_b / n
    if sxx_b is not None:
        add_gram(acc["sxx"][k], sxx_b)
    if n_a > 0:
        rank_one(acc["sxx"][k], w, dx)
    acc["sxy"][k] += sxy_b + w * np.outer(dx, dy)
    acc["syy"][k] += syy_b + w * np.outer(dy, dy)
    acc["mean_x"][k] += dx * (n_b / n)
    acc["mean_y"][k] += dy * (n_b / n)
    acc["n"][k] = n


def merge_stats(a: dict, b: dict) -> dict:
    """Merge accumulator ``b`` into ``a`` in place and return ``a``.

    Merging is exact up to round-off: the statistics of two sets of spectra
    merged equal those of the concatenated set.
    """
    for k in range(a["n"].size):
        merge_into(
            a, k, b["n"][k], b["mean_x"][k], b["mean_y"][k], b["sxx"][k], b["sxy"][k], b["syy"][k]
        )
    for key in _COUNT_KEYS:
        a[key] += b[key]
    return a


def fold_chunk(
    acc: dict | None,
    x: np.ndarray,
    y: np.ndarray,
    bad: np.ndarray,
    route_snr: np.ndarray | None = None,
    *,
    edges: list[float] | None = None,
    cells: np.ndarray | None = None,
    n_cells: int | None = None,
    max_bad_fraction: float,
    precision: str,
    folds: np.ndarray | None = None,
    n_folds: int = 1,
    buffer_rows: int = 0,
    flush: bool = True,
    packed: bool = False,
) -> dict:
    """Fold one chunk of spectra into ``acc`` (in place) and return it.

    Parameters
    ----------
    acc : dict or None
        The partition's accumulator; None starts a new one.
    x : ndarray of shape (m, n_pixels)
        Flux.
    y : ndarray of shape (m, n_targets)
        Targets.
    bad : ndarray of bool, shape (m, n_pixels)
        Bad pixels (see :func:`snr_moe_dask.kernels.snr.find_bad_pixels`).
    route_snr : ndarray of shape (m,), optional
        The SNR that routes each spectrum to its bin, with ``edges``.
    edges : list of float, optional
        Bin edges (right-closed).
    cells, n_cells : ndarray of int, shape (m,), and int, optional
        Instead of ``route_snr`` and ``edges``: each spectrum's cell
        (:func:`snr_moe_dask.kernels.cells.assign_cells`; -1 for none) and the
        number of cells.
    max_bad_fraction : float
        Spectra with a larger fraction of bad pixels are excluded.
    precision : {"float32", "float64"}
        The dtype of the centred products; accumulation is always float64.
    folds : ndarray of int, shape (m,), optional
        Each spectrum's cross-validation fold (see :func:`snr_moe_dask.kernels.cv.assign_folds`).
    n_folds : int
        Number of folds; statistics are kept per (bin, fold) slot.
    buffer_rows : int
        With 0, each slot's rows of this chunk are folded at once. Otherwise
        each slot collects up to this many rows (from this and later chunks)
        in a buffer kept in ``acc`` and folds them together: one large BLAS
        product and one float64 addition instead of one per chunk, which is
        faster when a chunk's rows are spread over many slots. The buffers
        are part of the accumulator (a checkpoint saves them).
    flush : bool
        Fold the rows still in the buffers and drop them, so that ``acc`` is
        complete: pass True with the last chunk of a fold chain.
    packed : bool
        Keep a new accumulator's Gram matrices packed (see the module docstring).
    """
    if cells is None:
        n_bins, bins = len(edges) + 1, assign_bins(route_snr, edges)
    else:
        n_bins, bins = int(n_cells), np.asarray(cells, dtype=np.int64)
    if acc is None:
        acc = new_accumulator(n_bins, x.shape[1], y.shape[1], n_folds, packed=packed)
    use, counts = select_rows(bad, y, bins, n_bins, max_bad_fraction)
    for key, value in counts.items():
        acc[key] += value
    slot_of = bins * n_folds + (0 if folds is None else folds)
    if precision == "float32" and not float32_safe(x):
        precision, buffer_rows = "float64", 0  # this chunk's products would over- or underflow
    dtype = np.dtype(precision)
    for k in range(n_bins * n_folds):
        rows = np.flatnonzero(use & (slot_of == k))
        if rows.size == 0:
            continue
        if buffer_rows <= 0:
            _fold_slot(acc, k, _slot_rows(x, bad, rows, dtype), y[rows], precision)
        else:
            _buffer_slot(acc, k, x, bad, y, rows, dtype, buffer_rows, precision)
    if flush:
        flush_buffers(acc)
    return acc


_BUFFER_KEYS = ("buffer_x", "buffer_y", "buffer_n")
MAX_BUFFER_ROWS = 4096


def buffer_rows(budget_mb: float, n_slots: int, n_pixels: int, precision: str) -> int:
    """Rows per slot buffer (see :func:`fold_chunk`) that fit in ``budget_mb``
    MiB for all slots, at most 4096; 0 (no buffers) below 256 rows."""
    per_row = n_slots * n_pixels * np.dtype(precision).itemsize
    rows = min(int(budget_mb * 2**20 // per_row), MAX_BUFFER_ROWS)
    return rows if rows >= 256 else 0


def _buffer_slot(acc, k, x, bad, y, rows, dtype, capacity, precision) -> None:
    """Copy slot ``k``'s rows into its buffer, folding the buffer whenever it fills."""
    if "buffer_x" not in acc:
        n_slots = acc["n"].size
        acc["buffer_x"] = np.empty((n_slots, capacity, x.shape[1]), dtype=dtype)
        acc["buffer_y"] = np.empty((n_slots, capacity, y.shape[1]))
        acc["buffer_n"] = np.zeros(n_slots, dtype=np.int64)
    bx, by, bn = acc["buffer_x"][k], acc["buffer_y"][k], acc["buffer_n"]
    imputed = _slot_rows(x, bad, rows, dtype) if bad[rows].any() else None
    done = 0
    while done < rows.size:
        n = int(bn[k])
        take = min(bx.shape[0] - n, rows.size - done)
        if imputed is not None:
            bx[n : n + take] = imputed[done : done + take]
        elif x.dtype == dtype:
            np.take(x, rows[done : done + take], axis=0, out=bx[n : n + take])
        else:
            bx[n : n + take] = x[rows[done : done + take]]
        by[n : n + take] = y[rows[done : done + take]]
        done += take
        bn[k] = n + take
        if bn[k] == bx.shape[0]:
            _fold_slot(acc, k, bx, by, precision)
            bn[k] = 0


def flush_buffers(acc: dict) -> dict:
    """Fold the rows waiting in ``acc``'s buffers (see :func:`fold_chunk`), drop the
    buffers and return ``acc``."""
    if "buffer_x" in acc:
        precision = acc["buffer_x"].dtype.name
        for k in np.flatnonzero(acc["buffer_n"]):
            n = int(acc["buffer_n"][k])
            _fold_slot(acc, k, acc["buffer_x"][k, :n], acc["buffer_y"][k, :n], precision)
        for key in _BUFFER_KEYS:
            del acc[key]
    return acc


def _slot_rows(x, bad, rows, dtype) -> np.ndarray:
    """A new array of the ``rows`` of ``x`` in ``dtype``, bad pixels imputed
    (:func:`snr_moe_dask.kernels.selection.impute_bad_pixels`, over these rows)."""
    xk = x[rows]
    badk = bad[rows]
    if badk.any():
        xk = impute_bad_pixels(xk.astype(np.float64), badk)
    return xk.astype(dtype, copy=False)


def _fold_slot(acc: dict, k: int, xk: np.ndarray, yk: np.ndarray, precision: str) -> None:
    """Fold rows ``xk`` (product dtype; centred in place) with targets ``yk`` into slot ``k``."""
    xc, mean_x, shift = centre(xk, precision)
    yk = np.asarray(yk, dtype=np.float64)
    mean_y = yk.mean(axis=0)
    yc = yk - mean_y
    if acc["sxx"].ndim == 2:
        P.add_upper(acc["sxx"][k], product(xc))
    else:
        syrk_into(xc, acc["sxx"][k])
    sxy = cross_float64(xc, yc)
    if shift is not None:
        # xc was centred on a float32-rounded mean c, not the mean m:
        # sum (x-c)(x-c)^T = S + n (m-c)(m-c)^T, and sum (x-c)(y-ybar)^T = S_xy.
        rank_one(acc["sxx"][k], -float(len(xk)), shift)
    merge_into(acc, k, float(len(xk)), mean_x, mean_y, None, sxy, yc.T @ yc)


def cross_float64(xc: np.ndarray, yc: np.ndarray, block: int = 128) -> np.ndarray:
    """``xc.T @ yc`` summed in float64, shape (n_pixels, n_targets).

    The products cost little (a matrix-vector product per target), but summed
    in float32 they are the largest rounding error of a float32 fit (about 10x
    that of the Gram matrix on a badly centred store): ``block`` rows at a time
    are widened into a buffer that stays in cache.
    """
    if xc.dtype == np.float64:
        return xc.T @ yc
    out = np.zeros((xc.shape[1], yc.shape[1]))
    buf = np.empty((min(block, len(xc)), xc.shape[1]))
    for start in range(0, len(xc), block):
        rows = slice(start, min(start + block, len(xc)))
        part = buf[: rows.stop - rows.start]
        part[...] = xc[rows]
        out += part.T @ yc[rows]
    return out


def pooled_stats(acc: dict, groups: list[list[int]]) -> dict:
    """Return an accumulator whose slot ``g`` merges the slots ``groups[g]`` of ``acc``.

    The count arrays are not carried over.
    """
    out = new_accumulator(len(groups), acc["mean_x"].shape[1], acc["mean_y"].shape[1])
    for g, slots in enumerate(groups):
        for k in slots:
            merge_into(
                out,
                g,
                acc["n"][k],
                acc["mean_x"][k],
                acc["mean_y"][k],
                acc["sxx"][k],
                acc["sxy"][k],
                acc["syy"][k],
            )
    return out


def total_stats(acc: dict) -> dict:
    """Return the statistics of all slots together (one slot), for the global model."""
    return pooled_stats(acc, [list(range(acc["n"].size))])


def bin_stats(acc: dict, n_folds: int) -> dict:
    """Return the per-bin statistics (one slot per bin) of a per-(bin, fold) accumulator."""
    if n_folds == 1:
        return acc
    n_bins = acc["n"].size // n_folds
    return pooled_stats(acc, [list(range(k * n_folds, (k + 1) * n_folds)) for k in range(n_bins)])
