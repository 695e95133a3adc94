"""Choose coarse bin edges by exact K-fold cross-validation, from statistics kept per
(fine cell, fold) (numpy kernels).

The problem
-----------
One pass keeps statistics per (fine cell, fold) slot, slot ``cell * n_folds
+ fold`` (the layout of :mod:`snr_moe_dask.kernels.stats`), over a grid of
keys (:mod:`snr_moe_dask.kernels.cells`) of shape ``(K_1, ..., K_n)``. A
*partition* merges each key's ``K_k`` fine bins into ``B_k`` runs of
adjacent fine bins (its *cuts*); its coarse cells are the products of the
runs. Its *CV error* is that of the oracle-routed mixture: each coarse
cell's expert is fitted on the other folds of the cell's spectra and
scored on the held-out fold, the held-out squared errors (averaged over
targets) are summed over coarse cells and folds, and divided by the number
of spectra. The search returns the partition with the lowest CV error.

The rules mirror the fit (:func:`snr_moe_dask.fit.tasks.solve_experts`):

* A coarse cell with fewer than ``max(min_spectra, 1)`` spectra (over all
  folds, as the fit counts them) is served by the global model: its
  held-out error is the global model's, fitted on the other folds of *all*
  spectra, on the cell's held-out spectra.
* With an alpha grid (``alphas``), each coarse cell's alpha is the grid
  value with the lowest mean over folds of its per-fold MSE
  (:func:`snr_moe_dask.kernels.cv.summarize_cv`); a cell with fewer than two
  usable folds keeps the fixed ``alpha``, as the fit does. The global model
  chooses its alpha the same way. Without a grid every model uses ``alpha``.
* A fold in which a served cell's training folds are empty (all its spectra
  are in the held-out fold) has no expert to score: those spectra are scored
  by the global model of that fold. (The fit would serve the cell by its
  expert fitted on all its spectra; CV cannot score that model.)

Because the held-out error of a partition is a sum over its coarse cells,
each coarse cell's cost (its held-out SSE) is computed once and cached.

Algorithm
---------
For one key the search is an exact dynamic programme over adjacent runs:
``cost(i, j)`` is the held-out SSE of the run of fine bins ``i ... j``, and
``best(j, b) = min_i best(i - 1, b - 1) + cost(i, j)``. It gives the best
partition for every number of bins ``b <= B`` at once.

For two or more keys the cost is additive over the product cells but not
separable per key. The exact search (``method="exact"``, the default)
enumerates every partition of keys ``2 ... n`` (into ``1 ... B_k`` bins
each) and, for each, runs the dynamic programme over key 1, whose run cost
is then a sum over the other keys' coarse runs. Every product cell's cost is
cached, so each is computed once however many partitions contain it; the
programme runs ``prod_{k >= 2} sum_{b <= B_k} C(K_k - 1, b - 1)`` times,
cheaply (table look-ups).
``method="coordinate"`` is an *approximate* alternative for large grids:
starting from even cuts, it re-optimises one key at a time (exactly, by the
programme, the other keys' cuts held fixed) until a sweep changes nothing.
It finds a partition that no change of one key's cuts improves, not
necessarily the best one, and computes fewer product cells.

Factorizations
--------------
A run (a product cell) that is served by its expert costs one
factorization per fold with non-empty training and held-out parts: a
Cholesky solve of the ``P x P`` training system at the fixed alpha (via
:func:`snr_moe_dask.kernels.solve.solve_ridge`), or, with an alpha grid, one
eigendecomposition that gives the whole alpha path
(:func:`snr_moe_dask.kernels.cv.fold_sse_task`). Cells served by the global
model cost none: the global model's held-out error is additive over fine
cells and is computed once per (fine cell, fold).

For one key of ``K`` fine bins searched up to ``B`` bins, the runs that
occur in some partition number ``R(K, B)``: ``1`` for ``B = 1``,
``2 K - 1`` for ``B = 2`` and ``K (K + 1) / 2`` for ``B >= 3``. The exact
search needs at most

    n_folds * prod_k R(K_k, B_k)  factorizations for the cells, plus
    n_folds (fixed alpha) or 2 n_folds (grid: eigh, then Cholesky) for the global model

(:func:`count_solves`); one key with ``K = 16``, ``B >= 3`` and 5 folds
makes 685 Cholesky solves, two keys with ``K = 4`` and ``B = 3`` each
505. The coordinate search needs at most ``n_folds * R(K_k, B_k) *
prod_{l != k} B_l`` new factorizations per key per sweep. The result
reports the count made (``solves``).

Memory
------
Besides the accumulator, the search holds the pooled per-fold statistics of
one product cell (``n_folds`` slots, built by merging fine slots, extended
in place when the next run grows by a fine bin, dropped when the next cell
is not an extension), one training slot, and the solver's temporaries: about
``(n_folds + 5) * P**2 * 8`` bytes (5 folds at 4096 pixels: 1.3 GB). Only
scalars are cached per product cell.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.linalg import blas

from . import cells, cv, solve, stats

METHODS = ("exact", "coordinate")
_IMPROVEMENT = 1e-12  # relative: a coordinate step must beat the current error by more

Rect = tuple[tuple[int, int], ...]  # inclusive (first, last) fine bin of each key


def runs_of(cuts: Sequence[int], n_fine: int) -> list[tuple[int, int]]:
    """The runs (first, last fine bin, inclusive) that ``cuts`` make of ``n_fine`` bins."""
    bounds = [0, *cells.check_cuts(cuts, n_fine), n_fine]
    return [(a, b - 1) for a, b in zip(bounds[:-1], bounds[1:])]


def n_runs(n_fine: int, n_bins: int) -> int:
    """``R(K, B)``: how many runs of ``K`` fine bins occur in a partition into ``<= B`` bins."""
    return sum(1 for _ in _needed_runs(n_fine, n_bins))


def count_solves(
    fine_shape, n_bins, n_folds: int, *, grid: bool = False, method: str = "exact"
) -> int:
    """Upper bound of the factorizations of :func:`search_edges`.

    Exact for ``method="exact"`` when every cell is served by its expert
    and every (cell, fold) has training and held-out spectra; fallback
    cells and empty folds need fewer. For ``method="coordinate"`` it is the
    bound of the first sweep (later sweeps reuse most cells), plus the global model.
    """
    shape, bins = _check_shape(fine_shape, n_bins)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    runs = [n_runs(k, b) for k, b in zip(shape, bins)]
    if method == "coordinate":
        cells_count = sum(r * math.prod(bins) // b for r, b in zip(runs, bins))
    else:
        cells_count = math.prod(runs)
    return int(n_folds) * (cells_count + (2 if grid else 1))


def search_edges(
    acc: dict,
    fine_shape,
    n_bins,
    *,
    n_folds: int,
    alpha: float,
    alphas: Sequence[float] | None = None,
    min_spectra: int = 1,
    standardize: bool = False,
    method: str = "exact",
    max_sweeps: int = 10,
) -> dict:
    """Choose the coarse partition of the fine grid with the lowest K-fold CV error.

    Parameters
    ----------
    acc : dict
        Accumulator with one slot per (fine cell, fold), slot ``cell *
        n_folds + fold``, cells in :func:`~snr_moe_dask.kernels.cells.assign_cells`
        order: ``prod(fine_shape) * n_folds`` slots.
    fine_shape : int or sequence of int
        Fine bins per key, ``(K_1, ..., K_n)``; an int for one key.
    n_bins : int or sequence of int
        Coarse bins wanted per key, ``1 <= B_k <= K_k``.
    n_folds : int
        Folds, at least 2.
    alpha : float
        The fixed ridge penalty (> 0), used by every model without a grid,
        and, with a grid, by a model that has fewer than two usable folds.
    alphas : sequence of float, optional
        An alpha grid: each coarse cell, and the global model, then takes
        its own CV-chosen alpha (see the module docstring).
    min_spectra : int
        Coarse cells with fewer spectra are served by the global model.
    standardize : bool
        Penalize standardized coefficients, as the fit does.
    method : {"exact", "coordinate"}
        Exact search (default), or the approximate coordinate search for
        grids too large to search exactly (one key: both are exact).
    max_sweeps : int
        Most sweeps over the keys for ``method="coordinate"``.

    Returns
    -------
    dict
        ``cuts`` : list (per key) of list of int, the chosen partition
        (``B_k`` bins each; :func:`~snr_moe_dask.kernels.cells.coarse_edges` gives its edges).
        ``error`` : float, its CV error (mean squared error per spectrum and target).
        ``errors_by_bins`` : ndarray of shape ``n_bins``, the best CV error found
        with ``b_k`` bins per key at index ``(b_1 - 1, ..., b_n - 1)`` (NaN
        where not searched); ``cuts_by_bins`` : dict from ``(b_1, ...)`` to its cuts.
        ``coarse`` : dict of ndarrays over the chosen coarse cells (C order):
        ``sse``, ``n``, ``alpha``, ``fallback``.
        ``table_sse``, ``table_n``, ``table_alpha``, ``table_fallback`` :
        ndarrays of shape ``(K_1, K_1, ..., K_n, K_n)``; entry ``[i_1, j_1,
        ..., i_n, j_n]`` describes the product cell of runs ``i_k ... j_k``
        (held-out SSE summed over folds and averaged over targets, spectra,
        alpha used, whether served by the global model); NaN (False) where
        not computed.
        ``global_alpha``, ``n_spectra``, ``solves`` (factorizations made), ``method``.
    """
    shape, bins = _check_shape(fine_shape, n_bins)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    costs = _CellCosts(acc, shape, n_folds, alpha, alphas, min_spectra, standardize)
    if method == "exact" or len(shape) == 1:
        found = _exact_search(costs, bins)
        method = "exact"
    else:
        found = _coordinate_search(costs, bins, max_sweeps)
    chosen = found[bins]
    return {
        "cuts": chosen[1],
        "error": chosen[0] / costs.n_total,
        "n_bins": bins,
        "errors_by_bins": _errors_array(found, bins, costs.n_total),
        "cuts_by_bins": {b: cuts for b, (_, cuts) in sorted(found.items())},
        "coarse": _coarse_records(costs, chosen[1]),
        **costs.tables(),
        "global_alpha": costs.global_alpha,
        "n_spectra": costs.n_total,
        "solves": costs.solves,
        "method": method,
    }


def partition_cv_error(
    acc: dict,
    fine_shape,
    cuts_per_key,
    *,
    n_folds: int,
    alpha: float,
    alphas: Sequence[float] | None = None,
    min_spectra: int = 1,
    standardize: bool = False,
) -> dict:
    """The CV error of one given partition, by the rules of :func:`search_edges`.

    For a report comparing a hand-chosen partition (e.g. today's SNR edges
    on a fine grid) with the searched one.

    Parameters
    ----------
    acc, fine_shape, n_folds, alpha, alphas, min_spectra, standardize
        As for :func:`search_edges`.
    cuts_per_key : sequence of sequence of int
        Each key's cuts (:func:`snr_moe_dask.kernels.cells.check_cuts_per_key`).

    Returns
    -------
    dict
        ``error`` (float), ``coarse`` (as in :func:`search_edges`),
        ``global_alpha``, ``n_spectra`` and ``solves``.
    """
    cuts = cells.check_cuts_per_key(fine_shape, cuts_per_key)
    shape, _ = _check_shape(fine_shape, [len(c) + 1 for c in cuts])
    costs = _CellCosts(acc, shape, n_folds, alpha, alphas, min_spectra, standardize)
    coarse = _coarse_records(costs, cuts)
    return {
        "error": float(coarse["sse"].sum()) / costs.n_total,
        "coarse": coarse,
        "global_alpha": costs.global_alpha,
        "n_spectra": costs.n_total,
        "solves": costs.solves,
    }


# -- validation ---------------------------------------------------------------------------


def _check_shape(fine_shape, n_bins) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = (fine_shape,) if np.ndim(fine_shape) == 0 else tuple(fine_shape)
    bins = (n_bins,) if np.ndim(n_bins) == 0 else tuple(n_bins)
    if len(bins) != len(shape) or not shape:
        raise ValueError(
            f"n_bins has {len(bins)} entries for {len(shape)} keys (fine_shape={shape}); "
            "pass one bin count per key"
        )
    for k, (n_fine, b) in enumerate(zip(shape, bins)):
        if int(n_fine) != n_fine or n_fine < 1:
            raise ValueError(f"fine_shape[{k}] must be a positive integer; got {n_fine!r}")
        if int(b) != b or not 1 <= b <= n_fine:
            raise ValueError(
                f"n_bins[{k}]={b!r} must be an integer in 1 ... {n_fine} (the key's fine "
                "bins); ask for fewer coarse bins or make more fine bins"
            )
    return tuple(int(k) for k in shape), tuple(int(b) for b in bins)


def _check_settings(acc, n_cells, n_folds, alpha, alphas, min_spectra) -> np.ndarray | None:
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    if acc["n"].size != n_cells * n_folds:
        raise ValueError(
            f"acc has {acc['n'].size} slots; {n_cells} fine cells x {n_folds} folds need "
            f"{n_cells * n_folds} (slot cell * n_folds + fold): check fine_shape and n_folds"
        )
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number; got {alpha!r}")
    if min_spectra < 0:
        raise ValueError(f"min_spectra must be >= 0; got {min_spectra!r}")
    if alphas is None:
        return None
    grid = np.asarray(alphas, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError(
            f"alphas must be a non-empty grid of positive finite numbers; got {list(grid)}; "
            "e.g. cv.alpha_grid(1e-1, 1e7, 9)"
        )
    return grid


# -- held-out errors -------------------------------------------------------------------------


def _predictor_sse(coef: np.ndarray, intercept: np.ndarray, acc: dict, slot: int) -> np.ndarray:
    """Sum of squared errors of ``y = intercept + x coef`` on slot ``slot``'s spectra.

    From the slot's centred statistics: ``S_yy - 2 w^T S_xy + w^T S_xx w + n d^2``
    with ``d = ybar - intercept - xbar^T w``, per target (shape (n_targets,)).
    """
    n = float(acc["n"][slot])
    if n == 0:
        return np.zeros(coef.shape[1])
    sw = blas.dsymm(1.0, stats.gram_upper(acc["sxx"][slot]), coef, lower=0)
    quad = np.einsum("pt,pt->t", coef, sw)
    cross = np.einsum("pt,pt->t", coef, acc["sxy"][slot])
    d = acc["mean_y"][slot] - intercept - acc["mean_x"][slot] @ coef
    return np.diag(acc["syy"][slot]) - 2.0 * cross + quad + n * d**2


def _train_stats(folds: dict, fold: int) -> dict:
    """The one-slot statistics of every fold but ``fold``."""
    n_folds = folds["n"].size
    return stats.pooled_stats(folds, [[f for f in range(n_folds) if f != fold]])


def _ridge(train: dict, alpha: float, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and intercept of ridge on a one-slot accumulator (a Cholesky solve)."""
    coef, intercept, _ = solve.solve_ridge(
        train["n"][0],
        train["mean_x"][0],
        train["mean_y"][0],
        stats.gram_upper(train["sxx"][0]),
        train["sxy"][0],
        alpha,
        standardize=standardize,
    )
    return coef, intercept


