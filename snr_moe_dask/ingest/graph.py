"""``snr-moe ingest``: real spectra files into a spectra store, as one Dask graph.

The client scans every source and plans the store (:mod:`snr_moe_dask.ingest.plan`),
writes a template store whose per-spectrum labels, ids and provenance it
already knows, then runs one task per output chunk
(:func:`snr_moe_dask.ingest.tasks.ingest_chunk`): each reads its rows from
whichever source files overlap it, adds the noise or resamples, and writes
its region of the template, as the evaluation writes ``predictions.zarr``.
Their counts merge pairwise; the store gets them as attributes, is checked
against the schema, and only then is renamed into place.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from ..graph import pairwise_tree, run_graph
from ..options import resolve
from ..store.outputs import atomic_path, check_output
from ..store.schema import SPECTRUM, WAVELENGTH, open_spectra, write_zarr
from ..store.writer import spectra_encoding
from .plan import IngestPlan, check_format_settings, make_plan, plan_attrs
from .tasks import COUNTS, ingest_chunk, merge_counts


def ingest_spectra(
    sources,
    out: str | os.PathLike,
    *,
    format: str,
    noise_level: float | None = None,
    seed: int | None = None,
    snr_definition: str | None = None,
    wavelength_grid: str | os.PathLike | None = None,
    resample: str | None = None,
    ignore_flags=None,
    apply_norm: bool = False,
    chunk_size: int | None = None,
    codec: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Ingest pfsspec shards or PFS pipeline files into a spectra store.

    Parameters
    ----------
    sources : path or list of paths
        Files, or folders of them (sorted), in the order the store holds them.
    out : path
        The spectra store to write (Zarr); replaced only with ``overwrite``
        and only if this tool wrote it.
    format : {"pfsspec", "pfs"}
    noise_level, seed, snr_definition : optional
        pfsspec only: ``flux = max(noiseless, 0) + noise_level * error *
        N(0, 1)``, store row i drawing from its own stream ``(seed, i)``; the
        true ``snr`` by ``"median"`` or ``"norm"``. Defaults
        ``snr-moe.ingest.*`` (1.0, 0, "median").
    wavelength_grid : path, optional
        A spectra or model store: every spectrum is resampled onto its grid.
        Without it every spectrum must share one grid.
    resample : {"linear", "flux"}, optional
        The resampling method (default "linear").
    ignore_flags : list of str, optional
        PFS only: mask planes that do not make a pixel bad.
    apply_norm : bool
        PFS only: divide flux and error by the NORM HDU.
    chunk_size : int, optional
        Spectra per chunk (default 4096).
    codec : {"none", "zstd", "lz4"}, optional
    overwrite : bool

    Returns
    -------
    dict
        ``path``, ``n_spectra``, ``counts`` (see
        :data:`snr_moe_dask.ingest.tasks.COUNTS`), ``attrs`` and ``seconds``.

    Raises
    ------
    IngestError, ValueError
        One line naming the file (every bad file, when several), the setting
        or the store and the fix, before any compute; nothing is written.
    """
    t0 = time.perf_counter()
    sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    given = {"noise_level": noise_level, "seed": seed, "snr_definition": snr_definition}
    given.update(ignore_flags=tuple(ignore_flags or ()), apply_norm=bool(apply_norm))
    check_format_settings(format, given)
    grid = None if wavelength_grid is None else str(wavelength_grid)
    inputs = [*sources, grid]
    check_output(out, overwrite, kind="spectra", inputs=inputs)
    settings = given | {
        "noise_level": resolve("ingest_noise_level", noise_level),
        "seed": resolve("ingest_seed", seed),
        "snr_definition": resolve("snr_definition", snr_definition),
        "ignore_flags": list(given["ignore_flags"]),
    }
    plan = make_plan(
        sources,
        format,
        settings,
        grid=grid,
        method=resolve("resample", resample),
        chunk_size=resolve("ingest_chunk_size", chunk_size),
    )
    codec = resolve("ingest_codec", codec)
    with atomic_path(out, overwrite=overwrite, kind="spectra", inputs=inputs) as tmp:
        create_template(plan, tmp, codec)
        (counts,) = run_graph(
            ingest_graph(plan, tmp),
            label=f"ingest: {plan.n_spectra:,} spectra from {len(plan.files)} files -> {out}",
        )
        counts = {key: int(counts.get(key, 0)) for key in COUNTS}
        counts["dropped_spectra"] = 0
        finish_store(tmp, counts)
        open_spectra(tmp)  # the schema's checks, on what was written
    attrs = plan_attrs(plan)
    return {
        "path": str(out),
        "n_spectra": plan.n_spectra,
        "n_files": len(plan.files),
        "counts": counts,
        "attrs": attrs,
        "seconds": time.perf_counter() - t0,
    }


