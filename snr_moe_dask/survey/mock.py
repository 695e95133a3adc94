"""A mock Subaru PFS medium-resolution red-arm survey of faint stars.

This module is pure numpy: it draws stellar labels, builds noiseless spectra
and their per-pixel errors, and adds noise, one spectrum's random stream at a
time. :mod:`snr_moe_dask.survey.generate` turns it into a Dask graph that writes Zarr.

The model
---------
Grid
    ``n_pixels`` wavelengths spaced evenly from 7100 to 8850 Angstrom
    (4096 pixels give 0.43 A per pixel, about 3.7 pixels per resolution
    element at R ~ 5000). Spectra are in the rest frame: the pipeline's
    radial-velocity correction is assumed.
Population
    55 % main-sequence dwarfs (Teff 3800-6500 K, log g falling from 4.85 for
    cool dwarfs to 4.2 for F dwarfs), 10 % subgiants (Teff 4800-6000 K, log g
    3.4-4.1), 25 % red giants (Teff 3800-5200 K, log g rising from 0.5 to
    3.4 along the branch) and 10 % red-clump giants (Teff ~4800 K,
    log g ~2.45). [M/H] ~ N(-0.7, 0.5) clipped to [-2.5, 0.5]; the magnitude
    in the arm is uniform in 20.5-22.5.
Noiseless flux
    A Planck continuum for Teff, normalised to a mean of one over the arm and
    scaled by 10^(-0.4 (mag - 21.5)), times exp(-tau). The optical depth tau
    is a sum of fixed profiles (templates) weighted per star:

    - about 300 weak metal lines (Fe I-like neutrals strengthen with [M/H]
      and falling Teff; Fe II-like ions also strengthen at low log g);
    - the Ca II triplet 8498/8542/8662: a core that deepens with [M/H] and
      towards giants, and pressure-broadened Lorentzian wings that grow with
      log g;
    - the Na I doublet 8183/8195 and K I 7665/7699: strong in cool dwarfs,
      weak in giants;
    - Mg I 8807: deepens with [M/H] and with log g;
    - TiO band heads (7589, 7666, 8432, 8442, 8452, 8859) in stars below
      ~4200 K, somewhat stronger in dwarfs; CN bands (7875, 8125) in cool
      giants;
    - Paschen lines and the O I 7774 triplet in warm stars, the O I triplet
      strengthening at low log g;
    - telluric O2 (A band, 7594-7630) and H2O (8130-8350) absorption scaled
      by a per-spectrum airmass in 1.0-1.5.

    So log g information is real but subtle: it lives in a few features
    whose response to gravity is mixed with Teff and [M/H].
Errors
    Counts per pixel are star ``S = N0 T(l) q F(l)``, sky ``B = N0 T(l) q
    (c + OH(l))`` and read noise ``R``, where ``T`` is the arm's throughput,
    ``q`` a per-spectrum observing-conditions factor (log-normal, 16 %
    scatter), ``c`` the sky continuum and ``OH`` a fixed list of OH Meinel
    emission lines, which are dense in this range. The 1-sigma error in
    flux units is ``sqrt(S + B + R^2) / (N0 T q)``, so the star's own photons
    enter the error, as they do in real pipelines, and the error carries
    label information. The true SNR is the median over pixels of noiseless
    flux / error. Faint stars are sky-limited, so the SNR scales with the star's flux.
    The constants are set so that the default survey's SNR distribution
    matches the source study's (median 2.93, max ~9, bins 29 / 38 / 30 / 3 %).
Noise
    Observed flux = flux + noise_level * error * N(0, 1).

Every spectrum's labels and noise come from its own random stream,
``SeedSequence(seed, spawn_key=(index,))``, so a survey is bit-identical
whatever its chunking or the number of workers that write it.
"""

from __future__ import annotations

import numpy as np

GENERATOR_VERSION = "1.0.0"
INSTRUMENT = "Subaru PFS"
ARM = "medium-resolution red (MR)"
WAVELENGTH_RANGE = (7100.0, 8850.0)
LABELS = ("logg", "teff", "mh", "mag")

