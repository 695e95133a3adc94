"""The Dask graph of the fit: fold chunks of spectra into per-bin statistics.

This is the only module that builds the reduction graph. The chunks are split
into ``partitions`` contiguous runs; each run is a chain of fold tasks. A fold
task takes the run's accumulator and one chunk, computes the chunk's bad
pixels and observed SNR, routes its spectra to bins and folds them in. So a
worker holds one accumulator and about one chunk, however many spectra
there are, and each chunk is read once.

Chunks come either from a Zarr store, read by the fold task itself
(:class:`snr_moe_dask.rows.StoreRows`, so data never wait in memory or travel
between workers), or from dask arrays, as block dependencies.

The partition accumulators are merged pairwise in a fixed order, so a given
graph gives bit-identical results whichever worker runs which task.
Everything stays in the task graph, so Dask can recompute a lost piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dask
import numpy as np
from dask.base import tokenize

from . import stats
from .cv import assign_folds
from .quality import quality_features
from .rows import StoreRows
from .snr import check_no_bad_pixels, find_bad_pixels, snr_statistics

if TYPE_CHECKING:  # workers import this module for its tasks: keep dask.array out
    import dask.array as da


@dataclass(frozen=True)
class ReduceSpec:
    """What a fold needs to know besides the data."""

    edges: tuple[float, ...]
    routing: str
    max_bad_fraction: float
    precision: str
    strict: bool = False
    n_folds: int = 1
    cv_seed: int = 0
    gate: str = ""  # the gate's feature set, "" for no gate
    buffer_mb: float = 0.0  # memory for rows waiting for their slot's product (stats.fold_chunk)


def fold_arrays(
    acc, index: int, flux, error, mask, y, true_snr, start: int, spec: ReduceSpec, last=True
):
    """Fold one chunk (spectra ``start``...) into ``acc`` and record its SNR (graph task).

    ``last`` marks the last chunk of a fold chain, after which ``acc`` is complete.
    """
    if spec.strict:
        check_no_bad_pixels(flux, error, mask, start)
    bad = find_bad_pixels(flux, error, mask)
    snr, snr_mean = snr_statistics(flux, error, bad, mean=spec.gate == "snr")
    route = snr if spec.routing == "observed" else np.asarray(true_snr, dtype=np.float64)
    folds = None
    if spec.n_folds > 1:
        folds = assign_folds(start + np.arange(len(flux)), spec.n_folds, spec.cv_seed)
    acc = stats.fold_chunk(
        acc,
        flux,
        np.asarray(y, dtype=np.float64).reshape(len(flux), -1),
        bad,
        route,
        edges=list(spec.edges),
        max_bad_fraction=spec.max_bad_fraction,
        precision=spec.precision,
        folds=folds,
        n_folds=spec.n_folds,
        buffer_rows=stats.buffer_rows(
            spec.buffer_mb, (len(spec.edges) + 1) * spec.n_folds, flux.shape[1], spec.precision
        ),
        flush=last,
    )
    acc.setdefault("snr", {})[index] = snr
    if spec.routing != "observed":
        acc.setdefault("route_snr", {})[index] = route
    if spec.gate:
        acc.setdefault("features", {})[index] = quality_features(
            spec.gate, flux, error, bad, snr, snr_mean
        )
        acc.setdefault("target", {})[index] = np.asarray(y, np.float64).reshape(len(flux), -1)[:, 0]
    return acc


def fold_rows(acc, index: int, rows: StoreRows, spec: ReduceSpec, last=True):
    """Read a chunk from its store and fold it into ``acc`` (graph task)."""
    d = rows.read()
    acc = fold_arrays(
        acc,
        index,
        d["flux"],
        d["error"],
        d.get("mask"),
        d["y"],
        d.get("snr"),
        rows.start,
        spec,
        last,
    )
    acc.setdefault("digest", {})[index] = d["digest"]  # what was read, for resume and evaluate
    return acc


_PER_CHUNK = ("snr", "route_snr", "features", "target", "digest")


def merge_partials(a: dict, b: dict) -> dict:
    """Merge accumulator ``b`` into ``a``, with the per-chunk SNRs of both (graph task)."""
    per_chunk = {key: {**a.pop(key, {}), **b.get(key, {})} for key in _PER_CHUNK}
    a = stats.merge_stats(a, b)
    a.update((k, v) for k, v in per_chunk.items() if v)
    return a


def split_partitions(n_chunks: int, partitions: int) -> list[range]:
    """Split chunk indices into at most ``partitions`` contiguous, near-equal runs."""
    partitions = max(1, min(partitions, n_chunks))
    bounds = np.linspace(0, n_chunks, partitions + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def store_chunks(path: str, row_chunks, targets, *, with_snr: bool, with_mask: bool) -> list:
    """Per-chunk fold inputs that read a Zarr store inside the fold task."""
    return [
        (fold_rows, (StoreRows(path, a, b, tuple(targets), with_snr, with_mask),))
        for a, b in row_chunks
    ]


def array_chunks(flux: da.Array, error: da.Array, y: da.Array, true_snr=None, mask=None) -> list:
    """Per-chunk fold inputs taken from dask arrays (block dependencies)."""
    flux = flux.rechunk({1: -1})
    rows = flux.chunks[0]

    def blocks(arr, two_d):
        if arr is None:
            return [None] * len(rows)
        arr = arr.rechunk((rows, -1) if two_d else (rows,))
        return list(arr.to_delayed().ravel())

    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).tolist()
    parts = zip(
        blocks(flux, True),
        blocks(error, True),
        blocks(mask, True),
        blocks(y, True),
        blocks(true_snr, False),
        starts,
    )
    return [(fold_arrays, tuple(p)) for p in parts]


def build_fit_graph(
    chunks: list,
    *,
    spec: ReduceSpec,
    partitions: int,
    checkpoint: dict | None = None,
):
    """Build the graph of one pass: per-partition fold chains, then a pairwise merge.

    Parameters
    ----------
    chunks : list of (task function, inputs)
        From :func:`store_chunks` or :func:`array_chunks`.
    spec : ReduceSpec
    partitions : int
        Number of fold chains.
    checkpoint : dict, optional
        ``directory``, ``every`` (chunks between saves) and ``done`` (partition
        to the last chunk its checkpoint holds, from
        :func:`snr_moe_dask.checkpoint.prepare`). Each chain saves its
        accumulator every ``every`` chunks and at its end; a chain with a
        checkpoint starts from it and folds only the chunks after it.

    Returns
    -------
    total : dask.delayed.Delayed
        The merged accumulator (see :mod:`snr_moe_dask.stats`); its ``snr``
        entry maps chunk index to the chunk's observed SNR.
    partials : list of Delayed
        Each partition's accumulator, in order.
    folded : int
        Chunks this graph folds (fewer than ``len(chunks)`` when resuming).
    """
    from . import checkpoint as ckpt

    token = tokenize([(f.__name__, args) for f, args in chunks], spec, partitions)
    partials, folded = [], 0
    for p, run in enumerate(split_partitions(len(chunks), partitions)):
        acc = None
        if checkpoint is not None:
            path = str(ckpt.partition_path(checkpoint["directory"], p))
            last = checkpoint["done"].get(p)
            if last is not None:
                acc = dask.delayed(ckpt.resume_task, pure=False)(
                    path, dask_key_name=f"resume-{token}-{p}"
                )
                run = range(last + 1, run.stop)
        for i in run:
            func, args = chunks[i]
            acc = dask.delayed(func, pure=True)(
                acc, i, *args, spec, i == run.stop - 1, dask_key_name=f"fold-{token}-{p}-{i}"
            )
            folded += 1
            save_now = (i + 1 - run.start) % checkpoint["every"] == 0 if checkpoint else False
            if checkpoint is not None and (save_now or i == run.stop - 1):
                acc = dask.delayed(ckpt.checkpoint_task, pure=False)(
                    acc, path, i, dask_key_name=f"checkpoint-{token}-{p}-{i}"
                )
        partials.append(acc)
    return merge_tree(partials, token), partials, folded


def chain_layout(n_chunks: int, partitions: int) -> list[list[int]]:
    """The chunks of each fold chain, as recorded in a checkpoint."""
    return [[r.start, r.stop] for r in split_partitions(n_chunks, partitions)]


def merge_tree(partials: list, token: str):
    """Merge accumulators pairwise, level by level, in a fixed order."""
    return pairwise_tree(partials, merge_partials, f"merge-{token}")


def pairwise_tree(values: list, func, name: str):
    """Combine delayed values with ``func(a, b)`` pairwise, level by level.

    The pairing depends only on the order of ``values``, so the result does
    not depend on which worker runs which task.
    """
    level, depth = list(values), 0
    while len(level) > 1:
        merged = [
            dask.delayed(func, pure=True)(a, b, dask_key_name=f"{name}-{depth}-{j}")
            for j, (a, b) in enumerate(zip(level[::2], level[1::2]))
        ]
        if len(level) % 2:
            merged.append(level[-1])
        level, depth = merged, depth + 1
    return level[0]


def gather(acc: dict, key: str) -> np.ndarray:
    """A per-spectrum record, in spectrum order, from a merged accumulator: the
    observed ``"snr"``, the routing ``"route_snr"`` (oracle routing only), or the
    gate's ``"features"`` and ``"target"``. Empty when not recorded."""
    parts = acc.get(key, {})
    return np.concatenate([parts[i] for i in sorted(parts)]) if parts else np.zeros(0)
