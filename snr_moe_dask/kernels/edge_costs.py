"""The held-out error of product cells of fine bins, each computed once and cached
(numpy kernels), for the edge search of :mod:`snr_moe_dask.kernels.edges`.

A *product cell* is one run of adjacent fine bins per key (a :data:`Rect`).
Its cost is the held-out SSE, summed over folds and averaged over targets,
of the expert fitted on the other folds of its spectra, by the rules the
module docstring of :mod:`snr_moe_dask.kernels.edges` states.

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

(:func:`~snr_moe_dask.kernels.edges.count_solves`); one key with ``K = 16``, ``B >= 3`` and 5 folds
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

import math

import numpy as np

from . import cv, solve, stats

Rect = tuple[tuple[int, int], ...]  # inclusive (first, last) fine bin of each key


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


def _predictor_sse(coef: np.ndarray, intercept: np.ndarray, acc: dict, slot: int) -> np.ndarray:
    """Sum of squared errors of ``y = intercept + x coef`` on slot ``slot``'s spectra.

    From the slot's centred statistics: ``S_yy - 2 w^T S_xy + w^T S_xx w + n d^2``
    with ``d = ybar - intercept - xbar^T w``, per target (shape (n_targets,)).
    """
    n = float(acc["n"][slot])
    if n == 0:
        return np.zeros(coef.shape[1])
    sw = stats.gram_times(acc, slot, coef)
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


class CellCosts:
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
        # with a grid: per-fold held-out SSE over it, and held-out counts, per served cell
        self.curves: dict[Rect, tuple[np.ndarray, np.ndarray]] = {}
        self.global_curves: tuple[np.ndarray, np.ndarray] | None = None
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
            self.global_curves = (curves[:, : self.grid.size], n_valid)
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
        index = 0
        if self.grid is not None:
            index = _chosen_index(curves, n_valid, self.grid.size)
            self.curves[rect] = (curves[:, : self.grid.size], n_valid)
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
