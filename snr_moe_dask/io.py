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

import ctypes
import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

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


def store_fingerprint(path: str | os.PathLike) -> str:
    """Return a short hash of a store's metadata and the names and sizes of its chunks.

    It changes when data are rewritten, appended or re-chunked, without
    reading any chunk.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        digest.update(rel.encode())
        if file.name in ("zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata"):
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()[:16]


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite`` is set."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(out)!r} already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another path"
        )
    return out


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success, rename it into place.

    On error the temporary is removed and any previous output is untouched.
    A previous output is swapped with the new one in one step where the file
    system can (Linux ``renameat2(RENAME_EXCHANGE)``), so a crash at any moment
    leaves the old output or the new one under the name. Elsewhere the old one
    is moved aside first and removed once the new one is in place: a crash
    between the two renames leaves it as the hidden sibling ``.NAME.old-*``.
    A run killed before the swap leaves its temporary ``.NAME.tmp-*`` behind.
    """
    final = check_output(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.exists() and _exchange(tmp, final):
        _remove(tmp)  # now the previous output
        return
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        _remove(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the platform or file system
    cannot (then nothing has changed)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # e.g. NFS or a kernel without it; os.replace reports real errors
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if func is not None:
        path, fd = ctypes.c_char_p, ctypes.c_int
        func.argtypes = [fd, path, fd, path, ctypes.c_uint]
        func.restype = ctypes.c_int
    return func


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


@contextmanager
def quiet_consolidation() -> Iterator[None]:
    """Silence zarr's note that consolidated metadata is an extension of Zarr format 3.

    Every store the tool writes carries consolidated metadata, which xarray and
    zarr-python read, so that ``xarray.open_zarr`` opens it in one read and
    without a warning.
    """
    # catch_warnings swaps process-wide state: one thread at a time (the threaded
    # scheduler writes checkpoints from several).
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part")
        yield


_WARNINGS_LOCK = threading.RLock()


def write_zarr(ds: xr.Dataset, path: str | os.PathLike, **kwargs):
    """``ds.to_zarr`` as the tool writes every store: Zarr format 3, a new store,
    consolidated metadata. Returns what ``to_zarr`` returns."""
    with quiet_consolidation():
        return ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, **kwargs)


def open_zarr_quietly(path: str | os.PathLike, **kwargs) -> xr.Dataset:
    """``xarray.open_zarr`` that also reads, without a warning, a store written before
    the tool consolidated its metadata."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
        return xr.open_zarr(path, **kwargs)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON atomically (NaN written as null)."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def store_row_chunks(ds: xr.Dataset) -> list[tuple[int, int]]:
    """The (start, stop) rows of each stored chunk of ``flux``."""
    sizes = ds["flux"].chunks[0] if ds["flux"].chunks else (ds.sizes[SPECTRUM],)
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops)]
