"""The Dask graph of the fit: SNR per chunk, and a fold of chunks into per-bin statistics.

This is the only module that builds the reduction graph. The chunks are split
into ``partitions`` contiguous runs; each run is a chain of fold tasks, each
folding one chunk into the run's accumulator, so a worker holds one
accumulator and a couple of chunks however many spectra there are. The
partition accumulators are then merged pairwise in a fixed order, so a given
graph gives bit-identical results whichever worker runs which task. Everything
stays in the task graph, so Dask can recompute a lost piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from . import stats
from .snr import compute_snr, find_bad_pixels


@dataclass(frozen=True)
class ReduceSpec:
    """What a fold needs to know besides the data."""

    edges: tuple[float, ...]
    routing: str
    max_bad_fraction: float
    precision: str


def _bad(flux, error, mask):
    return find_bad_pixels(flux, error, mask)


def snr_block(flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Observed SNR of one block (blockwise kernel)."""
    return compute_snr(flux, error, _bad(flux, error, mask))


def fold_block(acc, flux, error, mask, y, route_snr, spec: ReduceSpec):
    """Fold one block into ``acc`` (graph task)."""
    y = y.reshape(len(y), -1)
    return stats.fold_chunk(
        acc,
        flux,
        y,
        _bad(flux, error, mask),
        route_snr,
        edges=list(spec.edges),
        max_bad_fraction=spec.max_bad_fraction,
        precision=spec.precision,
    )


def observed_snr(flux: da.Array, error: da.Array, mask: da.Array | None = None) -> da.Array:
    """Return the observed SNR per spectrum as a lazy dask array, shape (n_spectra,)."""
    args = (flux, error) if mask is None else (flux, error, mask)
    return da.map_blocks(snr_block, *args, drop_axis=1, dtype=np.float64)


def split_partitions(n_chunks: int, partitions: int) -> list[range]:
    """Split chunk indices into at most ``partitions`` contiguous, near-equal runs."""
    partitions = max(1, min(partitions, n_chunks))
    bounds = np.linspace(0, n_chunks, partitions + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def build_fit_graph(
    flux: da.Array,
    error: da.Array,
    y: da.Array,
    *,
    spec: ReduceSpec,
    partitions: int,
    true_snr: da.Array | None = None,
    mask: da.Array | None = None,
):
    """Build the graph of one pass: per-partition folds, then a pairwise merge.

    Parameters
    ----------
    flux, error : dask array of shape (n_spectra, n_pixels)
    y : dask array of shape (n_spectra, n_targets)
    spec : ReduceSpec
    partitions : int
        Number of fold chains.
    true_snr : dask array of shape (n_spectra,), optional
        Needed for ``oracle`` routing.
    mask : dask array of bool, shape (n_spectra, n_pixels), optional

    Returns
    -------
    total : dask.delayed.Delayed
        The merged accumulator (see :mod:`snr_moe_dask.stats`).
    partials : list of Delayed
        Each partition's accumulator, in order.
    snr : dask array of shape (n_spectra,)
        The observed SNR.
    """
    flux = flux.rechunk({1: -1})
    chunks = flux.chunks[0]
    error = error.rechunk((chunks, -1))
    y = y.rechunk((chunks, -1))
    mask = None if mask is None else mask.rechunk((chunks, -1))
    snr = observed_snr(flux, error, mask)
    route = snr if spec.routing == "observed" else true_snr.rechunk((chunks,))

    def blocks(arr):
        return None if arr is None else list(arr.to_delayed().ravel())

    fb, eb, yb, rb, mb = (blocks(a) for a in (flux, error, y, route, mask))
    token = tokenize(flux, error, y, route, mask, spec, partitions)
    partials = []
    for p, run in enumerate(split_partitions(len(chunks), partitions)):
        acc = None
        for i in run:
            acc = dask.delayed(fold_block, pure=True)(
                acc,
                fb[i],
                eb[i],
                None if mb is None else mb[i],
                yb[i],
                rb[i],
                spec,
                dask_key_name=f"fold-{token}-{p}-{i}",
            )
        partials.append(acc)
    return merge_tree(partials, token), partials, snr


def merge_tree(partials: list, token: str):
    """Merge accumulators pairwise, level by level, in a fixed order."""
    level = list(partials)
    depth = 0
    while len(level) > 1:
        merged = [
            dask.delayed(stats.merge_stats, pure=True)(
                a, b, dask_key_name=f"merge-{token}-{depth}-{j}"
            )
            for j, (a, b) in enumerate(zip(level[::2], level[1::2]))
        ]
        if len(level) % 2:
            merged.append(level[-1])
        level, depth = merged, depth + 1
    return level[0]
