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


def check_no_bad_pixels(
    flux: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None, start: int = 0
) -> None:
    """Raise on the first bad pixel, naming the variable and the spectrum index.

    Parameters
    ----------
    flux, error, mask : ndarray of shape (n_spectra, n_pixels)
    start : int
        Index of the first spectrum of this block in its store.

    Raises
    ------
    ValueError
        For ``--strict`` runs.
    """
    with np.errstate(invalid="ignore"):
        checks = [
            ("flux", ~np.isfinite(flux), "a non-finite value"),
            ("error", ~np.isfinite(error) | ~(error > 0), "a non-finite or non-positive value"),
        ]
    if mask is not None:
        checks.append(("mask", np.asarray(mask, dtype=bool), "a masked pixel"))
    firsts = []
    for name, bad, what in checks:
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            firsts.append((rows[0], name, what, int(np.argmax(bad[rows[0]]))))
    if firsts:
        row, name, what, pixel = min(firsts)
        raise ValueError(
            f"--strict: variable {name!r} has {what} in spectrum {start + int(row)} "
            f"(pixel {pixel}); fix the store, or drop --strict to impute bad pixels and "
            "exclude spectra over --max-bad-fraction"
        )


def snr_statistics(
    flux: np.ndarray, error: np.ndarray, bad: np.ndarray, *, mean: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the observed SNR and, if asked, the mean of flux / error over good pixels.

    Both come from one division (the gate's ``snr`` features need both).

    Parameters
    ----------
    flux, error : ndarray of shape (n_spectra, n_pixels)
    bad : ndarray of bool, same shape
    mean : bool
        Also return the mean (see :func:`ratio_mean`).

    Returns
    -------
    snr : ndarray of shape (n_spectra,), float64
        The median over good pixels of flux / error (NaN for a spectrum with no
        good pixel).
    mean : ndarray of shape (n_spectra,), float64, or None
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.divide(flux, error, dtype=np.result_type(flux, error, np.float32))
    clean = ~bad.any(axis=1)
    average = None
    if mean:  # before the median reorders the ratio
        if ratio.dtype == np.float32 or not _fits_float32(flux, error):
            # float64 spectra beyond float32's range keep their float64 ratio
            average = ratio_mean(ratio, bad, clean)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                average = ratio_mean(np.divide(flux, error, dtype=np.float32), bad, clean)
    out = np.full(ratio.shape[0], np.nan)
    # ratio is our own temporary, so the median may partition it in place.
    out[clean] = row_median(ratio if clean.all() else ratio[clean])
    dirty = np.flatnonzero(~clean & ~bad.all(axis=1))
    if dirty.size:
        part = ratio[dirty]
        part[bad[dirty]] = np.nan
        out[dirty] = np.nanmedian(part, axis=1, overwrite_input=True)
    return out, average


def _fits_float32(*arrays: np.ndarray) -> bool:
    """Whether every finite value of the arrays is within float32's range."""
    limit = float(np.finfo(np.float32).max)
    with np.errstate(invalid="ignore"):
        return not any(
            ((np.abs(a) > limit) & np.isfinite(a)).any() for a in arrays if a.dtype != np.float32
        )


def ratio_mean(ratio: np.ndarray, bad: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
    """Return the mean of each row of the float32 ``ratio`` over its good pixels.

    Sums in float64. Rows with no bad pixel are summed directly, the others
    with their bad pixels zeroed; NaN for a row with no good pixel.

    Parameters
    ----------
    ratio : ndarray of shape (n_spectra, n_pixels), float32
    bad : ndarray of bool, same shape
    clean : ndarray of bool, shape (n_spectra,), optional
        Rows with no bad pixel, if already known.
    """
    if clean is None:
        clean = ~bad.any(axis=1)
    n = ratio.shape[1] - bad.sum(axis=1)
    total = np.empty(ratio.shape[0])
    if clean.all():
        total[:] = np.einsum("ij->i", ratio, dtype=np.float64)
    else:
        total[clean] = np.einsum("ij->i", ratio[clean], dtype=np.float64)
        dirty = ~clean
        total[dirty] = np.einsum("ij->i", np.where(bad[dirty], 0, ratio[dirty]), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def row_median(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)``, bit for bit, for finite values; ``a`` is reordered.

    One partition per row at the upper middle element, then the largest
    element below it for an even count. numpy's vectorised selection makes
    this about 7x faster than ``np.median``, which partitions at three
    positions and so takes the slow general path (BENCHMARKS.md).
    """
    n = a.shape[1]
    if a.shape[0] == 0 or n == 0:
        return np.full(a.shape[0], np.nan)
    a.partition(n // 2, axis=1)
    upper = a[:, n // 2]
    if n % 2:
        return upper.astype(np.float64)
    lower = a[:, : n // 2].max(axis=1)
    return np.mean(np.stack([lower, upper], axis=1), axis=1).astype(np.float64)
