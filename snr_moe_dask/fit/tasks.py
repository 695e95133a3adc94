"""The fit's pass tasks: fold a chunk into a chain's statistics (chunk), and merge two
chains' statistics (combine), whole or a group of slots at a time.

They run on workers and need only numpy, scipy and zarr, so a worker imports
neither xarray nor scikit-learn for them. The finalize tasks, which solve the
experts and train the gate from the merged statistics, are in
:mod:`snr_moe_dask.fit.solve` and :mod:`snr_moe_dask.fit.gating`.
"""

from __future__ import annotations

import numpy as np

from ..kernels import cells, stats
from ..kernels.cells import assign_cells
from ..kernels.cv import assign_folds
from ..kernels.gate_features import base_names
from ..kernels.snr import check_no_bad_pixels, find_bad_pixels, snr_statistics
from ..kernels.variables import spectrum_values
from .settings import FitSettings

# Per-chunk records an accumulator carries besides its statistics (chunk index -> array).
PER_CHUNK = (
    "snr",
    "route_snr",
    "cell",
    "features",
    "target",
    "sample_rows",
    "sample_flux",
    "digest",
    "n_bad",
)
COUNTS = ("bad_pixels", "excluded_bad", "excluded_label", "excluded_no_snr")


def fold(acc, index: int, chunk, settings: FitSettings, last: bool = True, after=None):
    """Read one chunk and fold it into ``acc`` (graph task).

    ``chunk`` is a :class:`~snr_moe_dask.store.rows.StoreRows` or an
    :class:`~snr_moe_dask.store.rows.ArrayChunk`; ``last`` marks the last chunk
    of a fold chain, after which ``acc`` is complete; ``after``, the chain's next
    chunk, is prefetched while this one is folded. Each spectrum goes to the
    cell of its keys' values (true or observed, by ``settings.routing``).
    Besides the statistics, ``acc`` records per chunk the observed SNR, the
    routing SNR (for oracle SNR keys), each spectrum's cell, the gate's
    features and target (and, for principal-component features, every
    ``gate_stride``-th spectrum's flux), and the digest of what was read.
    """
    d = chunk.read()
    if after is not None:
        after.prefetch()
    flux, error, mask, y = d["flux"], d["error"], d.get("mask"), d["y"]
    if settings.strict:
        check_no_bad_pixels(flux, error, mask, chunk.start)
    bad = find_bad_pixels(flux, error, mask)
    needed = settings.pass_variables
    snr, snr_mean = snr_statistics(flux, error, bad, mean="snr_mean" in needed)
    stored = {**d.get("variables", {}), "snr": d.get("snr")}
    values = spectrum_values(
        needed, flux=flux, error=error, bad=bad, snr=snr, snr_mean=snr_mean, stored=stored
    )
    cell = assign_cells([values[v] for v in settings.route_variables], settings.grid)
    folds = None
    if settings.n_folds > 1:
        folds = assign_folds(chunk.start + np.arange(len(flux)), settings.n_folds, settings.cv_seed)
    y = np.asarray(y, dtype=np.float64).reshape(len(flux), -1)
    n_slots = settings.n_bins * settings.n_folds
    acc = stats.fold_chunk(
        acc,
        flux,
        y,
        bad,
        cells=cell,
        n_cells=settings.n_bins,
        max_bad_fraction=settings.max_bad_fraction,
        precision=settings.products,
        folds=folds,
        n_folds=settings.n_folds,
        buffer_rows=stats.buffer_rows(
            settings.buffer_mb,
            n_slots,
            flux.shape[1],
            settings.products,
        ),
        flush=last,
        packed=settings.packed,
    )
    _record(acc, index, _records(d, settings, values, cell, snr, flux, bad, y, chunk.start))
    return acc


def _records(d, settings: FitSettings, values, cell, snr, flux, bad, y, start) -> dict:
    """The per-chunk records of :func:`fold`."""
    oracle_snr = settings.routing == "oracle" and settings.route_variables == ["snr"]
    records = {
        "snr": snr,
        "route_snr": values["snr"] if oracle_snr else None,
        "cell": cell.astype(np.int32),
        "digest": d["digest"],
        "n_bad": np.array(int(bad.sum())),  # none: a later read needs only flux
    }
    if settings.gate:
        names = base_names(settings.gate_items)
        records["features"] = np.column_stack([values[n] for n in names] or [np.zeros((len(y), 0))])
        records["target"] = y[:, 0]
    if settings.gate and settings.gate_stride:
        rows = np.flatnonzero((start + np.arange(len(flux))) % settings.gate_stride == 0)
        sample = flux[rows].astype(np.float32)
        sample[bad[rows]] = np.nan  # a bad pixel, imputed by the mean when projected
        records["sample_rows"], records["sample_flux"] = start + rows, sample
    return records


