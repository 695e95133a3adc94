"""Fingerprints of stores: what identifies a store's content, cheaply.

:func:`store_fingerprint` hashes metadata, chunk names and sizes and, for a
checksummed chunk, its stored CRC32C (4 bytes read per chunk): for a store the
tool wrote it sees every byte. For other stores a fit records each chunk's
digest as it reads it (:func:`snr_moe_dask.store.rows.digest`), and
:func:`chunk_digests` reads a store again to compare.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def store_fingerprint(path: str | os.PathLike) -> str:
    """Return a short hash of a store's metadata, the names and sizes of its chunk
    files, and the stored CRC32C of each checksummed chunk.

    It changes when data are rewritten, appended or re-chunked. For a store
    whose chunks all carry checksums (every store the tool writes, see
    :func:`is_checksummed`) it changes whenever any chunk's bytes change, at
    the cost of reading 4 bytes per chunk. For other stores a fit also
    records each chunk's content (see :func:`snr_moe_dask.store.rows.digest`).
    """
    root = Path(path)
    digest = hashlib.sha256()
    checked = _checksummed_arrays(root)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        digest.update(rel.encode())
        if file.name in _METADATA_FILES:
            digest.update(_metadata_bytes(file))
            continue
        size = file.stat().st_size
        digest.update(str(size).encode())
        if size >= 4 and _array_of(rel, checked):
            with open(file, "rb") as fh:
                fh.seek(size - 4)
                digest.update(fh.read(4))
    return digest.hexdigest()[:16]


_METADATA_FILES = ("zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata")


def _metadata_bytes(file: Path) -> bytes:
    """A metadata file's bytes, without the tool's output marker: the marker names the
    directory (its inode), and a copy of a store has the same content."""
    from .outputs import MARKER_ATTR

    raw = file.read_bytes()
    if file.name != "zarr.json" or MARKER_ATTR.encode() not in raw:
        return raw
    doc = json.loads(raw)
    doc.get("attributes", {}).pop(MARKER_ATTR, None)
    return json.dumps(doc, sort_keys=True).encode()


def _checksummed_arrays(root: Path) -> dict[str, bool]:
    """Each array's folder (relative, with a trailing slash) and whether its chunks
    end with a CRC32C checksum (the ``crc32c`` codec last in a Zarr v3 chain)."""
    out = {}
    for meta in root.rglob("zarr.json"):
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("node_type") != "array":
            continue
        codecs = doc.get("codecs") or []
        rel = meta.parent.relative_to(root).as_posix()
        out[f"{rel}/" if rel != "." else ""] = bool(codecs) and codecs[-1].get("name") == "crc32c"
    return out


def _array_of(rel: str, arrays: dict[str, bool]) -> bool:
    """Whether the chunk file ``rel`` belongs to a checksummed array."""
    best = max((a for a in arrays if rel.startswith(a)), key=len, default=None)
    return bool(best is not None and arrays[best])


def content_hash(digests: np.ndarray) -> str:
    """A short hash of per-chunk digests, in chunk order (a store's content)."""
    return hashlib.sha256(np.ascontiguousarray(digests, dtype=np.uint32).tobytes()).hexdigest()[:16]


def chunk_digests(rows: list) -> list[np.ndarray]:
    """The digests of what each :class:`~snr_moe_dask.store.rows.StoreRows` of ``rows``
    reads (one read of those chunks on the cluster; nothing else is computed)."""
    import dask

    from ..graph import run_graph
    from .rows import read_digest

    tasks = [dask.delayed(read_digest, pure=False)(r) for r in rows]
    return list(run_graph(*tasks, label="checking the content of the store")) if tasks else []


def is_checksummed(path: str | os.PathLike) -> bool:
    """Whether every array of the store checksums its chunks, so that
    :func:`store_fingerprint` sees their content."""
    arrays = _checksummed_arrays(Path(path))
    return bool(arrays) and all(arrays.values())