def _chosen_index(curves: np.ndarray, n_valid: np.ndarray, n_grid: int) -> int:
    """Index in the path (grid, then the fixed alpha) of a model's alpha.

    ``curves`` (n_folds, n_grid + 1, n_targets) NaN for unusable folds; the
    grid value with the lowest mean per-fold MSE, or the fixed alpha when
    fewer than two folds are usable (:func:`cv.summarize_cv`).
    """
    best = int(cv.summarize_cv(curves[None, :, :n_grid], n_valid[None])["best"][0])
    return best if best >= 0 else n_grid


class _CellCosts:
    """Held-out SSE of product cells of fine bins, each computed once and cached.

    It holds the accumulator, the global model's held-out SSE per (fine
    cell, fold), one product cell's pooled per-fold statistics (reused when
    the next cell extends it) and a scalar record per product cell.
    """

    def __init__(self, acc, shape, n_folds, alpha, alphas, min_spectra, standardize):
        n_cells = math.prod(shape)
        self.grid = _check_settings(acc, n_cells, n_folds, alpha, alphas, min_spectra)
        self.acc, self.shape, self.n_folds = acc, shape, int(n_folds)
        self.path = np.array([*(self.grid if self.grid is not None else []), float(alpha)])
        self.min_spectra = max(float(min_spectra), 1.0)
        self.standardize = bool(standardize)
        self.n_cell_fold = np.asarray(acc["n"], dtype=np.float64).reshape(n_cells, n_folds)
        self.n_total = float(self.n_cell_fold.sum())
        if self.n_total < 1:
            raise ValueError("acc holds no spectrum: every slot has n = 0; fold spectra into it")
        self.solves = 0
        self.records: dict[Rect, tuple[float, float, float, bool]] = {}
        self._running: tuple[Rect, dict] | None = None
        self.global_alpha, self.global_sse = self._global_model()

    # the global model ---------------------------------------------------------------------

    def _global_model(self) -> tuple[float, np.ndarray]:
        """The global model's alpha and its held-out SSE per (fine cell, fold), averaged
        over targets: shape (n_cells, n_folds)."""
        n_cells, n_folds = self.n_cell_fold.shape
        folds = cv.expert_folds(self.acc, list(range(n_cells)), n_folds)
        n_valid = folds["n"].astype(np.float64)
        empty = np.flatnonzero(self.n_total - n_valid < 1)
        if empty.size:
            raise ValueError(
                f"every spectrum is in fold {int(empty[0])}, so no model can be fitted on "
                "the other folds; assign folds with cv.assign_folds over the spectrum index"
            )
        scored = np.flatnonzero(n_valid >= 1)
        alpha = self.path[-1]
        if self.grid is not None:
            curves = np.full((n_folds, self.path.size, folds["mean_y"].shape[1]), np.nan)
            for f in scored:
                curves[f] = self._fold_curve(folds, int(f))
            alpha = self.path[_chosen_index(curves, n_valid, self.grid.size)]
        sse = np.zeros((n_cells, n_folds))
        for f in scored:
            coef, intercept = _ridge(_train_stats(folds, int(f)), alpha, self.standardize)
            self.solves += 1
            for c in range(n_cells):
                sse[c, f] = _predictor_sse(coef, intercept, self.acc, c * n_folds + f).mean()
        return float(alpha), sse

    # one product cell ----------------------------------------------------------------------

    def _fold_curve(self, folds: dict, fold: int) -> np.ndarray:
        """Held-out SSE of one fold over the path, shape (n_path, n_targets): the whole
        path from one eigendecomposition with a grid, one Cholesky solve without."""
        self.solves += 1
        if self.grid is not None:
            return cv.fold_sse_task(folds, fold, self.path, self.standardize)[0]
        coef, intercept = _ridge(_train_stats(folds, fold), self.path[0], self.standardize)
        return _predictor_sse(coef, intercept, folds, fold)[None, :]

    def sse(self, rect: Rect) -> float:
        """The held-out SSE (summed over folds, averaged over targets) of a product cell."""
        if rect not in self.records:
            self.records[rect] = self._evaluate(rect)
        return self.records[rect][0]

    def _evaluate(self, rect: Rect) -> tuple[float, float, float, bool]:
        """``(sse, n, alpha, fallback)`` of a product cell."""
        members = _rect_cells(rect, self.shape)
        n_valid = self.n_cell_fold[members].sum(axis=0)
        n = float(n_valid.sum())
        global_sse = self.global_sse[members].sum(axis=0)
        if n < self.min_spectra:
            return float(global_sse.sum()), n, self.global_alpha, True
        folds = self._pooled(rect, members)
        curves = np.full((self.n_folds, self.path.size, folds["mean_y"].shape[1]), np.nan)
        trained = (n_valid > 0) & (n - n_valid >= 1)
        for f in np.flatnonzero(trained):
            curves[f] = self._fold_curve(folds, int(f))
        index = 0 if self.grid is None else _chosen_index(curves, n_valid, self.grid.size)
        per_fold = np.where(trained, np.nan_to_num(curves[:, index].mean(axis=1)), global_sse)
        per_fold[n_valid == 0] = 0.0
        return float(per_fold.sum()), n, float(self.path[index]), False

    def _pooled(self, rect: Rect, members: np.ndarray) -> dict:
        """Per-fold statistics of a product cell: the last pooled cell extended in place
        when ``rect`` grows it along one key, else merged afresh from the fine slots."""
        axis = _extension_axis(self._running[0], rect) if self._running else None
        if axis is None:
            self._running = None  # dropped first: one cell's statistics in memory at a time
            folds = cv.expert_folds(self.acc, members.tolist(), self.n_folds)
        else:
            old, folds = self._running
            slab = tuple(
                (old[k][1] + 1, rect[k][1]) if k == axis else rect[k] for k in range(len(rect))
            )
            self._merge_cells(folds, _rect_cells(slab, self.shape))
        self._running = (rect, folds)
        return folds

    def _merge_cells(self, folds: dict, members: np.ndarray) -> None:
        acc, n_folds = self.acc, self.n_folds
        for c in members:
            for f in range(n_folds):
                s = int(c) * n_folds + f
                stats.merge_into(
                    folds,
                    f,
                    acc["n"][s],
                    acc["mean_x"][s],
                    acc["mean_y"][s],
                    acc["sxx"][s],
                    acc["sxy"][s],
                    acc["syy"][s],
                )

    def tables(self) -> dict[str, np.ndarray]:
        """The cached records as dense tables over (first, last) per key."""
        dims = tuple(k for k in self.shape for _ in range(2))
        out = {
            "table_sse": np.full(dims, np.nan),
            "table_n": np.full(dims, np.nan),
            "table_alpha": np.full(dims, np.nan),
            "table_fallback": np.zeros(dims, dtype=bool),
        }
        for rect, record in self.records.items():
            index = tuple(i for run in rect for i in run)
            for name, value in zip(("sse", "n", "alpha", "fallback"), record):
                out[f"table_{name}"][index] = value
        return out


