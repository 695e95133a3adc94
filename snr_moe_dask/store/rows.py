"""Read one run of spectra from a Zarr store inside a graph task.

Fold and evaluation tasks read their own chunks with :class:`StoreRows`. This
module needs only numpy and zarr, so that a worker unpickling such a task does
not import xarray, pandas or dask.array (several seconds on a fresh worker);
:mod:`snr_moe_dask.store.schema` opens and validates whole stores on the client.
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import sys
from dataclasses import dataclass
from typing import Any

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
        return [f"{var}/{k}" for k in chunk_keys(_open_group(store)[var], key)]
    except Exception:  # only decoration for an error message already being raised
        return []


def _storage_grid(arr) -> tuple[int, ...]:
    """The shape of the stored objects (chunks, or shards of a sharded array)."""
    meta = arr.metadata
    if meta.zarr_format == 3:
        return tuple(meta.chunk_grid.chunk_shape)
    return tuple(meta.chunks)


def chunk_keys(arr, key: tuple = ()) -> list[str]:
    """The storage keys (relative to the array) of the chunks ``key`` touches (a tuple
    of slices; all of them by default), e.g. ``['c/1/0']``."""
    ranges = []
    for i, (size, chunk) in enumerate(zip(arr.shape, _storage_grid(arr))):
        s = key[i] if i < len(key) else slice(None)
        lo, hi, _ = s.indices(size)
        if hi <= lo:
            return []
        ranges.append(range(lo // chunk, (hi - 1) // chunk + 1))
    return [arr.metadata.encode_chunk_key(idx) for idx in itertools.product(*ranges)]


def missing_chunks(arr, key: tuple = ()) -> list[str]:
    """The keys of the chunks that ``key`` touches but that the store does not hold.

    Zarr reads a missing chunk as its fill value; the tool never does: a store
    it writes holds every chunk (``write_empty_chunks``), so a missing one means
    the store is incomplete.
    """
    from zarr.storage import LocalStore

    keys = chunk_keys(arr, key)
    if isinstance(arr.store, LocalStore):
        root = os.path.join(str(arr.store.root), arr.path)
        return [k for k in keys if not os.path.isfile(os.path.join(root, *k.split("/")))]
    from zarr.core.sync import sync

    prefix = f"{arr.path}/" if arr.path else ""
    return [k for k in keys if not sync(arr.store.exists(prefix + k))]


def missing_error(store: str, var: str, keys: list[str], where: str = "") -> StoreError:
    """The error for chunks a store should hold and does not."""
    listed = ", ".join(repr(f"{var}/{k}") for k in keys[:3]) + (", ..." if len(keys) > 3 else "")
    return StoreError(
        f"store {store!r} is incomplete: variable {var!r}{where} has no chunk "
        f"{listed} ({len(keys)} missing), which zarr would read as fill values; restore "
        "the store from a copy or write it again (a store written with "
        "write_empty_chunks=False must be rewritten with write_empty_chunks=True)"
    )


def check_complete(store: str, group) -> None:
    """Raise :class:`StoreError` unless every array of ``group`` holds all its chunks
    (for the small stores read whole: models and checkpoints)."""
    for _, arr in sorted(group.arrays()):
        gone = missing_chunks(arr)
        if gone:
            raise missing_error(store, arr.path, gone)
    for _, sub in group.groups():
        check_complete(store, sub)


def digest(values: np.ndarray) -> int:
    """CRC32C of an array's bytes (C order, native byte order)."""
    import google_crc32c

    a = np.ascontiguousarray(values)
    return int(google_crc32c.value(a.reshape(-1).view(np.uint8)))


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
    extra: tuple[str, ...] = ()

    def read(self, flux_only: bool = False) -> dict[str, np.ndarray]:
        """Return ``flux``, ``error``, ``y`` (m, n_targets) and, if present, ``snr``,
        ``mask``; ``variables``, a dict of the ``extra`` per-spectrum variables (the
        experts' keys, the gate's features); and ``digest``, the CRC32C of each
        variable's rows (in the order :meth:`variables` lists them), so a pass
        knows what it read. With ``flux_only``, only ``flux`` and ``y`` (for a
        later read of rows a pass found without a bad pixel).

        Raises
        ------
        StoreError
            Naming the store, the variable, the spectra and the chunk key, when a
            chunk is missing, fails its checksum or cannot be decoded.
        """
        try:
            group = _open_group(self.path)
        except Exception as exc:  # zarr raises many types; name the store
            raise StoreError(
                f"cannot open spectra store {self.path!r} as Zarr: {type(exc).__name__}: {exc}"
            ) from exc
        rows = slice(self.start, self.stop)
        ours = _written_by_us(self.path, group)
        digests = []

        def read(var: str) -> np.ndarray:
            try:
                arr = group[var]
            except Exception as exc:  # name the store, variable and chunk, whatever zarr raised
                raise read_error(self.path, var, rows, exc) from exc
            # Any store's flux and error must hold every chunk (a missing one would
            # read as NaN: no data); a store the tool wrote holds every chunk of
            # every variable. Plain xarray skips chunks that are all fill value (an
            # unlabelled chunk's NaN labels, an all-False mask): those read as such.
            gone = missing_chunks(arr, (rows,)) if var in ("flux", "error") or ours else []
            if gone:
                raise missing_error(
                    self.path, var, gone, f" (spectra {rows.start}-{rows.stop - 1})"
                )
            try:
                direct = raw_chunk_file(arr, rows)
                out = read_raw_chunk(arr, direct, rows) if direct else None
                if out is None:
                    out = arr[rows]
                    digests.append(digest(out))
                else:
                    out, crc = out
                    digests.append(crc)
                return out
            except Exception as exc:  # name the store, variable and chunk, whatever zarr raised
                raise read_error(self.path, var, rows, exc) from exc

        out = {"flux": read("flux")}
        if not flux_only:
            out["error"] = read("error")
        out["y"] = (
            np.column_stack([read(t) for t in self.targets])
            if self.targets
            else np.zeros((self.stop - self.start, 0))
        )
        if flux_only:
            return out
        if self.with_snr:
            out["snr"] = read("snr")
        if self.with_mask:
            out["mask"] = read("mask")
        out["variables"] = {name: read(name) for name in self.extra}
        out["digest"] = np.array(digests, dtype=np.uint32)
        return out

    def prefetch(self) -> None:
        """Ask the kernel to start reading this run's flux and error chunk files
        (``posix_fadvise(WILLNEED)``), so that a task folding the chunk before it
        overlaps its products with this read. Best effort: never an error."""
        try:
            group = _open_group(self.path)
            for var in ("flux", "error"):
                path = raw_chunk_file(group[var], slice(self.start, self.stop))
                if path is None:
                    continue
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
        except (OSError, AttributeError, KeyError, ValueError):
            pass

    def variables(self) -> list[str]:
        """The variables :meth:`read` reads, in order."""
        return [
            "flux",
            "error",
            *self.targets,
            *(["snr"] if self.with_snr else []),
            *(["mask"] if self.with_mask else []),
            *self.extra,
        ]


