"""Open and validate spectra stores; write outputs atomically.

The store schema
----------------
- dims ``spectrum`` and ``wavelength``; coordinate ``wavelength`` in Angstrom,
  float64, strictly increasing;
- ``flux`` and ``error`` (spectrum, wavelength), float32 (float64 is accepted);
  ``error`` is the 1-sigma uncertainty of ``flux``;
- labels (spectrum): ``logg``, ``teff``, ``mh``, ``mag``;
- ``snr`` (spectrum): the true SNR, median over pixels of noiseless flux / error;
- optional ``mask`` (spectrum, wavelength) bool, True = bad pixel;
- attrs: ``instrument``, ``arm``, ``generator_version``, ``seed``, ``noise_level``;
- chunked along ``spectrum`` only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .fingerprint import store_fingerprint
from .outputs import quiet_consolidation
from .rows import StoreError, read_error

SPECTRUM = "spectrum"
WAVELENGTH = "wavelength"
EXPERT = "expert"
TARGET = "target"

SPECTRAL_VARS = ("flux", "error")
LABEL_VARS = ("logg", "teff", "mh", "mag")
PER_SPECTRUM_VARS = (*LABEL_VARS, "snr")


def open_spectra(path: str | os.PathLike, *, require: Iterable[str] = ()) -> xr.Dataset:
    """Open a spectra store lazily and check it against the schema.

    Parameters
    ----------
    path : str or path-like
        A Zarr store written by ``snr-moe generate`` or following the schema.
    require : iterable of str, optional
        Per-spectrum variables the caller needs besides ``flux`` and
        ``error`` (for example the target ``"logg"`` or ``"snr"``).

    Returns
    -------
    xarray.Dataset
        Backed by dask arrays; nothing heavy has been read.

    Raises
    ------
    StoreError
        If the path cannot be opened or a variable breaks the schema. The
        message names the store, the variable and what was expected.
    """
    name = str(path)
    if not Path(name).exists():
        raise StoreError(
            f"cannot open spectra store {name!r}: no such file or directory; "
            "create one with `snr-moe generate OUT.zarr --n N` or check the path"
        )
    try:
        with warnings.catch_warnings():
            # Stores written by other tools (or by older versions) may lack
            # consolidated metadata; they open as well without it.
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            ds = xr.open_dataset(name, engine="zarr", chunks=None, consolidated=None, cache=False)
    except Exception as exc:  # zarr raises many types; re-raise with the store named
        raise StoreError(
            f"cannot open spectra store {name!r} as Zarr: {type(exc).__name__}: {exc}"
        ) from exc
    ds = _chunk_by_store(ds, name)
    validate_spectra(ds, name, require=require)
    return ds


def _chunk_by_store(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Back each data variable by a dask array with the store's chunks, whose read
    tasks name the store, the variable and the chunk when a chunk cannot be read."""
    token = store_fingerprint(name)
    ds.encoding["fingerprint"] = token  # once per open: a fit reuses it
    for var in list(ds.data_vars):
        v = ds[var].variable
        if v.ndim == 0:
            continue
        preferred = v.encoding.get("preferred_chunks", {})
        chunks = tuple(preferred.get(dim, size) for dim, size in zip(v.dims, v.shape))
        data = da.from_array(
            _ChunkReader(v, name, str(var)),
            chunks=chunks,
            name=f"open_spectra-{var}-{tokenize(name, str(var), token)}",
            lock=False,
            asarray=False,
            meta=np.empty((0,) * v.ndim, dtype=v.dtype),
        )
        ds[var] = ds[var].copy(data=data)
    return ds


class _ChunkReader:
    """An array-like over one lazily opened variable, for ``dask.array.from_array``.

    A damaged chunk fails with a :class:`StoreError` naming the store, the
    variable, the spectra and the chunk key, instead of whatever the codec
    raised from somewhere inside zarr.
    """

    def __init__(self, variable: xr.Variable, store: str, name: str):
        self.variable = variable
        self.store = store
        self.name = name
        self.shape = variable.shape
        self.dtype = variable.dtype
        self.ndim = variable.ndim

    def __getitem__(self, key):
        try:
            return np.asarray(self.variable[key].values)
        except Exception as exc:  # any codec or zarr failure: say where
            dims = self.variable.dims
            rows = key[dims.index(SPECTRUM)] if SPECTRUM in dims else slice(None)
            raise read_error(self.store, self.name, rows, exc, key) from exc


