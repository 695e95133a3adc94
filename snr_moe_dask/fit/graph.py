"""The Dask graph of the fit: fold chains over the chunks, a pairwise merge, then the
solve (and the cross-validation and gate tasks that feed it).

This is the only module that builds the fit's graph. The chunks are split into
``partitions`` contiguous runs; each run is a chain of fold tasks
(:func:`snr_moe_dask.fit.tasks.fold`). A fold task takes the chain's
accumulator and one chunk, and folds it in. So a worker holds one accumulator
and about one chunk, however many spectra there are, and each chunk is read
once.

The partition accumulators are merged pairwise in a fixed order, so a given
graph gives bit-identical results whichever worker runs which task. Large
(packed) accumulators are merged a group of slots at a time
(:func:`merge_tree`), so no worker holds two of them at once.
Everything stays in the task graph, so Dask can recompute a lost piece.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np

from ..graph import pairwise_tree, run_graph
from ..inputs import Source
from ..kernels import packed
from ..kernels.calibration import sample_chunks
from ..kernels.cv import expert_folds, fold_sse_task, gcv_task
from ..store import checkpoint as ckpt
from ..store.fingerprint import is_checksummed, store_fingerprint
from .calibrate import (
    calibration_chunk,
    expert_system,
    factor_expert,
    fit_calibration,
)
from .gating import train_gate
from .refine import merge_refine, refine_chunk, refine_expert, refine_inputs, refine_solution
from .settings import FitSettings
from .solve import assemble_solution, choose_cells, expert_piece, solve_expert, solve_plan
from .tasks import chunk_records, fold, merge_partials, merge_piece, pool_experts, slot_piece


@dataclass
class FitRecord:
    """What only the fit that just ran knows (a loaded model has none).

    Attributes
    ----------
    snr : ndarray of shape (n_spectra,)
        The observed SNR of every training spectrum.
    route_snr : ndarray of shape (n_spectra,)
        The SNR that routed it (the true SNR for oracle routing).
    chunks, folded, restored : int
        Chunks in the store, folded by this run, restored from checkpoints.
    checkpoint : str
        The checkpoint directory, or "".
    """

    snr: np.ndarray
    route_snr: np.ndarray
    chunks: int
    folded: int
    restored: int
    checkpoint: str = ""


def run_fit(
    source: Source,
    settings: FitSettings,
    partitions: int,
    *,
    checkpoint=None,
    resume: bool = False,
    overwrite_checkpoint: bool = False,
) -> tuple[dict, dict | None, FitRecord]:
    """Run the whole fit on the current cluster: the pass, then the solve.

    Returns :func:`~snr_moe_dask.fit.solve.assemble_solution`'s result (with
    ``pass_seconds``), the trained gate (or None) and the :class:`FitRecord`.
    """
    t0 = time.perf_counter()
    plan = None
    if checkpoint is not None:
        plan = prepare_checkpoint(
            checkpoint, source, settings, partitions, resume, overwrite_checkpoint
        )
    total, folded = build_chains(source, settings, partitions, plan)
    choice = None
    if settings.search:
        choice = dask.delayed(choose_cells, pure=True)(total, settings)
    cv = None if settings.search else cv_graph(total, settings)
    pooled = dask.delayed(pool_experts, pure=True)(total, settings, choice)
    pieces, solved = solve_graph(total, pooled, settings, cv, choice)
    if settings.refine:
        solved = refinement_graph(pieces, solved, source, settings, total)
    gate = dask.delayed(train_gate, pure=True)(total, settings, choice) if settings.gate else None
    tasks = [solved, calibration_graph(source, total, pieces, solved, gate, settings)]
    if gate is not None:
        tasks.append(gate)
    solved, calibration, *gate = run_graph(
        *tasks, label="fit: one pass over the spectra, then the solve"
    )
    solved["calibration"] = calibration
    refine = solved.get("refine_seconds", {}).get("solve", 0.0)
    solved["pass_seconds"] = time.perf_counter() - t0 - solved["seconds"] - refine
    record = FitRecord(
        solved.pop("snr"),
        solved.pop("route_snr"),
        len(source.chunks),
        folded,
        len(source.chunks) - folded,
        str(checkpoint) if checkpoint is not None else "",
    )
    return solved, (gate[0] if gate else None), record


def solve_graph(total, pooled, settings: FitSettings, cv, choice):
    """The solve: one plan task, then per expert a task taking its statistics out of
    the pooled ones (:func:`~snr_moe_dask.fit.solve.expert_piece`) and a task
    solving it (:func:`~snr_moe_dask.fit.solve.solve_expert`), then one task
    assembling the solution where the merged accumulator is.

    The experts' solves depend only on their own statistics, so the scheduler
    spreads them over the workers. With a search the experts are chosen by it:
    at most one per fine cell, so the graph has a task for each (a task beyond
    the chosen experts returns None).

    Returns
    -------
    pieces : list of dask.delayed.Delayed
        Each expert's statistics, one slot (for the refinement and the calibration).
    solved : dask.delayed.Delayed
        :func:`~snr_moe_dask.fit.solve.assemble_solution`'s result.
    """
    token = dask.base.tokenize(total, pooled, settings, cv, choice)
    plan = dask.delayed(solve_plan, pure=True)(
        total, settings, cv, choice, pooled, dask_key_name=f"plan-{token}"
    )
    pieces, parts = [], []
    for e in range(1 + settings.n_bins):
        piece = dask.delayed(expert_piece, pure=True)(
            pooled, e, dask_key_name=f"expert_piece-{token}-{e}"
        )
        pieces.append(piece)
        parts.append(
            dask.delayed(solve_expert, pure=True)(
                piece, e, plan, settings, dask_key_name=f"solve_expert-{token}-{e}"
            )
        )
    solved = dask.delayed(assemble_solution, pure=True)(
        total, plan, parts, choice, dask_key_name=f"solve_experts-{token}"
    )
    return pieces, solved


def calibration_graph(source: Source, total, pieces, solve, gate, settings: FitSettings):
    """The error model (a delayed dict, or None without calibration): one factor task
    per expert, one task per sampled training chunk (read again), one finalize.

    The chunks are whole chunks evenly spread over the store, about
    ``settings.calibration`` spectra (:func:`~snr_moe_dask.kernels.calibration.sample_chunks`).
    With a gate (``gate``, the delayed :func:`~snr_moe_dask.fit.gating.train_gate`),
    the chunk tasks also give the soft mixture's held-out errors.
    """
    chunks = sample_chunks(list(source.rows), settings.calibration)
    if not chunks:
        return None
    token = dask.base.tokenize(source.token(), settings, chunks)
    system = dask.delayed(expert_system, pure=True)(solve, dask_key_name=f"system-{token}")
    records = dask.delayed(chunk_records, pure=True)(
        total, chunks, dask_key_name=f"records-{token}"
    )
    factors = [
        dask.delayed(factor_expert, pure=True)(
            piece, system, settings, e, dask_key_name=f"factor-{token}-{e}"
        )
        for e, piece in enumerate(pieces)
    ]
    parts = [
        dask.delayed(calibration_chunk, pure=True)(
            source.chunks[i],
            i,
            records,
            system,
            factors,
            gate,
            settings,
            dask_key_name=f"calibrate-{token}-{i}",
        )
        for i in chunks
    ]
    return dask.delayed(fit_calibration, pure=True)(parts, factors, settings, chunks)


def default_partitions() -> int:
    """One fold chain per worker thread of the current cluster (or per core)."""
    try:
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):
        import os

        return os.cpu_count() or 1


REFINE_ROUNDS = 3  # at most; a round no expert needs reads nothing


def refinement_graph(pieces, solved, source: Source, settings: FitSettings, total):
    """Refinement rounds, each one more read of every chunk: each expert's exact
    residual sums, merged pairwise, then one refinement step per expert (in
    parallel, each from its own statistics: ``pieces``, from :func:`solve_graph`)
    and one task putting them together. A round after the first
    reads the chunks only if some expert's estimated error is still above the
    tolerance (ill-conditioned experts). The chunk tasks take each spectrum's
    cell from the pass (``total``'s records)."""
    token = dask.base.tokenize(source.token(), settings, "refine")
    records = dask.delayed(chunk_records, pure=True)(total, dask_key_name=f"records-{token}")
    for round_ in range(REFINE_ROUNDS):
        name = f"{token}-{round_}"
        coefs = dask.delayed(refine_inputs, pure=True)(solved, dask_key_name=f"coefs-{name}")
        parts = [
            dask.delayed(refine_chunk, pure=True)(
                chunk, i, records, coefs, settings, dask_key_name=f"refine-{name}-{i}"
            )
            for i, chunk in enumerate(source.chunks)
        ]
        sums = pairwise_tree(parts, merge_refine, f"merge-refine-{name}")
        steps = [
            dask.delayed(refine_expert, pure=True)(
                piece, coefs, sums, settings, e, dask_key_name=f"refine_expert-{name}-{e}"
            )
            for e, piece in enumerate(pieces)
        ]
        solved = dask.delayed(refine_solution, pure=True)(
            solved, steps, sums, dask_key_name=f"refined-{name}"
        )
    return solved


def split_partitions(n_chunks: int, partitions: int) -> list[range]:
    """Split chunk indices into at most ``partitions`` contiguous, near-equal runs."""
    partitions = max(1, min(partitions, n_chunks))
    bounds = np.linspace(0, n_chunks, partitions + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def chain_layout(n_chunks: int, partitions: int) -> list[list[int]]:
    """The chunks of each fold chain, as recorded in a checkpoint."""
    return [[r.start, r.stop] for r in split_partitions(n_chunks, partitions)]


def build_chains(source: Source, settings: FitSettings, partitions: int, plan: dict | None = None):
    """The graph of one pass: per-partition fold chains, then a pairwise merge.

    Parameters
    ----------
    source : Source
    settings : FitSettings
    partitions : int
        Number of fold chains.
    plan : dict, optional
        Checkpointing (:func:`prepare_checkpoint`): ``directory``, ``every``
        (chunks between saves) and ``done`` (partition to the last chunk its
        checkpoint holds). Each chain saves its accumulator every ``every``
        chunks and at its end; a chain with a checkpoint starts from it and
        folds only the chunks after it.

    Returns
    -------
    total : dask.delayed.Delayed
        The merged accumulator (see :mod:`snr_moe_dask.kernels.stats`).
    folded : int
        Chunks this graph folds (fewer than all when resuming).
    """
    token = dask.base.tokenize(source.token(), settings, partitions)
    partials, folded = [], 0
    for p, run in enumerate(split_partitions(len(source.chunks), partitions)):
        acc, path = None, None
        if plan is not None:
            path = str(ckpt.partition_path(plan["directory"], p))
            last = plan["done"].get(p)
            if last is not None:
                acc = dask.delayed(ckpt.resume_task, pure=False)(
                    path, dask_key_name=f"resume-{token}-{p}"
                )
                run = range(last + 1, run.stop)
        for i in run:
            end = i == run.stop - 1
            after = None if end or not source.path else source.chunks[i + 1]
            acc = dask.delayed(fold, pure=True)(
                acc,
                i,
                source.chunks[i],
                settings,
                end,
                after,
                dask_key_name=f"fold-{token}-{p}-{i}",
            )
            folded += 1
            if plan is not None and (end or (i + 1 - run.start) % plan["every"] == 0):
                acc = dask.delayed(ckpt.checkpoint_task, pure=False)(
                    acc, path, i, dask_key_name=f"checkpoint-{token}-{p}-{i}"
                )
        partials.append(acc)
    return merge_tree(partials, settings, source.n_pixels, f"merge-{token}"), folded


PIECE_BYTES = 1 << 28  # a packed merge moves about this much at a time


def merge_tree(partials: list, settings: FitSettings, n_pixels: int, name: str):
    """Merge the fold chains' accumulators pairwise, in a fixed order.

    Unpacked accumulators merge whole (:func:`~snr_moe_dask.fit.tasks.merge_partials`).
    A packed one (many large slots, see :func:`~snr_moe_dask.fit.settings.with_data`)
    is merged into the other a piece of about 256 MB at a time, each piece a
    task (:func:`~snr_moe_dask.fit.tasks.slot_piece`, then
    :func:`~snr_moe_dask.fit.tasks.merge_piece` in a chain): the merge runs
    where the whole accumulator is, and a worker holds one accumulator and a
    piece instead of two accumulators.
    """
    if not settings.packed:
        return pairwise_tree(partials, merge_partials, name)
    n_slots = settings.n_bins * settings.n_folds
    per_piece = max(1, PIECE_BYTES // (packed.packed_size(n_pixels) * 8))
    bounds = list(range(0, n_slots, per_piece)) + [n_slots]
    level, depth = list(partials), 0
    while len(level) > 1:
        merged = []
        for j, (a, b) in enumerate(zip(level[::2], level[1::2])):
            for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                key = f"{name}-{depth}-{j}-{g}"
                piece = dask.delayed(slot_piece, pure=True)(
                    b, lo, hi, g == 0, dask_key_name=f"piece-{key}"
                )
                a = dask.delayed(merge_piece, pure=True)(a, piece, dask_key_name=key)
            merged.append(a)
        if len(level) % 2:
            merged.append(level[-1])
        level, depth = merged, depth + 1
    return level[0]


def cv_graph(total, settings: FitSettings) -> list | None:
    """Per expert, one task pooling its statistics per fold, then one task per fold
    computing the held-out error over the alpha grid (one GCV task for GCV); None
    without cross-validation.

    The fold tasks depend only on their expert's pooled statistics (K x P²),
    not on the whole accumulator, so the scheduler spreads them over workers.
    """
    cv = settings.cv
    if not cv:
        return None
    alphas = np.array(cv.alphas)
    groups = [list(range(settings.n_bins))] + [[k] for k in range(settings.n_bins)]  # cells
    out = []
    for slots in groups:
        folds = dask.delayed(expert_folds, pure=True)(total, slots, cv.folds)
        if cv.method == "gcv":  # one eigendecomposition per expert
            out.append([dask.delayed(gcv_task, pure=True)(folds, alphas, settings.standardize)])
            continue
        out.append(
            [
                dask.delayed(fold_sse_task, pure=True)(folds, f, alphas, settings.standardize)
                for f in range(cv.folds)
            ]
        )
    return out


def prepare_checkpoint(
    directory, source: Source, settings: FitSettings, partitions: int, resume, overwrite
) -> dict:
    """Check or create the checkpoint directory of a fit; the plan for
    :func:`build_chains`."""
    if not source.path:
        raise ValueError(
            "checkpoints need a training store path: fit('train.zarr', checkpoint=...)"
        )
    meta = {
        "store": str(Path(source.path).resolve()),
        "fingerprint": source.fingerprint or store_fingerprint(source.path),
        **settings.pass_fields(),
        "chunks": [[c.start, c.stop] for c in source.chunks],
        "partitions": chain_layout(len(source.chunks), partitions),
    }
    done = ckpt.prepare(directory, meta, resume=resume, overwrite=overwrite)
    if done and not is_checksummed(source.path):
        # The fingerprint sees only metadata and sizes of unchecksummed chunks:
        # read the restored chunks again and compare what they hold.
        restored = [
            (p, i)
            for p, run in enumerate(split_partitions(len(source.chunks), partitions))
            if p in done
            for i in range(run.start, done[p] + 1)
        ]
        rows = [source.chunks[i] for _, i in restored]
        ckpt.verify_restored(directory, source.path, rows, restored)
    return {"directory": str(directory), "every": settings.checkpoint_every, "done": done}
