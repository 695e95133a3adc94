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

The rules mirror the fit (:func:`snr_moe_dask.fit.solve.solve_experts`):

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

A partition's held-out error is a sum over its coarse cells, so each product
cell's cost is computed once and cached, by
:class:`snr_moe_dask.kernels.edge_costs.CellCosts` (its docstring gives the
factorizations and the memory the search needs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from . import cells
from .edge_costs import CellCosts
from .runs import best_partitions, compositions, even_cuts, n_runs, needed_runs, runs_of

METHODS = ("exact", "coordinate")
_IMPROVEMENT = 1e-12  # relative: a coordinate step must beat the current error by more


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
        ``curves`` (with a grid): ``global`` and ``coarse`` (one per chosen cell,
        None for a fallback), each ``(sse, n_valid)``: held-out SSE of shape
        (n_folds, n_alphas, n_targets) and held-out spectra per fold, for the
        CV record of the experts.
    """
    shape, bins = _check_shape(fine_shape, n_bins)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    costs = CellCosts(acc, shape, n_folds, alpha, alphas, min_spectra, standardize)
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
        **({"curves": _chosen_curves(costs, chosen[1])} if alphas is not None else {}),
    }


def _chosen_curves(costs: CellCosts, cuts: list[list[int]]) -> dict:
    runs = [runs_of(c, k) for c, k in zip(cuts, costs.shape)]
    rects = itertools.product(*runs)
    return {"global": costs.global_curves, "coarse": [costs.curves.get(r) for r in rects]}


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
    costs = CellCosts(acc, shape, n_folds, alpha, alphas, min_spectra, standardize)
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


# -- the search ------------------------------------------------------------------------------


def _key_table(costs: CellCosts, axis: int, others: list[list[tuple[int, int]]], bins: int):
    """Cost table ``(K, K)`` of the runs of key ``axis``, the other keys' coarse runs
    ``others`` fixed: each run's cost summed over the other keys' coarse cells."""
    k = costs.shape[axis]
    table = np.full((k, k), np.nan)
    needed = list(needed_runs(k, bins))
    for i, j in needed:
        table[i, j] = 0.0
    for rest in itertools.product(*others):
        for i, j in needed:
            rect = (*rest[:axis], (i, j), *rest[axis:])
            table[i, j] += costs.sse(rect)
    return table


def _record(found: dict, cuts: list[list[int]], cost: float) -> None:
    bins = tuple(len(c) + 1 for c in cuts)
    if bins not in found or cost < found[bins][0]:
        found[bins] = (cost, [list(c) for c in cuts])


def _exact_search(costs: CellCosts, bins: tuple[int, ...]) -> dict:
    """Best (cost, cuts) for every bin counts ``<= bins``: every partition of keys
    2 ... n, the dynamic programme over key 1 for each."""
    found: dict = {}
    shape = costs.shape
    for rest in itertools.product(*[compositions(k, b) for k, b in zip(shape[1:], bins[1:])]):
        others = [runs_of(c, k) for c, k in zip(rest, shape[1:])]
        table = _key_table(costs, 0, others, bins[0])
        for cost, cuts in best_partitions(table, bins[0]):
            _record(found, [cuts, *rest], cost)
    return found


def _coordinate_search(costs: CellCosts, bins: tuple[int, ...], max_sweeps: int) -> dict:
    """Approximate search: re-optimise one key's cuts at a time until a sweep changes
    nothing. Returns the (cost, cuts) found per bin counts visited."""
    shape = costs.shape
    cuts = [even_cuts(k, b) for k, b in zip(shape, bins)]
    current = _partition_sse(costs, cuts)
    found: dict = {}
    _record(found, cuts, current)
    for _ in range(max(int(max_sweeps), 1)):
        changed = False
        for axis in range(len(shape)):
            others = [runs_of(c, k) for n, (c, k) in enumerate(zip(cuts, shape)) if n != axis]
            table = _key_table(costs, axis, others, bins[axis])
            options = best_partitions(table, bins[axis])
            for cost, key_cuts in options:
                _record(found, [*cuts[:axis], key_cuts, *cuts[axis + 1 :]], cost)
            cost, key_cuts = options[-1]
            if cost < current - _IMPROVEMENT * abs(current):
                cuts[axis], current, changed = key_cuts, cost, True
        if not changed:
            break
    found[bins] = (current, [list(c) for c in cuts])
    return found


def _partition_sse(costs: CellCosts, cuts: list[list[int]]) -> float:
    runs = [runs_of(c, k) for c, k in zip(cuts, costs.shape)]
    return float(sum(costs.sse(rect) for rect in itertools.product(*runs)))


def _coarse_records(costs: CellCosts, cuts: list[list[int]]) -> dict[str, np.ndarray]:
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
