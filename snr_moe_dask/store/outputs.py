"""Outputs: what a command may replace, and writing it atomically.

Every output the tool writes carries a marker saying what it is
(``{"kind": "model", ...}``): the root attribute ``snr_moe_output`` of a Zarr
store (a file there would trouble zarr, which lists a store's members), or a
manifest file ``.snr-moe-output.json`` in a folder of results. The marker
records the directory's inode and device, which a rename keeps and a copy
does not: attributes travel with the data, and a store a user writes from a
Dataset the tool opened, or copies with ``cp -r``, is the user's.

``--overwrite`` (``overwrite=True``) replaces only an output of the same kind
that carries the marker and holds nothing the manifest does not list, and
never a path that is, holds or sits inside an input of the same command.
Everything is checked before any compute, and a refusal names both paths.

This module needs only the standard library and numpy, so that a worker
writing a checkpoint imports neither xarray nor zarr for it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
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

import numpy as np

MANIFEST = ".snr-moe-output.json"
MARKER_ATTR = "snr_moe_output"
KINDS = (
    "spectra",
    "model",
    "predictions",
    "evaluation",
    "prediction",
    "experiment",
    "checkpoint",
)


class OutputError(ValueError):
    """An output path that the command must not write or replace."""


def marker(kind: str) -> dict:
    """The marker of an output of ``kind`` (a store's root attribute, or a folder's
    manifest)."""
    from ..version import __version__

    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {KINDS}")
    return {"kind": kind, "package": "snr_moe_dask", "version": __version__}


def read_marker(path: str | os.PathLike) -> dict | None:
    """The marker of the output the tool wrote at ``path``, or None if it wrote none
    there (no marker, or one copied from elsewhere)."""
    path = Path(path)
    try:
        if (path / "zarr.json").is_file():
            found = json.loads((path / "zarr.json").read_text())["attributes"][MARKER_ATTR]
        else:
            found = json.loads((path / MANIFEST).read_text())
        here = path.stat()
        if found["inode"] != here.st_ino or found["device"] != here.st_dev:
            return None
        return found
    except (OSError, ValueError, KeyError, TypeError):
        return None


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of output the tool wrote at ``path``, or None if it wrote none there."""
    found = read_marker(path)
    return found.get("kind") if found else None


def write_manifest(path: str | os.PathLike, kind: str) -> None:
    """Mark the directory ``path`` as an output of ``kind`` written by this tool: in
    the root attributes of a Zarr store, else in a manifest file."""
    path = Path(path)
    here = path.stat()
    files = sorted(p.name for p in path.iterdir() if p.name != MANIFEST)
    found = {**marker(kind), "files": files, "inode": here.st_ino, "device": here.st_dev}
    meta = path / "zarr.json"
    if meta.is_file():
        doc = json.loads(meta.read_text())
        doc.setdefault("attributes", {})[MARKER_ATTR] = found
        _write_atomically(meta, json.dumps(doc, indent=2))
    else:
        _write_atomically(path / MANIFEST, json.dumps(found, indent=1))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    kind: str | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Refuse an output path before any compute.

    Parameters
    ----------
    path : path
        Where the command will write.
    overwrite : bool
        Whether an existing output may be replaced.
    kind : str, optional
        What the command writes (see :data:`KINDS`). An existing ``path`` is
        replaced only if it is an output of that kind written by this tool.
        None for a file inside an output being written (no marker check).
    inputs : iterable of paths
        The command's inputs: ``path`` must not be, contain or sit inside any.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    OutputError
        ``path`` overlaps an input, a parent of it is a file, or it exists but
        is not an output of ``kind`` that this tool wrote.
    """
    out = Path(path)
    check_disjoint(out, inputs, role="output")
    target = out.absolute()
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(
                f"cannot write output {str(out)!r}: {str(parent)!r} is a file, not a folder; "
                "choose another path"
            )
    if not (out.exists() or out.is_symlink()):
        return out
    if not overwrite:
        raise FileExistsError(
            f"output {str(out)!r} already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another path"
        )
    if kind is None:
        return out
    found = output_kind(out)
    if found != kind or out.is_symlink():
        what = f"it is an snr-moe {found} output" if found else "it carries no snr-moe marker"
        raise OutputError(
            f"--overwrite replaces only snr-moe's own outputs, and {str(out)!r} is not an "
            f"snr-moe {kind} output ({what}); delete it yourself if it should go, or choose "
            "another path"
        )
    others = _unlisted(out)
    if others:
        raise OutputError(
            f"--overwrite replaces only what snr-moe wrote, and {str(out)!r} also holds "
            f"{', '.join(map(repr, others[:3]))}{', ...' if len(others) > 3 else ''}, which "
            "it did not write; move those elsewhere first, or choose another path"
        )
    return out


def _unlisted(path: Path) -> list[str]:
    """Entries of an output directory that its marker does not list."""
    listed = set((read_marker(path) or {}).get("files", []))
    return sorted(p.name for p in path.iterdir() if p.name != MANIFEST and p.name not in listed)


def check_disjoint(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *, role: str
) -> None:
    """Refuse a path that is, contains or sits inside one of ``inputs``, naming both."""
    out = Path(path)
    target = out.resolve()
    for given in inputs:
        if given is None or str(given) == "":
            continue
        source = Path(given).resolve()
        if target == source:
            how = "is"
        elif source.is_relative_to(target):
            how = "contains"
        elif target.is_relative_to(source):
            how = "is inside"
        else:
            continue
        raise OutputError(
            f"{role} {str(out)!r} {how} the input {str(given)!r} of this command; writing "
            f"it would destroy that input: choose a {role} path outside every input"
        )


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    kind: str | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success, rename it into place.

    ``path`` is checked first (:func:`check_output`). A folder output of
    ``kind`` (a store or a folder) gets its manifest.

    On error the temporary is removed and any previous output is untouched.
    A previous output is swapped with the new one in one step where the file
    system can (Linux ``renameat2(RENAME_EXCHANGE)``), so a crash at any moment
    leaves the old output or the new one under the name. Elsewhere the old one
    is moved aside first and removed once the new one is in place: a crash
    between the two renames leaves it as the hidden sibling ``.NAME.old-*``.
    A run killed before the swap leaves its temporary ``.NAME.tmp-*`` behind.
    """
    inputs = list(inputs)
    final = check_output(path, overwrite, kind=kind, inputs=inputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if kind is not None and tmp.is_dir():
            write_manifest(tmp, kind)
        # Checked again: the body ran for a while, and a path can appear meanwhile.
        check_output(final, overwrite, kind=kind, inputs=inputs)
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
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
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


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON atomically (NaN written as null), inside an output being written."""
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