def _rect_cells(rect: Rect, shape: tuple[int, ...]) -> np.ndarray:
    """Fine cell indices (ascending) of the product of runs ``rect``."""
    grids = np.meshgrid(*[np.arange(a, b + 1) for a, b in rect], indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], shape)


def _extension_axis(old: Rect, new: Rect) -> int | None:
    """The key along which ``new`` extends ``old`` past its last bin, all else equal."""
    differ = [k for k in range(len(new)) if old[k] != new[k]]
    if len(differ) != 1:
        return None
    k = differ[0]
    return k if old[k][0] == new[k][0] and new[k][1] > old[k][1] else None


# -- the search ------------------------------------------------------------------------------


def _needed_runs(n_fine: int, n_bins: int) -> Iterator[tuple[int, int]]:
    """Runs ``(i, j)`` that occur in a partition into at most ``n_bins`` bins, in
    start-major order (so each extends the one before)."""
    for i in range(n_fine):
        for j in range(i, n_fine):
            if 1 + (i > 0) + (j < n_fine - 1) <= n_bins:
                yield i, j


def _best_partitions(table: np.ndarray, n_bins: int) -> list[tuple[float, list[int]]]:
    """Exact dynamic programme over adjacent runs of one key.

    Parameters
    ----------
    table : ndarray of shape (K, K)
        ``table[i, j]`` cost of the run ``i ... j`` (only runs of
        :func:`_needed_runs` are read).
    n_bins : int

    Returns
    -------
    list of (cost, cuts), entry ``b - 1`` the best partition into ``b`` bins.
    """
    k = table.shape[0]
    # prefix[b - 1, j]: best cost of bins 0 ... j (j < K - 1) in b runs; start[...] its last run
    prefix = np.full((max(n_bins - 1, 1), k), np.inf)
    start = np.zeros((max(n_bins - 1, 1), k), dtype=np.int64)
    for b in range(1, n_bins):
        for j in range(b - 1, k - 1):
            if b == 1:
                prefix[0, j] = table[0, j]
                continue
            i = np.arange(b - 1, j + 1)
            total = prefix[b - 2, i - 1] + table[i, j]
            best = int(np.argmin(total))
            prefix[b - 1, j], start[b - 1, j] = total[best], i[best]
    out = [(float(table[0, k - 1]), [])]
    for b in range(2, n_bins + 1):
        i = np.arange(b - 1, k)
        total = prefix[b - 2, i - 1] + table[i, k - 1]
        best = int(np.argmin(total))
        cuts, j, run = [int(i[best])], int(i[best]) - 1, b - 2
        while run > 0:
            cuts.append(int(start[run, j]))
            j, run = cuts[-1] - 1, run - 1
        out.append((float(total[best]), sorted(cuts)))
    return out


