"""What every ingest reader shares: the error type, and the checks of a source file
and of a row range (standard library and numpy only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class IngestError(ValueError):
    """A source file cannot be ingested; the message names the file, what is wrong and the fix."""


def check_file(path: str | os.PathLike, kind: str) -> Path:
    """Return ``path`` as a Path after checking that it is a non-empty regular file.

    Parameters
    ----------
    path : str or path-like
    kind : str
        What the file should be, for the message (``"pfsspec shard"``).

    Raises
    ------
    IngestError
        If the path does not exist, is not a file, or has 0 bytes.
    """
    p = Path(path)
    if not p.exists():
        raise IngestError(f"{kind} {str(p)!r} does not exist; check the path")
    if not p.is_file():
        raise IngestError(f"{kind} {str(p)!r} is not a regular file; pass the file, not a folder")
    if p.stat().st_size == 0:
        raise IngestError(
            f"{kind} {str(p)!r} is empty (0 bytes); the copy or download was interrupted: "
            "copy the file again"
        )
    return p


def read_head(path: Path, size: int = 16) -> bytes:
    """Return the first ``size`` bytes of a file, for messages about what it is."""
    with open(path, "rb") as fh:
        return fh.read(size)


def check_rows(p: Path, start: int, stop: int, n_spectra: int, kind: str) -> None:
    """Raise unless ``0 <= start <= stop <= n_spectra`` are integers."""
    ok = isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
    if not ok or not 0 <= start <= stop <= n_spectra:
        raise IngestError(
            f"{kind} {str(p)!r} has {n_spectra} spectra, so rows [{start!r}, {stop!r}) cannot "
            f"be read; use integers 0 <= start <= stop <= {n_spectra}"
        )