def template_dataset(plan: IngestPlan) -> xr.Dataset:
    """The store's variables: lazy (empty) pixels the tasks fill, and the per-spectrum
    values the client knows, written with the metadata."""
    n, p = plan.n_spectra, plan.wavelength.size
    rows = tuple(min(plan.chunk_size, n - s) for s in range(0, n, plan.chunk_size))
    pixels = {"flux": np.float32, "error": np.float32}
    if plan.has_mask:
        pixels["mask"] = bool
    data_vars = {
        name: ((SPECTRUM, WAVELENGTH), da.empty((n, p), chunks=(rows, p), dtype=dtype))
        for name, dtype in pixels.items()
    }
    data_vars["snr"] = ((SPECTRUM,), da.empty(n, chunks=(rows,), dtype=np.float64))
    for name, values in plan.per_spectrum.items():
        data_vars[name] = ((SPECTRUM,), values)
    ds = xr.Dataset(data_vars, coords={WAVELENGTH: (WAVELENGTH, plan.wavelength)})
    ds[WAVELENGTH].attrs.update(units="Angstrom", long_name="vacuum wavelength")
    ds["error"].attrs.update(long_name="1-sigma uncertainty of flux")
    ds["snr"].attrs.update(long_name=f"true SNR ({plan_attrs(plan)['snr_definition']})")
    ds.attrs.update(plan_attrs(plan))
    return ds


def create_template(plan: IngestPlan, path: Path, codec: str) -> None:
    """Write the template store: metadata, the per-spectrum values, no pixels yet."""
    ds = template_dataset(plan)
    write_zarr(ds, path, encoding=spectra_encoding(ds, plan.chunk_size, codec), compute=False)


def ingest_graph(plan: IngestPlan, path: Path):
    """One task per output chunk, their counts merged pairwise (a delayed dict)."""
    spec = {
        "format": plan.format,
        "wavelength": plan.wavelength,
        "resample": plan.resample,
        "has_mask": plan.has_mask,
        "settings": plan.settings,
    }
    spec_key = dask.delayed(spec, pure=True)
    files = [dask.delayed(f, pure=True) for f in plan.files]  # each sent once per worker
    token = tokenize(str(path), [f.path for f in plan.files], spec_key, plan.chunk_size)
    tasks = [
        dask.delayed(ingest_chunk, pure=True)(
            str(path),
            start,
            pieces,
            {i: files[i] for i, _, _ in pieces},
            spec_key,
            dask_key_name=f"ingest-{token}-{k}",
        )
        for k, (start, pieces) in enumerate(plan.chunks())
    ]
    return pairwise_tree(tasks, merge_counts, f"merge-ingest-{token}")


def finish_store(path: Path, counts: dict) -> None:
    """Add the counts to the store's attributes (the consolidated metadata keeps them)."""
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    group.attrs.update({"ingest_counts": json.dumps(counts)})


def ingest_summary(result: dict) -> str:
    """What an ingest did, for the terminal."""
    c = result["counts"]
    a = result["attrs"]
    rate = result["n_spectra"] / result["seconds"] if result["seconds"] else float("nan")
    lines = [
        f"ingested {result['n_spectra']:,} spectra from {result['n_files']} {a['format']} files "
        f"in {result['seconds']:.1f} s ({rate:,.0f} spectra/s) -> {result['path']}",
        f"  grid: {a['resampling']}",
        f"  noise: {a['noise']}"
        + (
            f" (noise_level {a['noise_level']:g}, seed {a['seed']})"
            if a["format"] == "pfsspec"
            else ""
        ),
        f"  snr: {a['snr_definition']}",
        f"  dropped spectra: {c['dropped_spectra']} (every spectrum is kept: store row i is "
        "source row i, see source_file and source_row)",
        f"  bad pixels: {c['bad_pixels']:,}; spectra without a good pixel: "
        f"{c['spectra_without_good_pixel']:,}; pixels outside a source's wavelength range: "
        f"{c['uncovered_pixels']:,}; NaN errors filled from a neighbour: "
        f"{c['nan_errors_filled']:,}; spectra with a NaN true SNR: {c['snr_nan']:,}",
    ]
    return "\n".join(lines)