def _key_table(costs: _CellCosts, axis: int, others: list[list[tuple[int, int]]], bins: int):
    """Cost table ``(K, K)`` of the runs of key ``axis``, the other keys' coarse runs
    ``others`` fixed: each run's cost summed over the other keys' coarse cells."""
    k = costs.shape[axis]
    table = np.full((k, k), np.nan)
    needed = list(_needed_runs(k, bins))
    for i, j in needed:
        table[i, j] = 0.0
    for rest in itertools.product(*others):
        for i, j in needed:
            rect = (*rest[:axis], (i, j), *rest[axis:])
            table[i, j] += costs.sse(rect)
    return table


def _compositions(n_fine: int, n_bins: int) -> Iterator[list[int]]:
    """Every cut list of ``n_fine`` bins into ``1 ... n_bins`` runs."""
    for b in range(1, n_bins + 1):
        for cuts in itertools.combinations(range(1, n_fine), b - 1):
            yield list(cuts)


def _record(found: dict, cuts: list[list[int]], cost: float) -> None:
    bins = tuple(len(c) + 1 for c in cuts)
    if bins not in found or cost < found[bins][0]:
        found[bins] = (cost, [list(c) for c in cuts])


def _exact_search(costs: _CellCosts, bins: tuple[int, ...]) -> dict:
    """Best (cost, cuts) for every bin counts ``<= bins``: every partition of keys
    2 ... n, the dynamic programme over key 1 for each."""
    found: dict = {}
    shape = costs.shape
    for rest in itertools.product(*[_compositions(k, b) for k, b in zip(shape[1:], bins[1:])]):
        others = [runs_of(c, k) for c, k in zip(rest, shape[1:])]
        table = _key_table(costs, 0, others, bins[0])
        for cost, cuts in _best_partitions(table, bins[0]):
            _record(found, [cuts, *rest], cost)
    return found


