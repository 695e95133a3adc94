"""Checkpoints of the fit pass, so a fit survives the loss of its driver.

Each fold chain (one per partition, see :mod:`snr_moe_dask.fit.graph`) saves
its running accumulator every ``every`` chunks and when it completes, to
``DIR/partition-<p>.zarr``, replacing the previous one atomically (a
temporary store renamed into place). A resumed fit loads each partition's
last checkpoint and folds only the chunks after it. The chains fold the same
chunks in the same order either way, so the result is bit-identical to an
uninterrupted fit.

``DIR/checkpoint.json`` records what the checkpoints belong to: the store's
fingerprint, the settings that change the statistics, and the partitions'
chunks. Resuming against anything else is refused with a message that names
the difference.

Accumulators are written as plain Zarr arrays (no pickle): the statistics,
the counts, and the per-chunk records (SNR, routing SNR, gate features)
under ``records/<key>/<chunk>``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from .outputs import atomic_path, quiet_consolidation
from .rows import check_complete

META = "checkpoint.json"
# Statistics barely compress; every chunk carries a checksum and is written.
_CODECS = {"compressors": [Crc32cCodec()], "config": {"write_empty_chunks": True}}
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint directory does not belong to this fit."""


def partition_path(directory: str | os.PathLike, partition: int) -> Path:
    return Path(directory) / f"partition-{partition}.zarr"


def save_accumulator(acc: dict, path: str | os.PathLike, last_chunk: int) -> None:
    """Write an accumulator (statistics, counts and per-chunk records) atomically."""
    # Inside a checkpoint directory prepare() has checked: always ours to replace.
    with atomic_path(path, overwrite=True) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs["last_chunk"] = int(last_chunk)
        for key, value in acc.items():
            if isinstance(value, dict):
                group = root.require_group(f"records/{key}")
                for index, arr in value.items():
                    group.create_array(str(index), data=np.asarray(arr), **_CODECS)
            else:
                root.create_array(key, data=np.asarray(value), **_CODECS)
        with quiet_consolidation():
            zarr.consolidate_metadata(str(tmp))


def load_accumulator(path: str | os.PathLike) -> tuple[dict, int]:
    """Read an accumulator written by :func:`save_accumulator`, and its last chunk."""
    root = zarr.open_group(str(path), mode="r", zarr_format=3)
    check_complete(str(path), root)
    acc: dict = {}
    for name, arr in root.arrays():
        acc[name] = arr[...]
    if "records" in root:
        for key, group in root["records"].groups():
            acc[key] = {int(i): a[...] for i, a in group.arrays()}
    return acc, int(root.attrs["last_chunk"])


def checkpoint_task(acc: dict, path: str, chunk: int) -> dict:
    """Save ``acc`` (folded up to ``chunk``) and pass it on (graph task)."""
    save_accumulator(acc, path, chunk)
    return acc


def resume_task(path: str) -> dict:
    """Load a partition's checkpointed accumulator (graph task)."""
    return load_accumulator(path)[0]


def prepare(
    directory: str | os.PathLike, meta: dict, *, resume: bool, overwrite: bool = False
) -> dict[int, int]:
    """Check or create a checkpoint directory before the fit.

    Parameters
    ----------
    directory : path
    meta : dict
        What the checkpoints belong to (JSON-serializable): store
        fingerprint, settings, partitions.
    resume : bool
        Continue from the checkpoints found; otherwise the directory must be
        new or empty (or ``overwrite``).

    Returns
    -------
    dict of int to int
        For each partition with a checkpoint, the last chunk it holds.

    Raises
    ------
    CheckpointError
        When resuming against another store or other settings, or when the
        directory holds checkpoints and neither ``resume`` nor ``overwrite``
        is given.
    """
    directory = Path(directory)
    meta_path = directory / META
    meta = json.loads(json.dumps({"format_version": FORMAT_VERSION, **meta}))
    if resume and not meta_path.exists():
        raise CheckpointError(
            f"no checkpoint to resume in {str(directory)!r} (no {META}); check the path, or "
            "run without --resume to start a new fit"
        )
    if resume:
        saved = json.loads(meta_path.read_text())
        diffs = [
            f"{key}: checkpoint has {saved.get(key)!r}, this fit has {meta.get(key)!r}"
            for key in sorted(set(saved) | set(meta))
            if saved.get(key) != meta.get(key)
        ]
        if diffs:
            raise CheckpointError(
                f"cannot resume from checkpoint {str(directory)!r}: it was made for another "
                f"fit ({'; '.join(diffs)}); rerun without --resume and with --overwrite to "
                "start over, or resume with the original store and settings"
            )
        done = {}
        for p in range(len(meta["partitions"])):
            path = partition_path(directory, p)
            if path.exists():
                done[p] = int(zarr.open_group(str(path), mode="r").attrs["last_chunk"])
        return done
    if meta_path.exists() and not overwrite:
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} already holds checkpoints; pass --resume "
            "to continue that fit, or --overwrite to start over"
        )
    others = (
        sorted(p.name for p in directory.iterdir() if not _ours(p)) if directory.exists() else []
    )
    if others:
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} holds other files ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); give --checkpoint a new or empty directory"
        )
    remove(directory)
    directory.mkdir(parents=True)
    tmp = directory / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return {}


def verify_restored(directory, store: str, rows: list, restored: list[tuple[int, int]]) -> None:
    """Refuse to resume when a chunk the checkpoints hold has changed since.

    Reads the restored chunks (``rows``, one
    :class:`~snr_moe_dask.store.rows.StoreRows` per ``(partition, chunk)`` of
    ``restored``) again, on the cluster with nothing else computed, and
    compares each variable's digest with the one recorded when it was folded.
    Needed only for stores without chunk checksums, whose fingerprint cannot
    see content.
    """
    from .fingerprint import chunk_digests

    now = chunk_digests(rows)
    saved: dict[int, zarr.Group] = {}
    for (p, i), row, current in zip(restored, rows, now):
        if p not in saved:
            saved[p] = zarr.open_group(str(partition_path(directory, p)), mode="r")
        then = saved[p]["records/digest"][str(i)][...]
        if not np.array_equal(then, current):
            changed = [n for n, a, b in zip(row.variables(), then, current) if a != b]
            raise CheckpointError(
                f"cannot resume from checkpoint {str(directory)!r}: chunk {i} of store "
                f"{store!r} (spectra {row.start}-{row.stop - 1}) changed since it was "
                f"checkpointed (variables {changed}); rerun without --resume and with "
                "--overwrite to start over"
            )


def _ours(path: Path) -> bool:
    """Whether a file in a checkpoint directory is one this module writes."""
    name = path.name.lstrip(".")
    return name.startswith((META, "partition-"))


def remove(directory: str | os.PathLike) -> None:
    """Delete the checkpoints in ``directory`` (only the files this module writes), and
    the directory once empty. The CLI calls it once the model is saved."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if _ours(path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not any(directory.iterdir()):
        directory.rmdir()
