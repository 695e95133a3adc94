"""Write spectra stores: the codecs, the chunk layout and :func:`write_spectra`.

Every spectra store the tool writes (``snr-moe generate``, ``snr-moe ingest``,
:func:`write_spectra`) is laid out the same way: Zarr format 3, chunked along
``spectrum`` only (whole spectra per chunk), the chosen compression plus a
CRC32C checksum per chunk, consolidated metadata, every chunk written, and
the ``spectra`` marker of :mod:`snr_moe_dask.store.outputs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ..graph import run_graph
from ..options import resolve
from .outputs import atomic_path
from .schema import PER_SPECTRUM_VARS, SPECTRUM, WAVELENGTH, validate_spectra, write_zarr

CODECS = ("none", "zstd", "lz4")


def compressors(codec: str) -> tuple:
    """The compression codecs of ``codec``; :func:`~snr_moe_dask.store.schema.write_zarr`
    adds the checksum."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}; got codec={codec!r}")
    if codec == "none":
        return ()
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "zstd":
        return (ZstdCodec(level=1),)
    return (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),)


def spectra_encoding(ds: xr.Dataset, chunk_size: int, codec: str) -> dict:
    """``to_zarr`` encoding of a spectra store: ``chunk_size`` spectra per chunk, whole
    spectra, ``codec`` for the numbers (strings keep zarr's own codecs).

    Parameters
    ----------
    ds : xarray.Dataset
        Variables with a leading ``spectrum`` dim, and the ``wavelength`` coordinate.
    chunk_size : int
    codec : {"none", "zstd", "lz4"}

    Returns
    -------
    dict
    """
    encoding = {}
    for name, var in ds.variables.items():
        if name == WAVELENGTH:
            encoding[name] = {"chunks": (ds.sizes[WAVELENGTH],)}
            continue
        if not var.dims or var.dims[0] != SPECTRUM:
            continue
        chunks = (min(chunk_size, var.shape[0]), *var.shape[1:])
        encoding[str(name)] = {"chunks": chunks}
        if var.dtype.kind in "biuf":
            encoding[str(name)]["compressors"] = compressors(codec)
    return encoding


def as_spectra_dataset(data, wavelength=None, attrs: Mapping | None = None) -> xr.Dataset:
    """A Dataset in the store schema from a Dataset, or from a mapping of arrays.

    Parameters
    ----------
    data : xarray.Dataset or mapping of str to array
        A mapping holds ``flux`` and ``error`` (n_spectra, n_pixels), optionally
        ``mask`` (n_spectra, n_pixels) bool, labels and ``snr`` (n_spectra,) and
        any other per-spectrum variable such as ``object_id`` (strings).
    wavelength : array of shape (n_pixels,), optional
        Angstrom; required with a mapping (unless it holds ``wavelength``).
    attrs : mapping, optional
        Store attributes, added to the Dataset's.

    Returns
    -------
    xarray.Dataset
    """
    if isinstance(data, xr.Dataset):
        ds = data.copy()
    elif isinstance(data, Mapping):
        data = dict(data)
        wavelength = data.pop(WAVELENGTH, wavelength)
        if wavelength is None:
            raise ValueError(
                "write_spectra: pass wavelength=<array of shape (n_pixels,) in Angstrom> "
                "(or a 'wavelength' entry): every store has one wavelength grid"
            )
        data_vars = {}
        for name, value in data.items():
            value = value if isinstance(value, da.Array) else np.asarray(value)
            dims = (SPECTRUM, WAVELENGTH)[: value.ndim]
            if value.ndim not in (1, 2):
                raise ValueError(
                    f"write_spectra: {name!r} has shape {value.shape}; expected (n_spectra,) "
                    "or (n_spectra, n_pixels)"
                )
            if value.dtype.kind == "U":
                value = value.astype(object)  # zarr's variable-length strings
            data_vars[name] = (dims, value)
        wave = np.asarray(wavelength, dtype=np.float64)
        ds = xr.Dataset(data_vars, coords={WAVELENGTH: (WAVELENGTH, wave)})
    else:
        raise TypeError(
            f"write_spectra: expected an xarray.Dataset or a mapping of arrays; got "
            f"{type(data).__name__}"
        )
    ds.attrs.update(attrs or {})
    return ds


def write_spectra(
    data,
    path: str | os.PathLike,
    *,
    wavelength=None,
    chunk_size: int | None = None,
    codec: str | None = None,
    attrs: Mapping | None = None,
    overwrite: bool = False,
) -> Path:
    """Write spectra to a store that ``fit``, ``evaluate`` and ``predict`` read.

    The data are checked against the store schema first (the checks of
    :func:`snr_moe_dask.open_spectra`: variables, dims, dtypes, a finite and
    strictly increasing grid), then written the way every store of the tool
    is (see this module), to a temporary path renamed into place. Dask-backed
    data are written chunk by chunk on the current cluster.

    Parameters
    ----------
    data : xarray.Dataset or mapping of str to array
        ``flux`` and ``error`` (n_spectra, n_pixels) float32 or float64, and
        optionally ``mask`` (bool, True = bad), labels ``logg``, ``teff``,
        ``mh``, ``mag``, the true ``snr``, ``object_id`` and any other
        per-spectrum variable (see :func:`as_spectra_dataset`).
    path : str or path-like
    wavelength : array of shape (n_pixels,), optional
        Angstrom, with a mapping.
    chunk_size : int, optional
        Spectra per chunk; default ``snr-moe.ingest.chunk-size`` (4096).
    codec : {"none", "zstd", "lz4"}, optional
        Default ``snr-moe.ingest.codec`` ("none").
    attrs : mapping, optional
        Store attributes (e.g. ``instrument``, ``noise_level``).
    overwrite : bool
        Replace a spectra store this tool wrote (never anything else).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    StoreError, ValueError, TypeError
        One line naming the store and the variable, before anything is written.
    """
    chunk_size = resolve("ingest_chunk_size", chunk_size)
    codec = resolve("ingest_codec", codec)
    ds = as_spectra_dataset(data, wavelength, attrs)
    validate_spectra(ds, str(path), require=[v for v in PER_SPECTRUM_VARS if v in ds])
    strings = [name for name, v in ds.data_vars.items() if v.dtype.kind in "OUT"]
    ds = ds.chunk({SPECTRUM: chunk_size, WAVELENGTH: -1})
    for name in strings:  # written with the metadata: zarr stores strings of any length
        ds[name] = ds[name].compute().astype(object)
    encoding = spectra_encoding(ds, chunk_size, codec)
    source = ds.encoding.get("source")
    with atomic_path(path, overwrite=overwrite, kind="spectra", inputs=[source]) as tmp:
        delayed = write_zarr(ds, tmp, encoding=encoding, compute=False)
        run_graph(delayed, label=f"write_spectra: {ds.sizes[SPECTRUM]:,} spectra -> {path}")
    return Path(path)