def chunk_records(acc: dict, chunks=None) -> dict:
    """What the pass recorded of each chunk that a later read of it needs (graph task:
    a small key the chunk tasks share): chunk index -> ``cell`` (one per spectrum,
    -1 for none), ``clean`` (the pass found not one bad pixel) and ``features`` (the
    gate's base features, or None). ``chunks``: those chunks only (default all)."""
    cells, n_bad, features = acc.get("cell", {}), acc.get("n_bad", {}), acc.get("features", {})
    return {
        i: {
            "cell": cells[i],
            "clean": i in n_bad and int(n_bad[i]) == 0,
            "features": features.get(i),
        }
        for i in (cells if chunks is None else chunks)
    }


def _record(acc: dict, index: int, records: dict) -> None:
    for key, value in records.items():
        if value is not None:
            acc.setdefault(key, {})[index] = value


def merge_partials(a: dict, b: dict) -> dict:
    """Merge accumulator ``b`` into ``a``, with the per-chunk records of both (graph task)."""
    per_chunk = {key: {**a.pop(key, {}), **b.get(key, {})} for key in PER_CHUNK}
    a = stats.merge_stats(a, b)
    a.update((k, v) for k, v in per_chunk.items() if v)
    return a


def slot_piece(acc: dict, start: int, stop: int, first: bool) -> dict:
    """Slots ``start ... stop - 1`` of an accumulator, as views (graph task); with
    ``first``, its counts and per-chunk records too.

    A large accumulator is merged into another a piece at a time
    (:func:`merge_piece`), so a worker holds one accumulator and one piece,
    never two accumulators.
    """
    piece = {key: acc[key][start:stop] for key in ("n", "mean_x", "mean_y", "sxx", "sxy", "syy")}
    piece["start"] = start
    if first:
        piece.update({key: acc[key] for key in COUNTS})
        piece.update({key: acc[key] for key in PER_CHUNK if key in acc})
    return piece


def merge_piece(acc: dict, piece: dict) -> dict:
    """Merge a :func:`slot_piece` of another accumulator into ``acc`` in place (graph task)."""
    start = piece["start"]
    for j in range(piece["n"].size):
        stats.merge_into(
            acc,
            start + j,
            piece["n"][j],
            piece["mean_x"][j],
            piece["mean_y"][j],
            piece["sxx"][j],
            piece["sxy"][j],
            piece["syy"][j],
        )
    for key in COUNTS:
        if key in piece:
            acc[key] = acc[key] + piece[key]
    for key in PER_CHUNK:
        if key in piece:
            acc[key] = {**acc.get(key, {}), **piece[key]}
    return acc


def gather(acc: dict, key: str) -> np.ndarray:
    """A per-spectrum record, in spectrum order, from a merged accumulator: the
    observed ``"snr"``, the routing ``"route_snr"`` (oracle SNR keys), the
    ``"cell"``, the gate's ``"features"``, ``"target"``, ``"sample_rows"`` and
    ``"sample_flux"``, or the chunks' ``"digest"``. Empty when not recorded."""
    parts = acc.get(key, {})
    return np.concatenate([parts[i] for i in sorted(parts)]) if parts else np.zeros(0)


def cell_to_expert(settings: FitSettings, choice: dict | None = None) -> np.ndarray:
    """Each pass cell's expert cell (index into the experts after the global model):
    the identity, or with a search the coarse cell that pools it."""
    if choice is not None:
        return np.asarray(choice["mapping"], dtype=np.int64)
    return np.arange(settings.n_bins, dtype=np.int64)


def expert_stats(acc: dict, settings: FitSettings, cell_map: np.ndarray) -> dict:
    """The merged pass statistics pooled into one slot per expert cell (every fold)."""
    if settings.search is not None:
        return stats.pooled_stats(acc, coarse_slots(cell_map, settings.n_folds))
    if settings.n_folds > 1:
        return stats.bin_stats(acc, settings.n_folds)
    return acc


def pool_experts(acc: dict, settings: FitSettings, choice: dict | None = None) -> dict:
    """The merged statistics with one slot per expert (graph task): pooled once,
    after the pass, for the refinement rounds and the calibration's factors."""
    return expert_stats(acc, settings, cell_to_expert(settings, choice))


def coarse_slots(mapping: np.ndarray, n_folds: int) -> list[list[int]]:
    """Per coarse cell, the (fine cell, fold) slots it pools, every fold."""
    groups = cells.coarse_groups(mapping, n_folds)
    return [sum(groups[g * n_folds : (g + 1) * n_folds], []) for g in range(len(groups) // n_folds)]