def validate_spectra(ds: xr.Dataset, name: str, *, require: Iterable[str] = ()) -> None:
    """Check ``ds`` against the store schema without computing anything heavy.

    Only the wavelength coordinate (one small 1-D array) is read.
    """
    for var in (*SPECTRAL_VARS, *require):
        if var not in ds.variables:
            raise StoreError(
                f"store {name!r} has no variable {var!r}; "
                f"expected {var!r} with dims {_expected_dims(var)} "
                f"(variables present: {sorted(map(str, ds.data_vars))})"
            )
    for var in require:
        v = ds[var]
        if v.dims != (SPECTRUM,) or v.dtype.kind not in "fiu":
            raise StoreError(
                f"variable {var!r} in store {name!r} has dims {v.dims} and dtype {v.dtype}; "
                f"as a label or SNR it must be one number per spectrum, dims ('spectrum',) "
                "and a numeric dtype: choose another variable"
            )
    if ds.sizes.get(SPECTRUM, 0) == 0 or ds.sizes.get(WAVELENGTH, 0) == 0:
        raise StoreError(
            f"store {name!r} holds no spectra ({dict(ds.sizes)}); expected at least one "
            "spectrum with at least one pixel"
        )
    same_dim_names = set(ds["flux"].dims) == set(ds["error"].dims)
    if ds["flux"].shape != ds["error"].shape and not same_dim_names:
        raise StoreError(
            f"variables 'flux' {ds['flux'].shape} and 'error' {ds['error'].shape} "
            f"in store {name!r} differ in shape; expected the same (spectrum, wavelength)"
        )
    for var in ds.data_vars:
        expected = _expected_dims(str(var))
        if expected is not None and ds[var].dims != expected:
            raise StoreError(
                f"variable {var!r} in store {name!r} has dims {ds[var].dims}; expected {expected}"
            )
    for var in SPECTRAL_VARS:
        if ds[var].dtype not in (np.float32, np.float64):
            raise StoreError(
                f"variable {var!r} in store {name!r} has dtype {ds[var].dtype}; "
                "expected float32 (or float64)"
            )
    if "mask" in ds.variables and ds["mask"].dtype != bool:
        raise StoreError(
            f"variable 'mask' in store {name!r} has dtype {ds['mask'].dtype}; "
            "expected bool (True = bad pixel)"
        )
    _validate_wavelength(ds, name)


def _expected_dims(var: str) -> tuple[str, ...] | None:
    if var in (*SPECTRAL_VARS, "mask"):
        return (SPECTRUM, WAVELENGTH)
    if var in PER_SPECTRUM_VARS:
        return (SPECTRUM,)
    return None


def _validate_wavelength(ds: xr.Dataset, name: str) -> None:
    if WAVELENGTH not in ds.coords:
        raise StoreError(
            f"store {name!r} has no coordinate 'wavelength'; "
            "expected a float64 coordinate in Angstrom along dim 'wavelength'"
        )
    wave = ds[WAVELENGTH]
    if wave.dims != (WAVELENGTH,):
        raise StoreError(
            f"coordinate 'wavelength' in store {name!r} has dims {wave.dims}; "
            "expected ('wavelength',)"
        )
    values = np.asarray(wave.values)
    if not np.issubdtype(values.dtype, np.floating):
        raise StoreError(
            f"coordinate 'wavelength' in store {name!r} has dtype {values.dtype}; "
            "expected float64 (Angstrom)"
        )
    steps = np.diff(values)
    if values.size and not (np.all(np.isfinite(values)) and np.all(steps > 0)):
        bad = int(np.argmax(~(steps > 0))) if steps.size else 0
        raise StoreError(
            f"coordinate 'wavelength' in store {name!r} is not strictly increasing "
            f"(at index {bad + 1}: {values[bad]!r} -> {values[min(bad + 1, values.size - 1)]!r}); "
            "expected strictly increasing wavelengths in Angstrom"
        )


def checksummed(compressors=None) -> tuple:
    """The bytes-to-bytes codecs of a store the tool writes: ``compressors`` (none by
    default), then a CRC32C checksum of each chunk, which every read verifies."""
    from zarr.codecs import Crc32cCodec

    return (*(compressors or ()), Crc32cCodec())


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, *, encoding=None, **kwargs):
    """``ds.to_zarr`` as the tool writes every store: Zarr format 3, a new store,
    consolidated metadata, every chunk written (a missing one is then an
    error, never a fill value) and checksummed. Returns what ``to_zarr``
    returns.

    ``encoding`` as for ``to_zarr``; a variable's ``compressors`` get the
    checksum appended, and variables it does not name are compressed with
    zstd (xarray's default) and checksummed.
    """
    from zarr.codecs import ZstdCodec

    encoding = {k: dict(v) for k, v in (encoding or {}).items()}
    for name, var in ds.variables.items():
        if var.dtype.kind not in "biufc":  # strings keep their own codecs
            continue
        enc = encoding.setdefault(str(name), {})
        given = enc.get("compressors", (ZstdCodec(level=1),))
        enc["compressors"] = checksummed(given)
    with quiet_consolidation():
        return ds.to_zarr(
            path,
            mode="w",
            zarr_format=3,
            consolidated=True,
            write_empty_chunks=True,
            encoding=encoding,
            **kwargs,
        )


def open_zarr_quietly(path: str | os.PathLike, **kwargs) -> xr.Dataset:
    """``xarray.open_zarr`` that also reads, without a warning, a store written before
    the tool consolidated its metadata."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
        return xr.open_zarr(path, **kwargs)


def store_row_chunks(ds: xr.Dataset) -> list[tuple[int, int]]:
    """The (start, stop) rows of each stored chunk of ``flux``."""
    sizes = ds["flux"].chunks[0] if ds["flux"].chunks else (ds.sizes[SPECTRUM],)
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops)]
