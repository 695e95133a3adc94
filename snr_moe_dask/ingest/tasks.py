"""The ingest's graph tasks: fill one chunk of the store from the source files that
overlap it (chunk), and add two chunks' counts (combine).

They need numpy, zarr and the file readers (h5py for pfsspec, astropy for PFS);
never xarray, pandas or scikit-learn: the labels were read on the client.
"""

from __future__ import annotations

import numpy as np

from ..kernels.snr import find_bad_pixels
from ..store import blocks
from .noise import fill_nan_errors, noisy_flux, true_snr
from .resample import resample

#: What a task counts; the store's ``ingest_counts`` attribute and the command's output.
COUNTS = (
    "spectra",
    "bad_pixels",
    "spectra_without_good_pixel",
    "uncovered_pixels",
    "nan_errors_filled",
    "snr_nan",
)


def ingest_chunk(path: str, start: int, pieces: list, files: list, spec: dict) -> dict:
    """Read the rows of one store chunk from its sources, convert them and write them.

    Parameters
    ----------
    path : str
        The store being written (its template exists).
    start : int
        The chunk's first row in the store.
    pieces : list of (int, int, int)
        ``(file index, first row, stop row)`` of the source rows, in order.
    files : list of SourceFile
        Only those the pieces name are read.
    spec : dict
        ``format``, ``wavelength`` (the store's grid), ``resample`` (""
        or the method), ``has_mask`` and ``settings`` (see
        :class:`snr_moe_dask.ingest.plan.IngestPlan`).

    Returns
    -------
    dict of str to int
        :data:`COUNTS`.
    """
    parts, row = [], start
    for index, a, b in pieces:
        read = read_pfsspec if spec["format"] == "pfsspec" else read_pfs_rows
        parts.append(read(files[index], a, b, row, spec))
        row += b - a
    block = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "counts"}
    counts = dict.fromkeys(COUNTS, 0)
    for p in parts:
        for key, value in p["counts"].items():
            counts[key] += int(value)
    bad = find_bad_pixels(block["flux"], block["error"], block.get("mask"))
    counts.update(
        spectra=int(row - start),
        bad_pixels=int(bad.sum()),
        spectra_without_good_pixel=int(bad.all(axis=1).sum()),
        snr_nan=int(np.isnan(block["snr"]).sum()) if spec["format"] == "pfsspec" else 0,
    )
    write_rows(path, start, block, spec["has_mask"])
    return counts


def write_rows(path: str, start: int, block: dict, has_mask: bool) -> None:
    """Write ``flux``, ``error``, ``snr`` (and ``mask``) rows into the store's region."""
    names = ("flux", "error", "snr", *(("mask",) if has_mask else ()))
    blocks.write_rows(path, start, {name: block[name] for name in names})


def read_pfsspec(source, a: int, b: int, row: int, spec: dict) -> dict:
    """Rows ``[a, b)`` of a pfsspec shard, noised as the study did, with their true SNR.

    The noise of store row ``row + r`` comes from its own stream ``(seed,
    row + r)``, so any chunking gives the same bytes. The true SNR is computed
    on the shard's own pixels (before any resampling), from the clipped
    noiseless flux and the NaN-filled error.
    """
    from .pfsspec import read_pixels

    s = spec["settings"]
    d = read_pixels(source.info, a, b)
    raw_error = d["error"]
    error = fill_nan_errors(raw_error)
    counts = {"nan_errors_filled": int(np.isnan(raw_error).sum() - np.isnan(error).sum())}
    flux = noisy_flux(d["flux"], raw_error, s["noise_level"], s["seed"], row)
    clean = np.clip(np.asarray(d["flux"], dtype=np.float64), 0.0, None)
    snr = true_snr(clean, error, s["snr_definition"], s["noise_level"])
    out = {"flux": flux, "error": error.astype(np.float32), "snr": snr}
    if spec["resample"]:
        out.update(resampled(d["wavelength"], flux, out["error"], None, spec, counts))
    return {**out, "counts": counts}


def read_pfs_rows(source, a: int, b: int, row: int, spec: dict) -> dict:
    """Rows ``[a, b)`` of a PFS file (scanned again here: a pfsArm's per-fibre grids are
    as large as its flux, so the client does not keep them)."""
    from .pfs import read_pfs, scan_pfs

    s = spec["settings"]
    info = scan_pfs(source.path)
    d = read_pfs(
        source.path,
        (a, b),
        info=info,
        ignore_flags=tuple(s.get("ignore_flags") or ()),
        apply_norm=bool(s.get("apply_norm")),
    )
    counts: dict = {}
    out = {"flux": d["flux"], "error": d["error"], "mask": d["mask"], "snr": np.full(b - a, np.nan)}
    if spec["resample"]:
        wave = info.wavelength if info.shared_wavelength else info.wavelength[a:b]
        out.update(resampled(wave, d["flux"], d["error"], d["mask"], spec, counts))
    return {**out, "counts": counts}


def resampled(wave_in, flux, error, mask, spec: dict, counts: dict) -> dict:
    """Flux, error and mask on the store's grid; counts the pixels outside the source's
    wavelength range (``uncovered_pixels``)."""
    wave_out = spec["wavelength"]
    f, e, m = resample(wave_in, flux, error, mask, wave_out, spec["resample"])
    w = np.atleast_2d(np.asarray(wave_in, dtype=np.float64))
    outside = (wave_out[None, :] < w[:, :1]) | (wave_out[None, :] > w[:, -1:])
    counts["uncovered_pixels"] = int(np.broadcast_to(outside, m.shape).sum())
    return {"flux": f.astype(np.float32), "error": e.astype(np.float32), "mask": m}


def merge_counts(a: dict, b: dict) -> dict:
    """Add two chunks' counts (graph task)."""
    return {key: a.get(key, 0) + b.get(key, 0) for key in a.keys() | b.keys()}