def _even_cuts(n_fine: int, n_bins: int) -> list[int]:
    return [b * n_fine // n_bins for b in range(1, n_bins)]


def _coordinate_search(costs: _CellCosts, bins: tuple[int, ...], max_sweeps: int) -> dict:
    """Approximate search: re-optimise one key's cuts at a time until a sweep changes
    nothing. Returns the (cost, cuts) found per bin counts visited."""
    shape = costs.shape
    cuts = [_even_cuts(k, b) for k, b in zip(shape, bins)]
    current = _partition_sse(costs, cuts)
    found: dict = {}
    _record(found, cuts, current)
    for _ in range(max(int(max_sweeps), 1)):
        changed = False
        for axis in range(len(shape)):
            others = [runs_of(c, k) for n, (c, k) in enumerate(zip(cuts, shape)) if n != axis]
            table = _key_table(costs, axis, others, bins[axis])
            options = _best_partitions(table, bins[axis])
            for cost, key_cuts in options:
                _record(found, [*cuts[:axis], key_cuts, *cuts[axis + 1 :]], cost)
            cost, key_cuts = options[-1]
            if cost < current - _IMPROVEMENT * abs(current):
                cuts[axis], current, changed = key_cuts, cost, True
        if not changed:
            break
    found[bins] = (current, [list(c) for c in cuts])
    return found


def _partition_sse(costs: _CellCosts, cuts: list[list[int]]) -> float:
    runs = [runs_of(c, k) for c, k in zip(cuts, costs.shape)]
    return float(sum(costs.sse(rect) for rect in itertools.product(*runs)))


def _coarse_records(costs: _CellCosts, cuts: list[list[int]]) -> dict[str, np.ndarray]:
    """Per coarse cell (C order) of a partition: ``sse``, ``n``, ``alpha``, ``fallback``."""
    runs = [runs_of(c, k) for c, k in zip(cuts, costs.shape)]
    rects = list(itertools.product(*runs))
    for rect in rects:
        costs.sse(rect)
    records = [costs.records[rect] for rect in rects]
    return {
        "sse": np.array([r[0] for r in records]),
        "n": np.array([r[1] for r in records]),
        "alpha": np.array([r[2] for r in records]),
        "fallback": np.array([r[3] for r in records], dtype=bool),
    }


def _errors_array(found: dict, bins: tuple[int, ...], n_total: float) -> np.ndarray:
    out = np.full(bins, np.nan)
    for b, (cost, _) in found.items():
        out[tuple(x - 1 for x in b)] = cost / n_total
    return out
