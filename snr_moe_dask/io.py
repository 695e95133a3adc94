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
import itertools
import json
import mmap
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

SPECTRUM = "spectrum"
WAVELENGTH = "wavelength"
EXPERT = "expert"
TARGET = "target"

SPECTRAL_VARS = ("flux", "error")
LABEL_VARS = ("logg", "teff", "mh", "mag")
PER_SPECTRUM_VARS = (*LABEL_VARS, "snr")


class StoreError(ValueError):
    """A store does not follow the schema, or cannot be read."""


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
            # Zarr format 3 stores are written without consolidated metadata.
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


def read_error(store: str, var: str, rows: slice, exc: BaseException, key=None) -> StoreError:
    """The error for a chunk that cannot be read: one line naming the store, the
    variable, the spectra and the chunk key(s)."""
    start, stop = rows.start or 0, rows.stop
    where = f"spectra {start}-{stop - 1}" if stop is not None else "all spectra"
    keys = _chunk_keys(store, var, key if key is not None else (rows,))
    if keys:
        where += f", chunk{'s' if len(keys) > 1 else ''} " + ", ".join(map(repr, keys))
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    return StoreError(
        f"cannot read variable {var!r} of store {store!r} ({where}): {detail}; "
        "the chunk is damaged or truncated: restore the store from a copy or "
        "regenerate it (`snr-moe generate`)"
    )


def _chunk_keys(store: str, var: str, key: tuple) -> list[str]:
    """The keys of the stored chunks that ``key`` (a tuple of slices) touches, e.g.
    ``['flux/c/1/0']``; empty if they cannot be worked out."""
    try:
        arr = _open_group(store)[var]
        ranges = []
        for i, (size, chunk) in enumerate(zip(arr.shape, arr.chunks)):
            s = key[i] if i < len(key) else slice(None)
            lo, hi, _ = s.indices(size)
            ranges.append(range(lo // chunk, max(hi - 1, lo) // chunk + 1))
        return [f"{var}/{arr.metadata.encode_chunk_key(idx)}" for idx in itertools.product(*ranges)]
    except Exception:  # only decoration for an error message already being raised
        return []


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


@dataclass(frozen=True)
class StoreRows:
    """A run of spectra in a Zarr store, read inside a graph task.

    A fold task that reads its own rows keeps the data next to the
    accumulator: no chunk waits in memory for its turn, and none travels
    between workers.
    """

    path: str
    start: int
    stop: int
    targets: tuple[str, ...]
    with_snr: bool
    with_mask: bool

    def read(self) -> dict[str, np.ndarray]:
        """Return ``flux``, ``error``, ``y`` (m, n_targets) and, if present, ``snr``, ``mask``."""
        try:
            group = _open_group(self.path)
        except Exception as exc:  # zarr raises many types; name the store
            raise StoreError(
                f"cannot open spectra store {self.path!r} as Zarr: {type(exc).__name__}: {exc}"
            ) from exc
        rows = slice(self.start, self.stop)

        def read(var: str) -> np.ndarray:
            try:
                arr = group[var]
                direct = raw_chunk_file(arr, rows)
                out = read_raw_chunk(arr, direct, rows) if direct else None
                return arr[rows] if out is None else out
            except Exception as exc:  # name the store, variable and chunk, whatever zarr raised
                raise read_error(self.path, var, rows, exc) from exc

        out = {
            "flux": read("flux"),
            "error": read("error"),
            "y": np.column_stack([read(t) for t in self.targets])
            if self.targets
            else np.zeros((self.stop - self.start, 0)),
        }
        if self.with_snr:
            out["snr"] = read("snr")
        if self.with_mask:
            out["mask"] = read("mask")
        return out


MAP_BYTES = 1 << 20  # read_raw_chunk maps chunk files from this size up


def raw_chunk_file(arr, rows: slice) -> str | None:
    """The file of the one stored chunk that holds exactly ``rows`` (and every
    column) as raw bytes, or None when zarr must decode the read.

    A chunk qualifies when the array is Zarr v3 in a local directory, on a
    regular chunk grid with one chunk across the columns, stored with the
    ``bytes`` codec alone (no compression) in this machine's byte order, and
    ``rows`` are exactly the rows of one chunk. Such a chunk is the C-ordered
    array itself, so it can be read straight into memory; zarr's
    asynchronous read of the same chunk costs 2-4x more (BENCHMARKS.md).
    """
    from zarr.codecs import BytesCodec
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.storage import LocalStore

    meta = arr.metadata
    if (
        meta.zarr_format != 3
        or not isinstance(arr.store, LocalStore)
        or not isinstance(meta.chunk_grid, RegularChunkGrid)
        or len(meta.codecs) != 1
        or not isinstance(meta.codecs[0], BytesCodec)
        or arr.dtype.kind not in "fiub"
    ):
        return None
    endian = meta.codecs[0].endian
    if arr.dtype.itemsize > 1 and (endian is None or endian.value != sys.byteorder):
        return None
    chunks, shape = meta.chunk_grid.chunk_shape, arr.shape
    start, stop = rows.start or 0, rows.stop
    if any(c != s for c, s in zip(chunks[1:], shape[1:])) or start % chunks[0]:
        return None
    if stop != min(start + chunks[0], shape[0]):
        return None
    key = meta.encode_chunk_key((start // chunks[0],) + (0,) * (len(shape) - 1))
    path = os.path.join(str(arr.store.root), arr.path, *key.split("/"))
    return path if os.path.isfile(path) else None  # a missing chunk holds the fill value


def read_raw_chunk(arr, path: str, rows: slice) -> np.ndarray | None:
    """Read the rows of one uncompressed chunk file (see :func:`raw_chunk_file`).

    A chunk of at least ``MAP_BYTES`` is mapped copy-on-write rather than
    copied: its pages are read (from the page cache, or from disk with the
    kernel's read-ahead started at once) as the task first touches them, and
    writes to the array stay private to it. Reading 2 x 64 MB chunks into
    fresh memory costs about 80 ms; mapping them, under 1 ms (BENCHMARKS.md).

    Returns None when the file is not the size of a whole chunk, so that zarr
    reads it and reports what is wrong with it.
    """
    chunk_rows = arr.metadata.chunk_grid.chunk_shape[0]
    shape = (rows.stop - rows.start, *arr.shape[1:])
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        if size != chunk_rows * row_bytes:
            return None
        if size >= MAP_BYTES:
            mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
            mapped.madvise(mmap.MADV_WILLNEED)
            count = shape[0] * row_bytes // arr.dtype.itemsize
            return np.frombuffer(mapped, dtype=arr.dtype, count=count).reshape(shape)
        out = np.empty(shape, dtype=arr.dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < out.nbytes:
            got = fh.readinto(view[done:])
            if not got:
                raise ValueError(f"chunk file ended after {done} of {out.nbytes} bytes")
            done += got
    return out


@functools.lru_cache(maxsize=16)
def _open_group(path: str):
    import zarr

    return zarr.open_group(path, mode="r")


def store_row_chunks(ds: xr.Dataset) -> list[tuple[int, int]]:
    """The (start, stop) rows of each stored chunk of ``flux``."""
    sizes = ds["flux"].chunks[0] if ds["flux"].chunks else (ds.sizes[SPECTRUM],)
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops)]
