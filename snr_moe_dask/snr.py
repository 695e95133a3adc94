"""Bad pixels and the observed signal-to-noise ratio (numpy kernels)."""

from __future__ import annotations

import numpy as np


def find_bad_pixels(
    flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Return True where a pixel is bad.

    A pixel is bad when its flux is not finite, its error is not finite or
    not positive, or ``mask`` (True = bad) flags it.

    Parameters
    ----------
    flux, error : ndarray of shape (n_spectra, n_pixels)
    mask : ndarray of bool, same shape, optional

    Returns
    -------
    ndarray of bool, shape (n_spectra, n_pixels)
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flux) | ~(error > 0) | ~np.isfinite(error)
    if mask is not None:
        bad |= mask
    return bad


def compute_snr(flux: np.ndarray, error: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
    """Return each spectrum's observed SNR: the median over good pixels of flux / error.

    Parameters
    ----------
    flux, error : ndarray of shape (n_spectra, n_pixels)
    bad : ndarray of bool, same shape, optional
        Pixels to leave out; by default :func:`find_bad_pixels`.

    Returns
    -------
    ndarray of shape (n_spectra,), float64
        NaN for a spectrum with no good pixel.
    """
    if bad is None:
        bad = find_bad_pixels(flux, error)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.divide(flux, error, dtype=np.result_type(flux, error, np.float32))
    if not bad.any():
        # ratio is our own temporary, so the median may partition it in place.
        return np.median(ratio, axis=1, overwrite_input=True).astype(np.float64)
    ratio[bad] = np.nan
    out = np.full(ratio.shape[0], np.nan)
    some_good = ~bad.all(axis=1)
    out[some_good] = np.nanmedian(ratio[some_good], axis=1, overwrite_input=True)
    return out
