"""Runs of adjacent fine bins, and the exact dynamic programme over them (numpy kernels
for the edge search of :mod:`snr_moe_dask.kernels.edges`).

A partition of one key's ``K`` fine bins into ``B`` coarse bins is ``B - 1``
cuts (:mod:`snr_moe_dask.kernels.cells`); each coarse bin is a *run*
``(first, last)`` of adjacent fine bins, inclusive.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from . import cells


def runs_of(cuts: Sequence[int], n_fine: int) -> list[tuple[int, int]]:
    """The runs (first, last fine bin, inclusive) that ``cuts`` make of ``n_fine`` bins."""
    bounds = [0, *cells.check_cuts(cuts, n_fine), n_fine]
    return [(a, b - 1) for a, b in zip(bounds[:-1], bounds[1:])]


def n_runs(n_fine: int, n_bins: int) -> int:
    """``R(K, B)``: how many runs of ``K`` fine bins occur in a partition into ``<= B`` bins."""
    return sum(1 for _ in needed_runs(n_fine, n_bins))


def needed_runs(n_fine: int, n_bins: int) -> Iterator[tuple[int, int]]:
    """Runs ``(i, j)`` that occur in a partition into at most ``n_bins`` bins, in
    start-major order (so each extends the one before)."""
    for i in range(n_fine):
        for j in range(i, n_fine):
            if 1 + (i > 0) + (j < n_fine - 1) <= n_bins:
                yield i, j


def best_partitions(table: np.ndarray, n_bins: int) -> list[tuple[float, list[int]]]:
    """Exact dynamic programme over adjacent runs of one key.

    Parameters
    ----------
    table : ndarray of shape (K, K)
        ``table[i, j]`` cost of the run ``i ... j`` (only runs of
        :func:`needed_runs` are read).
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


def compositions(n_fine: int, n_bins: int) -> Iterator[list[int]]:
    """Every cut list of ``n_fine`` bins into ``1 ... n_bins`` runs."""
    for b in range(1, n_bins + 1):
        for cuts in itertools.combinations(range(1, n_fine), b - 1):
            yield list(cuts)


def even_cuts(n_fine: int, n_bins: int) -> list[int]:
    return [b * n_fine // n_bins for b in range(1, n_bins)]