def _written_by_us(path: str, group) -> bool:
    """Whether the tool wrote this store (its marker, on this very directory: see
    :mod:`snr_moe_dask.store.outputs`)."""
    found = group.attrs.get("snr_moe_output")
    try:
        here = os.stat(path)
        return bool(found) and found["inode"] == here.st_ino and found["device"] == here.st_dev
    except (OSError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class ArrayChunk:
    """A run of spectra given as arrays (blocks of dask arrays in the graph, numpy
    arrays when the task runs), read the same way as :class:`StoreRows`.

    A task takes a chunk, calls :meth:`read`, and never asks where the spectra
    came from: :mod:`snr_moe_dask.inputs` makes that choice once.
    """

    start: int
    flux: Any
    error: Any
    y: Any = None
    snr: Any = None
    mask: Any = None
    variables: Any = None

    def read(self, flux_only: bool = False) -> dict[str, np.ndarray]:
        """As :meth:`StoreRows.read`; ``y`` (m, n_targets), no digests (the blocks are
        in memory, so ``flux_only`` reads everything all the same)."""
        flux = np.asarray(self.flux)
        m = len(flux)
        out = {
            "flux": flux,
            "error": np.asarray(self.error),
            "y": np.zeros((m, 0))
            if self.y is None
            else np.asarray(self.y, np.float64).reshape(m, -1),
            "digest": np.zeros(0, dtype=np.uint32),
        }
        if self.snr is not None:
            out["snr"] = np.asarray(self.snr)
        if self.mask is not None:
            out["mask"] = np.asarray(self.mask)
        out["variables"] = {k: np.asarray(v) for k, v in (self.variables or {}).items()}
        return out

    def prefetch(self) -> None:
        """Nothing to ask for: Dask computes the blocks."""


def read_digest(rows: StoreRows) -> np.ndarray:
    """The CRC32C of each variable of one run of spectra (graph task; see
    :meth:`StoreRows.read`)."""
    return rows.read()["digest"]


MAP_BYTES = 1 << 20  # read_raw_chunk maps chunk files from this size up


def raw_chunk_file(arr, rows: slice) -> str | None:
    """The file of the one stored chunk that holds exactly ``rows`` (and every
    column) as raw bytes, or None when zarr must decode the read.

    A chunk qualifies when the array is Zarr v3 in a local directory, on a
    regular chunk grid with one chunk across the columns, stored with the
    ``bytes`` codec alone (no compression), or followed by the ``crc32c``
    checksum codec, in this machine's byte order, and ``rows`` are exactly the
    rows of one chunk. Such a chunk is the C-ordered
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
        or not isinstance(meta.codecs[0], BytesCodec)
        or not (len(meta.codecs) == 1 or (len(meta.codecs) == 2 and _has_crc(meta)))
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
    return path if os.path.isfile(path) else None  # missing_chunks reports a missing one


def _has_crc(meta) -> bool:
    from zarr.codecs import Crc32cCodec

    return isinstance(meta.codecs[-1], Crc32cCodec)


def read_raw_chunk(arr, path: str, rows: slice) -> tuple[np.ndarray, int] | None:
    """Read the rows of one uncompressed chunk file (see :func:`raw_chunk_file`),
    and the CRC32C of the rows read (see :func:`digest`).

    A chunk stored with a ``crc32c`` checksum is verified against it, as zarr
    would: a chunk whose bytes changed fails with an error.

    A chunk of at least ``MAP_BYTES`` is mapped copy-on-write rather than
    copied: its pages are read (from the page cache, or from disk with the
    kernel's read-ahead started at once) as the task first touches them, and
    writes to the array stay private to it. Reading 2 x 64 MB chunks into
    fresh memory costs about 80 ms; mapping them, under 1 ms (BENCHMARKS.md).

    Returns None when the file is not the size of a whole chunk, so that zarr
    reads it and reports what is wrong with it.
    """
    import google_crc32c

    chunk_rows = arr.metadata.chunk_grid.chunk_shape[0]
    shape = (rows.stop - rows.start, *arr.shape[1:])
    crc = _has_crc(arr.metadata)
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        body = chunk_rows * row_bytes
        if size != body + 4 * crc:
            return None
        if size >= MAP_BYTES:
            mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
            mapped.madvise(mmap.MADV_WILLNEED)
            raw = np.frombuffer(mapped, dtype=np.uint8)
        else:
            raw = np.empty(size, dtype=np.uint8)
            view, done = memoryview(raw), 0
            while done < size:
                got = fh.readinto(view[done:])
                if not got:
                    raise ValueError(f"chunk file ended after {done} of {size} bytes")
                done += got
    nbytes = shape[0] * row_bytes
    if crc:
        whole = int(google_crc32c.value(raw[:body]))
        if np.uint32(whole).tobytes() != raw[body:].tobytes():
            raise ValueError(
                "stored and computed CRC32C checksums of the chunk differ (its bytes changed)"
            )
        # A partial last chunk is padded; its digest covers the rows read, like digest().
        value = whole if nbytes == body else int(google_crc32c.value(raw[:nbytes]))
    else:
        value = int(google_crc32c.value(raw[:nbytes]))
    out = raw[:nbytes].view(arr.dtype).reshape(shape)
    return out, value


@functools.lru_cache(maxsize=16)
def _open_group(path: str):
    import zarr

    return zarr.open_group(path, mode="r")
