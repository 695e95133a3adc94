"""The mock survey: determinism, the source study's SNR statistics, and its physics."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from snr_moe_dask import generate_survey, open_spectra
from snr_moe_dask.kernels.binning import assign_bins
from snr_moe_dask.survey import mock


def _all_equal(a, b) -> bool:
    return all(np.array_equal(a[v].values, b[v].values, equal_nan=True) for v in a.data_vars)


def test_bit_identical_across_chunkings_and_workers(tmp_path, client):
    paths = {}
    for name, chunk, scheduler in (("a", 100, "threads"), ("b", 333, "sync")):
        with dask.config.set(scheduler=scheduler):
            paths[name] = generate_survey(
                tmp_path / f"{name}.zarr", 700, pixels=96, chunk_size=chunk, seed=5
            )
    # Two worker processes of a real distributed cluster.
    paths["c"] = generate_survey(tmp_path / "c.zarr", 700, pixels=96, chunk_size=250, seed=5)
    a, b, c = (open_spectra(paths[k]) for k in "abc")
    assert a["flux"].chunks[0][0] == 100 and c["flux"].chunks[0][0] == 250
    assert _all_equal(a, b) and _all_equal(a, c)
    other = generate_survey(tmp_path / "d.zarr", 700, pixels=96, chunk_size=100, seed=6)
    assert not np.array_equal(open_spectra(other)["flux"].values, a["flux"].values)


def test_snr_distribution_matches_source_study():
    """Median 2.93 and bins 29.1 / 38.0 / 29.8 / 3.1 % (1M train set of the study).

    Tolerance: median within 0.08, each bin fraction within 2 percentage points
    (8,000 spectra give a binomial standard error below 0.6 points).
    """
    wave = mock.wavelength_grid(4096)
    out = mock.simulate_spectra(0, 8000, seed=42, wavelength=wave)
    snr = out["snr"]
    assert abs(np.median(snr) - 2.93) < 0.08
    fractions = np.bincount(assign_bins(snr, [2, 4, 7]), minlength=4) / snr.size
    np.testing.assert_allclose(fractions, [0.291, 0.380, 0.298, 0.031], atol=0.02)
    assert 6.0 < snr.max() < 11.0
    assert 20.5 <= out["mag"].min() and out["mag"].max() <= 22.5


def test_noise_is_error_times_noise_level():
    wave = mock.wavelength_grid(512)
    clean = mock.simulate_spectra(0, 300, seed=3, wavelength=wave, noise_level=0.0)
    for level in (1.0, 0.5):
        noisy = mock.simulate_spectra(0, 300, seed=3, wavelength=wave, noise_level=level)
        resid = (noisy["flux"].astype(float) - clean["flux"]) / noisy["error"]
        assert abs(resid.var() - level**2) < 0.02 * level**2
        assert abs(resid.mean()) < 0.01
        np.testing.assert_array_equal(noisy["logg"], clean["logg"])


def _flux(logg, teff=4500.0, mh=-0.5):
    wave = mock.wavelength_grid(4096)
    tpl = mock.get_templates(wave)
    return wave, mock.noiseless_flux(tpl, [logg], [teff], [mh], [21.5], [1.0])[0]


def _depth(wave, flux, lo, hi):
    """Mean flux in a window relative to the mean of the arm: lower = deeper."""
    sel = (wave >= lo) & (wave <= hi)
    return flux[sel].mean() / flux.mean()


@pytest.mark.parametrize(
    "feature, window, teff, deeper_in",
    [
        ("Na I 8183/8195 (dwarfs)", (8180, 8198), 4500, "dwarf"),
        ("K I 7699 (dwarfs)", (7697, 7701), 4500, "dwarf"),
        ("Mg I 8807 (dwarfs)", (8805, 8809), 4500, "dwarf"),
        ("Ca II 8542 core (giants)", (8541.3, 8542.9), 4500, "giant"),
        ("Ca II 8542 damping wings (dwarfs)", (8528, 8536), 4500, "dwarf"),
        ("CN 7875 band (cool giants)", (7876, 7960), 4500, "giant"),
        ("TiO 8432 bands (cool dwarfs)", (8433, 8500), 3900, "dwarf"),
        ("O I 7774 triplet (warm giants)", (7771, 7776), 6000, "giant"),
    ],
)
def test_gravity_sensitive_features_move_with_logg(feature, window, teff, deeper_in):
    wave, giant = _flux(1.5, teff)
    _, dwarf = _flux(4.6, teff)
    d_giant, d_dwarf = _depth(wave, giant, *window), _depth(wave, dwarf, *window)
    if deeper_in == "dwarf":
        assert d_dwarf < d_giant, feature
    else:
        assert d_giant < d_dwarf, feature


def test_error_carries_the_stars_own_photons():
    wave = mock.wavelength_grid(4096)
    tpl = mock.get_templates(wave)
    flux = mock.noiseless_flux(
        tpl, [4.6, 4.6], [4500, 4500], [-0.5, -0.5], [20.5, 20.5], [1.0, 1.0]
    )
    err = mock.flux_error(tpl, flux, [1.0, 1.0])
    # A brighter star has a larger error: photon noise grows with the flux.
    brighter = mock.noiseless_flux(tpl, [4.6], [4500], [-0.5], [20.0], [1.0])
    assert (mock.flux_error(tpl, brighter, [1.0]) > err[:1]).all()
