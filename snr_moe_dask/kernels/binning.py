"""SNR bins: validation of edges and names, and assignment (numpy kernels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NO_BIN = -1


def check_bins(edges: Sequence[float], names: Sequence[str]) -> tuple[list[float], list[str]]:
    """Validate bin edges and names and return them as lists.

    Bins are right-closed: with edges (2, 4, 7) they are (-inf, 2], (2, 4],
    (4, 7] and (7, inf).

    Raises
    ------
    ValueError
        If the edges are not finite and strictly increasing, or the number of
        names is not ``len(edges) + 1``, or names repeat or use "global".
    """
    edges = [float(e) for e in edges]
    names = [str(n) for n in names]
    if not all(np.isfinite(edges)) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must be finite and strictly increasing; got {edges}")
    if len(names) != len(edges) + 1:
        raise ValueError(
            f"{len(edges)} bin edges make {len(edges) + 1} bins, but {len(names)} names were "
            f"given ({names}); pass e.g. --bins 2,4,7 --bin-names X,L,M,H"
        )
    if len(set(names)) != len(names) or "global" in names:
        raise ValueError(f"bin names must be unique and not 'global'; got {names}")
    return edges, names


def assign_bins(snr: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Return each spectrum's bin index, or ``NO_BIN`` (-1) where the SNR is NaN.

    Parameters
    ----------
    snr : ndarray of shape (n_spectra,)
    edges : sequence of float
        Strictly increasing; bins are right-closed.

    Returns
    -------
    ndarray of shape (n_spectra,), int64
    """
    snr = np.asarray(snr, dtype=np.float64)
    bins = np.digitize(snr, np.asarray(edges, dtype=np.float64), right=True).astype(np.int64)
    bins[np.isnan(snr)] = NO_BIN
    return bins


def bin_ranges(edges: Sequence[float]) -> list[tuple[float | None, float | None]]:
    """Return (low, high] for each bin; None stands for an open end."""
    bounds: list[float | None] = [None, *edges, None]
    return list(zip(bounds[:-1], bounds[1:]))