# Photon budget, in counts per pixel for a mag-21.5 star with unit throughput.
_N0 = 309.0
_SKY_CONTINUUM = 30.0  # in units of a mag-21.5 star's mean flux
_READ_NOISE = 2.0  # counts
_OBS_SCATTER = 0.16  # log-normal sigma of the observing-conditions factor
_MAG_REF = 21.5
_TEMPLATE_SEED = 20251226  # fixes the line lists; part of the generator version


def wavelength_grid(n_pixels: int = 4096) -> np.ndarray:
    """Return the arm's wavelength grid in Angstrom, shape (n_pixels,), float64."""
    return np.linspace(WAVELENGTH_RANGE[0], WAVELENGTH_RANGE[1], n_pixels)


def spectrum_rng(seed: int, index: int) -> np.random.Generator:
    """Return spectrum ``index``'s own random stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))


# --------------------------------------------------------------------------- labels


def draw_labels(rng: np.random.Generator) -> tuple[float, float, float, float, float, float]:
    """Draw one star: (logg, teff, mh, mag, airmass, observing factor)."""
    kind = rng.random()
    u = rng.random()
    scatter = rng.standard_normal()
    if kind < 0.55:  # dwarf
        teff = 3800.0 + 2700.0 * u
        logg = 4.85 - 0.65 * (teff - 3800.0) / 2700.0 + 0.08 * scatter
    elif kind < 0.65:  # subgiant
        teff = 4800.0 + 1200.0 * u
        logg = 3.4 + 0.7 * rng.random() + 0.05 * scatter
    elif kind < 0.90:  # red giant branch
        teff = 3800.0 + 1400.0 * u
        logg = 0.5 + 2.9 * (teff - 3800.0) / 1400.0 + 0.2 * scatter
    else:  # red clump
        teff = 4800.0 + 150.0 * (2.0 * u - 1.0)
        logg = 2.45 + 0.1 * scatter
    mh = float(np.clip(-0.7 + 0.5 * rng.standard_normal(), -2.5, 0.5))
    mag = 20.5 + 2.0 * rng.random()
    airmass = 1.0 + 0.5 * rng.random()
    obs = float(np.exp(_OBS_SCATTER * rng.standard_normal()))
    return float(np.clip(logg, 0.0, 5.0)), teff, mh, mag, airmass, obs


# --------------------------------------------------------------------------- templates


def _gauss(wave: np.ndarray, center: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((wave - center) / sigma) ** 2)


def _lorentz(wave: np.ndarray, center: float, gamma: float) -> np.ndarray:
    return 1.0 / (1.0 + ((wave - center) / gamma) ** 2)


def _band(wave: np.ndarray, head: float, length: float) -> np.ndarray:
    """A molecular band: a sharp head degrading to the red over ``length`` A."""
    x = (wave - head) / length
    return np.where(x >= 0, np.exp(-x), 0.0) * (1.0 - np.exp(-np.clip(x, 0, None) * 20.0))


_CAT = (8498.02, 8542.09, 8662.14)
_CAT_WEIGHT = (0.6, 1.0, 0.85)
_PASCHEN = (8502.5, 8545.4, 8598.4, 8665.0, 8750.5, 8862.9)
_TIO_HEADS = (7589.0, 7666.0, 8432.0, 8442.0, 8452.0, 8859.0)
_CN_HEADS = (7875.0, 8125.0)


class Templates:
    """Fixed opacity profiles and sky/throughput curves on one wavelength grid.

    Attributes
    ----------
    wave : ndarray of shape (n_pixels,)
    metal : ndarray of shape (n_lines, n_pixels)
        Weak metal-line profiles.
    chi, ion : ndarray of shape (n_lines,)
        Excitation potential (eV) and whether the line is ionised.
    named : dict of str to ndarray of shape (n_pixels,)
        Named features (Ca II core and wings, Na I, K I, Mg I, TiO, CN, Paschen,
        O I, telluric O2 and H2O).
    throughput, sky : ndarray of shape (n_pixels,)
    """

    def __init__(self, wave: np.ndarray) -> None:
        rng = np.random.default_rng(_TEMPLATE_SEED)
        self.wave = wave
        n_lines = 300
        centers = rng.uniform(wave[0], wave[-1], n_lines)
        widths = rng.uniform(0.45, 0.8, n_lines)
        self.metal = np.stack([_gauss(wave, c, s) for c, s in zip(centers, widths)])
        self.metal_depth = rng.lognormal(np.log(0.04), 0.7, n_lines)
        self.chi = rng.uniform(0.0, 5.0, n_lines)
        self.ion = rng.random(n_lines) < 0.2
        named = {
            "cat_core": sum(w * _gauss(wave, c, 0.9) for c, w in zip(_CAT, _CAT_WEIGHT)),
            "cat_wing": sum(w * _lorentz(wave, c, 4.0) for c, w in zip(_CAT, _CAT_WEIGHT)),
            "na": _gauss(wave, 8183.26, 1.0) + _gauss(wave, 8194.82, 1.0),
            "na_wing": _lorentz(wave, 8183.26, 3.0) + _lorentz(wave, 8194.82, 3.0),
            "k": _gauss(wave, 7664.9, 1.0) + 0.7 * _gauss(wave, 7698.96, 1.0),
            "mg": _gauss(wave, 8806.76, 0.9) + 0.4 * _lorentz(wave, 8806.76, 2.5),
            "tio": sum(_band(wave, h, 60.0) for h in _TIO_HEADS),
            "cn": sum(_band(wave, h, 90.0) for h in _CN_HEADS),
            "paschen": sum(_lorentz(wave, c, 3.5) for c in _PASCHEN),
            "oi": sum(_gauss(wave, c, 0.8) for c in (7771.94, 7774.17, 7775.39)),
            "o2": np.where((wave > 7594) & (wave < 7630), 1.0, 0.0)
            * (0.6 + 0.4 * np.cos((wave - 7594) * 2.1) ** 2),
            "h2o": np.where((wave > 8130) & (wave < 8350), 1.0, 0.0)
            * (0.3 + 0.7 * rng.random(wave.size) ** 4),
        }
        self.named = named
        # Detector QE falls to the red; the peak sits near 7800 A.
        self.throughput = 0.3 + 0.7 * np.exp(-0.5 * ((wave - 7800.0) / 1100.0) ** 2)
        # OH Meinel bands: clusters of lines, dense through this range.
        oh_centers = np.concatenate(
            [rng.normal(c, 45.0, 25) for c in (7250, 7330, 7600, 7800, 7950, 8350, 8450, 8800)]
        )
        oh_strength = rng.lognormal(np.log(6.0), 1.0, oh_centers.size)
        oh = sum(s * _gauss(wave, c, 0.7) for c, s in zip(oh_centers, oh_strength))
        self.sky = _SKY_CONTINUUM + oh


_TEMPLATE_CACHE: dict[tuple[float, float, int], Templates] = {}


def get_templates(wave: np.ndarray) -> Templates:
    """Return (and cache) the templates for a wavelength grid."""
    key = (float(wave[0]), float(wave[-1]), int(wave.size))
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE[key] = Templates(wave)
    return _TEMPLATE_CACHE[key]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def feature_strengths(logg, teff, mh) -> dict[str, np.ndarray]:
    """Return each named feature's optical-depth weight for arrays of labels.

    This is where the physics of gravity sensitivity lives; tests check that
    each feature moves with log g the way this says.
    """
    logg, teff, mh = (np.asarray(a, dtype=float) for a in (logg, teff, mh))
    metal = 10.0 ** (0.35 * mh)
    cool = np.clip(4800.0 / teff, 0.5, 1.5)
    dwarf = _sigmoid((logg - 3.8) / 0.3)
    giant = _sigmoid((3.0 - logg) / 0.4)
    return {
        # CaT core: deeper in giants (the classic luminosity indicator).
        "cat_core": 0.9 * metal * (1.0 + 0.12 * (4.5 - logg)),
        # CaT damping wings: broader at high pressure, i.e. high log g.
        "cat_wing": 0.25 * metal * 10.0 ** (0.2 * (logg - 4.5)),
        "na": (0.1 + 0.7 * dwarf) * cool**3 * metal,
        "na_wing": 0.15 * dwarf * cool**4 * metal,
        "k": (0.1 + 0.5 * dwarf) * cool**3 * metal,
        "mg": 0.5 * metal * (1.0 + 0.15 * (logg - 3.0)),
        "tio": 0.6 * _sigmoid((4200.0 - teff) / 120.0) * (1.0 + 0.3 * dwarf),
        "cn": 0.25 * giant * _sigmoid((5200.0 - teff) / 250.0) * metal,
        "paschen": 0.5 * _sigmoid((teff - 5800.0) / 250.0) * (1.0 + 0.2 * (logg - 4.0)),
        "oi": 0.4 * _sigmoid((teff - 5500.0) / 300.0) * (1.0 + 0.4 * (4.0 - logg)),
    }


def metal_strengths(tpl: Templates, logg, teff, mh) -> np.ndarray:
    """Return the weak-line optical depths, shape (n_spectra, n_lines)."""
    logg, teff, mh = (np.asarray(a, dtype=float)[:, None] for a in (logg, teff, mh))
    boltzmann = np.exp(-tpl.chi[None, :] * (5040.0 / teff - 5040.0 / 5000.0))
    gravity = np.where(tpl.ion[None, :], 10.0 ** (-0.25 * (logg - 4.0)), 1.0)
    return tpl.metal_depth[None, :] * 10.0 ** (0.8 * mh) * boltzmann * gravity


def noiseless_flux(tpl: Templates, logg, teff, mh, mag, airmass) -> np.ndarray:
    """Return noiseless flux, shape (n_spectra, n_pixels), float64."""
    wave = tpl.wave
    teff = np.asarray(teff, dtype=float)
    # Planck continuum, normalised to a mean of one over the arm.
    x = 1.438777e8 / (wave[None, :] * teff[:, None])
    continuum = wave[None, :] ** -5 / np.expm1(x)
    continuum /= continuum.mean(axis=1, keepdims=True)
    strengths = feature_strengths(logg, teff, mh)
    names = list(strengths)
    weights = np.column_stack([strengths[k] for k in names])
    profiles = np.stack([tpl.named[k] for k in names])
    tau = weights @ profiles + metal_strengths(tpl, logg, teff, mh) @ tpl.metal
    telluric = (
        np.asarray(airmass, dtype=float)[:, None]
        * (0.5 * tpl.named["o2"] + 0.15 * tpl.named["h2o"])[None, :]
    )
    scale = 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - _MAG_REF))
    return scale[:, None] * continuum * np.exp(-(tau + telluric))


def flux_error(tpl: Templates, flux: np.ndarray, obs) -> np.ndarray:
    """Return the 1-sigma error of ``flux`` in flux units, same shape."""
    gain = _N0 * tpl.throughput[None, :] * np.asarray(obs, dtype=float)[:, None]
    counts = gain * flux + gain * tpl.sky[None, :] + _READ_NOISE**2
    return np.sqrt(counts) / gain


def simulate_spectra(
    start: int,
    stop: int,
    *,
    seed: int,
    wavelength: np.ndarray,
    noise_level: float = 1.0,
) -> dict[str, np.ndarray]:
    """Simulate spectra ``start`` to ``stop - 1`` of a survey.

    Parameters
    ----------
    start, stop : int
        Global spectrum indices; each spectrum draws from its own stream, so
        the output does not depend on how a survey is split into calls.
    seed : int
        The survey's seed.
    wavelength : ndarray of shape (n_pixels,)
    noise_level : float
        Multiplies the Gaussian noise added to the noiseless flux.

    Returns
    -------
    dict
        ``flux``, ``error`` of shape (n, n_pixels) float32; ``logg``, ``teff``,
        ``mh``, ``mag``, ``snr`` of shape (n,) float64.
    """
    n = stop - start
    n_pixels = wavelength.size
    rngs = [spectrum_rng(seed, i) for i in range(start, stop)]
    labels = np.array([draw_labels(r) for r in rngs]).reshape(n, 6)
    logg, teff, mh, mag, airmass, obs = labels.T
    tpl = get_templates(wavelength)
    clean = noiseless_flux(tpl, logg, teff, mh, mag, airmass)
    error = flux_error(tpl, clean, obs)
    noise = np.empty((n, n_pixels), dtype=np.float32)
    for row, r in zip(noise, rngs):
        r.standard_normal(out=row, dtype=np.float32)
    error32 = error.astype(np.float32)
    flux = (clean + noise_level * error32 * noise).astype(np.float32)
    return {
        "flux": flux,
        "error": error32,
        "logg": logg,
        "teff": teff,
        "mh": mh,
        "mag": mag,
        "snr": np.median(clean / error32, axis=1),
    }
