"""Large zero-filled arrays that are cheap to write into (numpy kernel)."""

from __future__ import annotations

import numpy as np


def zeros(shape, dtype=np.float64, order: str = "C") -> np.ndarray:
    """``np.zeros(shape, dtype, order)``, its memory written now.

    ``np.zeros`` takes its memory from ``calloc``, which the kernel maps
    lazily in 4 KiB pages that numpy does not advise for transparent huge
    pages, so the first write into each page faults: 0.14-0.18 s for a
    67 MB Gram triangle. ``np.empty`` memory, which numpy advises for huge
    pages, filled with zeros costs 0.03 s (BENCHMARKS.md). Use it for the
    accumulators and buffers the fit writes into, which are written in full
    anyway; the memory is resident from the start.
    """
    out = np.empty(shape, dtype=dtype, order=order)
    out.fill(0)
    return out
