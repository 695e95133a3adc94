"""Write a mock survey to Zarr with a Dask graph, one chunk per task.

The kernel is :func:`snr_moe_dask.survey.mock.simulate_spectra`; this module only
lays it out as a graph and writes the result, never holding the whole array.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..graph import run_graph
from ..options import resolve
from ..store.outputs import atomic_path
from ..store.schema import SPECTRUM, WAVELENGTH, write_zarr
from ..store.writer import compressors
from . import mock


def survey_dataset(
    n: int,
    *,
    seed: int | None = None,
    noise_level: float | None = None,
    pixels: int | None = None,
    chunk_size: int | None = None,
) -> xr.Dataset:
    """Return a lazy mock survey as an xarray Dataset backed by dask arrays.

    Parameters
    ----------
    n : int
        Number of spectra.
    seed, noise_level, pixels, chunk_size : optional
        Default from ``snr-moe.generate.*`` in :mod:`dask.config`.

    Returns
    -------
    xarray.Dataset
        Follows the store schema (see :mod:`snr_moe_dask.store.schema`).
    """
    seed = resolve("gen_seed", seed)
    noise_level = resolve("noise_level", noise_level)
    pixels = resolve("pixels", pixels)
    chunk_size = resolve("chunk_size", chunk_size)
    _check_generate_args(n, noise_level, pixels, chunk_size)
    wave = mock.wavelength_grid(pixels)
    starts = list(range(0, n, chunk_size))
    blocks = [
        dask.delayed(mock.simulate_spectra, pure=True)(
            s, min(s + chunk_size, n), seed=seed, wavelength=wave, noise_level=noise_level
        )
        for s in starts
    ]
    sizes = [min(s + chunk_size, n) - s for s in starts]

    def column(key: str, dtype, two_d: bool) -> da.Array:
        parts = [
            da.from_delayed(b[key], shape=(m, pixels) if two_d else (m,), dtype=dtype)
            for b, m in zip(blocks, sizes)
        ]
        return da.concatenate(parts, axis=0)

    data_vars = {
        key: ((SPECTRUM, WAVELENGTH), column(key, np.float32, True)) for key in ("flux", "error")
    }
    for key in (*mock.LABELS, "snr"):
        data_vars[key] = ((SPECTRUM,), column(key, np.float64, False))
    ds = xr.Dataset(data_vars, coords={WAVELENGTH: (WAVELENGTH, wave)})
    ds[WAVELENGTH].attrs.update(units="Angstrom", long_name="vacuum wavelength")
    ds["flux"].attrs.update(long_name="observed flux", units="relative (mag 21.5 mean = 1)")
    ds["error"].attrs.update(long_name="1-sigma uncertainty of flux at noise_level 1")
    ds["snr"].attrs.update(long_name="true SNR: median over pixels of noiseless flux / error")
    ds.attrs.update(
        instrument=mock.INSTRUMENT,
        arm=mock.ARM,
        generator="snr_moe_dask.survey.mock",
        generator_version=mock.GENERATOR_VERSION,
        seed=seed,
        noise_level=noise_level,
    )
    return ds


def _check_generate_args(n: int, noise_level: float, pixels: int, chunk_size: int) -> None:
    if n < 1:
        raise ValueError(f"n must be a positive number of spectra; got n={n}")
    if pixels < 2:
        raise ValueError(f"pixels must be at least 2; got pixels={pixels}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of spectra; got {chunk_size}")
    if not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0; got noise_level={noise_level}")


def generate_survey(
    path: str | os.PathLike,
    n: int,
    *,
    seed: int | None = None,
    noise_level: float | None = None,
    pixels: int | None = None,
    chunk_size: int | None = None,
    codec: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate a mock survey and write it to a Zarr (format 3) store.

    Chunks are simulated and written in parallel by whatever Dask scheduler is
    active (a distributed ``Client`` if one exists). The store appears at
    ``path`` only once it is complete.

    Parameters
    ----------
    path : str or path-like
        Output store.
    n : int
        Number of spectra.
    seed, noise_level, pixels, chunk_size, codec : optional
        Default from ``snr-moe.generate.*``. ``codec`` is ``"none"``,
        ``"zstd"`` or ``"lz4"``; noisy float32 flux barely compresses.
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    pathlib.Path
    """
    codec = resolve("codec", codec)
    compressors(codec)  # a bad codec fails before any compute
    ds = survey_dataset(n, seed=seed, noise_level=noise_level, pixels=pixels, chunk_size=chunk_size)
    chunk = ds["flux"].data.chunks[0][0]
    encoding = {
        var: {"compressors": compressors(codec), "chunks": ds[var].data.chunksize}
        for var in ds.data_vars
    }
    encoding["wavelength"] = {"chunks": (ds.sizes[WAVELENGTH],)}
    ds.attrs["chunk_size"] = chunk
    ds.attrs["codec"] = codec
    with atomic_path(path, overwrite=overwrite, kind="spectra") as tmp:
        store = write_zarr(ds, tmp, encoding=encoding, compute=False)
        run_graph(store, label=f"generate: {n:,} spectra -> {path}")
    return Path(path)
