"""The source study's noise model and its two SNR definitions (numpy in, numpy out).

The noise
---------
The study made its noisy spectra at load time; :func:`noisy_flux` does the
same: the noiseless flux is clipped at 0, NaN errors are filled from the
neighbouring pixel (:func:`fill_nan_errors`), and
``flux + noise_level * error * N(0, 1)`` is rounded once to float32.
Spectrum ``i`` of a shard (its global row index) draws its float32 normals
from its own stream, ``default_rng(SeedSequence(seed, spawn_key=(i,)))``,
the scheme of the project's mock generator, so any chunking of a shard gives
the same bytes.

The SNR
-------
:func:`true_snr` computes the two definitions, over the pixels whose flux
is finite and whose error is finite and positive:

``"median"``
    the median over pixels of noiseless flux / error, the store's ``snr``
    (as the mock generator computes it; ``noise_level`` plays no part);
``"norm"``
    ``||flux|| / ||error * noise_level||``, the study's oracle SNR
    (``||flux|| / ||error||`` when ``noise_level`` is 0).
"""

from __future__ import annotations

import numpy as np

SNR_DEFINITIONS = ("median", "norm")


def spectrum_rng(seed: int, index: int) -> np.random.Generator:
    """Return spectrum ``index``'s own random stream, as the mock generator does."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_noise(seed: int, start: int, n_spectra: int, n_pixels: int) -> np.ndarray:
    """Return standard normal draws for spectra ``start`` to ``start + n_spectra - 1``.

    Returns
    -------
    ndarray of shape (n_spectra, n_pixels), float32
        Row ``r`` is the first ``n_pixels`` float32 draws of
        ``spectrum_rng(seed, start + r)``.
    """
    noise = np.empty((n_spectra, n_pixels), dtype=np.float32)
    for r, row in enumerate(noise):
        spectrum_rng(seed, start + r).standard_normal(out=row, dtype=np.float32)
    return noise


def fill_nan_errors(error: np.ndarray) -> np.ndarray:
    """Fill NaN errors from the neighbouring pixel, as the study did before adding noise.

    A NaN takes the value of the nearest non-NaN pixel before it in its row;
    NaNs at the start of a row take the first non-NaN value. A row of NaNs
    stays NaN.

    Parameters
    ----------
    error : ndarray of shape (n_spectra, n_pixels)

    Returns
    -------
    ndarray, same shape and dtype
    """
    error = np.asarray(error)
    nan = np.isnan(error)
    if not nan.any():
        return error.copy()
    index = np.where(nan, -1, np.arange(error.shape[-1]))
    index = np.maximum.accumulate(index, axis=-1)
    first = np.argmax(~nan, axis=-1)[..., None]
    index = np.where(index < 0, first, index)
    return np.take_along_axis(error, index, axis=-1)


def noisy_flux(
    flux: np.ndarray, error: np.ndarray, noise_level: float, seed: int, start: int
) -> np.ndarray:
    """Add the study's noise to noiseless flux, one random stream per spectrum.

    Parameters
    ----------
    flux, error : ndarray of shape (n, n_pixels)
        Noiseless flux and its 1-sigma error for spectra ``start`` to
        ``start + n - 1`` of a shard.
    noise_level : float
        Multiplies the noise; 0 returns the clipped noiseless flux.
    seed : int
        The ingest's seed (a non-negative integer).
    start : int
        Global index of the first row, so that each spectrum gets its own
        stream whatever the chunking.

    Returns
    -------
    ndarray of shape (n, n_pixels), float32
        ``max(flux, 0) + noise_level * fill_nan_errors(error) * N(0, 1)``,
        computed in float64 and rounded once.

    Raises
    ------
    ValueError
        For mismatched shapes, a negative or non-finite ``noise_level``, or
        a seed or start that is not a non-negative integer.
    """
    flux, error = np.asarray(flux), np.asarray(error)
    if flux.ndim != 2 or error.shape != flux.shape:
        raise ValueError(
            f"noisy_flux: flux has shape {flux.shape} and error {error.shape}; "
            "both must be (n_spectra, n_pixels)"
        )
    check_noise_level(noise_level, "noisy_flux")
    for name, value in (("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"noisy_flux: {name} must be a non-negative integer; got {value!r}")
    clean = np.clip(flux.astype(np.float64), 0.0, None)
    if noise_level == 0:
        return clean.astype(np.float32)
    noise = draw_noise(int(seed), int(start), *flux.shape)
    sigma = fill_nan_errors(error).astype(np.float64)
    return (clean + noise_level * sigma * noise).astype(np.float32)


def check_noise_level(noise_level: float, caller: str) -> None:
    """Raise unless ``noise_level`` is a finite number >= 0."""
    ok = isinstance(noise_level, (int, float, np.integer, np.floating))
    if not ok or isinstance(noise_level, bool) or not np.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"{caller}: noise_level must be a finite number >= 0; got {noise_level!r}")


# --------------------------------------------------------------------------- SNR


def true_snr(
    flux: np.ndarray, error: np.ndarray, definition: str = "median", noise_level: float = 1.0
) -> np.ndarray:
    """Return each spectrum's true SNR by one of the study's definitions.

    Parameters
    ----------
    flux, error : ndarray of shape (n, n_pixels)
        Noiseless flux and its 1-sigma error.
    definition : {"median", "norm"}
        ``"median"``: median over pixels of flux / error (the store's
        ``snr``; ``noise_level`` is not used). ``"norm"``: ``||flux|| /
        ||error * noise_level||`` (``||flux|| / ||error||`` for
        ``noise_level`` 0), the study's oracle SNR.
    noise_level : float

    Returns
    -------
    ndarray of shape (n,), float64
        Over the pixels with finite flux and finite, positive error; NaN
        for a spectrum with none.

    Raises
    ------
    ValueError
        For an unknown definition, mismatched shapes or a bad noise_level.
    """
    if definition not in SNR_DEFINITIONS:
        raise ValueError(
            f"true_snr: definition must be one of {SNR_DEFINITIONS}; got {definition!r}"
        )
    check_noise_level(noise_level, "true_snr")
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    if f.ndim != 2 or e.shape != f.shape:
        raise ValueError(
            f"true_snr: flux has shape {f.shape} and error {e.shape}; "
            "both must be (n_spectra, n_pixels)"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        good = np.isfinite(f) & np.isfinite(e) & (e > 0)
        if definition == "median":
            return median_ignoring(np.where(good, f / np.where(good, e, 1.0), np.nan))
        signal = np.sqrt(np.sum(np.where(good, f * f, 0.0), axis=1))
        noise = np.sqrt(np.sum(np.where(good, e * e, 0.0), axis=1))
        noise *= noise_level if noise_level > 0 else 1.0
        return np.where(good.any(axis=1), signal / noise, np.nan)


def median_ignoring(ratio: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN; NaN for an all-NaN row, without a warning."""
    nan = np.isnan(ratio)
    if not nan.any():
        return np.median(ratio, axis=1)
    out = np.full(ratio.shape[0], np.nan)
    some = ~nan.all(axis=1)
    out[some] = np.nanmedian(ratio[some], axis=1)
    return out
