"""Which spectra of a chunk a fit uses, how their bad pixels are filled, and when
float32 products would lose accuracy (numpy kernels for
:func:`snr_moe_dask.kernels.stats.fold_chunk`)."""

from __future__ import annotations

import numpy as np

from .binning import NO_BIN


def impute_bad_pixels(x: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace bad pixels by the mean of the good ones in the same column.

    After centring on the column means, every imputed pixel is exactly zero,
    so it adds nothing to the products. A column with no good pixel becomes 0.

    Parameters
    ----------
    x : ndarray of shape (m, n_pixels), float64
        Modified in place and returned.
    bad : ndarray of bool, same shape
    """
    if not bad.any():
        return x
    good = ~bad
    x[bad] = 0.0
    counts = good.sum(axis=0)
    means = np.divide(x.sum(axis=0), counts, out=np.zeros(x.shape[1]), where=counts > 0)
    rows, cols = np.nonzero(bad)
    x[rows, cols] = means[cols]
    return x


def select_rows(
    bad: np.ndarray,
    y: np.ndarray,
    bins: np.ndarray,
    n_bins: int,
    max_bad_fraction: float,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decide which spectra of a chunk are used, and count what is excluded.

    Returns
    -------
    use : ndarray of bool, shape (m,)
    counts : dict of str to ndarray of shape (n_bins + 1,)
        ``bad_pixels``, ``excluded_bad``, ``excluded_label`` and
        ``excluded_no_snr``; spectra with
        no bin (NaN SNR) land in the last slot.
    """
    slot = np.where(bins == NO_BIN, n_bins, bins)
    n_bad = bad.sum(axis=1)
    too_bad = n_bad > max_bad_fraction * bad.shape[1]
    no_label = ~np.isfinite(y).all(axis=1)
    use = (bins != NO_BIN) & ~too_bad & ~no_label
    counts = {
        "bad_pixels": np.bincount(slot[use], weights=n_bad[use], minlength=n_bins + 1),
        "excluded_bad": np.bincount(slot[too_bad], minlength=n_bins + 1),
        "excluded_label": np.bincount(slot[no_label & ~too_bad], minlength=n_bins + 1),
        "excluded_no_snr": np.bincount(
            slot[(bins == NO_BIN) & ~too_bad & ~no_label], minlength=n_bins + 1
        ),
    }
    return use, {k: v.astype(np.int64) for k, v in counts.items()}


FLOAT32_LIMITS = (1e-15, 1e15)


def float32_safe(x: np.ndarray) -> bool:
    """Whether float32 products of ``x`` keep float64's relative accuracy.

    Largest magnitudes beyond 1e15 (squares summed over a chunk overflow
    float32, whose range ends at 3.4e38, or values are outside it) or, for a
    chunk not all zero, below 1e-15 (squares sink into float32's subnormals)
    are folded with float64 products instead, so the fit stays correct
    whatever the flux's units.
    """
    if x.size == 0:
        return True
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return True
        lo, hi = float(finite.min()), float(finite.max())
    top = max(abs(lo), abs(hi))
    return top == 0 or FLOAT32_LIMITS[0] < top < FLOAT32_LIMITS[1]
