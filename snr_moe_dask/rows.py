"""Read one run of spectra from a Zarr store inside a graph task.

Fold and evaluation tasks read their own chunks with :class:`StoreRows`. This
module needs only numpy and zarr, so that a worker unpickling such a task does
not import xarray, pandas or dask.array (several seconds on a fresh worker);
:mod:`snr_moe_dask.io` opens and validates whole stores on the client.
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import sys
from dataclasses import dataclass

import numpy as np


class StoreError(ValueError):
    """A store does not follow the schema, or cannot be read."""


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
