"""Ingest readers on real files of each layout: pfsspec HDF5 shards, Subaru-PFS FITS
products (pfsArm, pfsMerged, pfsObject, pfsSingle), the study's noise and SNR, the
resampling kernel against a slow reference loop and analytic cases, and one clear
one-line error for every kind of bad file."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_fixtures import (
    MASK_PLANES,
    make_fiber_array,
    make_fiber_array_set,
    pfs_arm_name,
    pfs_object_name,
    wavelength_array_header,
    write_hdus,
    write_pfs_arm,
    write_pfs_merged,
    write_pfs_object,
    write_pfs_single,
    write_pfsspec_shard,
)

from snr_moe_dask.ingest import pfs, pfsspec
from snr_moe_dask.ingest import resample as rs
from snr_moe_dask.ingest.pfsspec import IngestError


def assert_one_line_error(excinfo, path) -> None:
    """The message is one line and names the file."""
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert isinstance(excinfo.value, ValueError)


# =========================================================================== pfsspec


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "dataset.h5"
    return path, write_pfsspec_shard(path)


def test_scan_shard_describes_the_shard(shard):
    path, truth = shard
    info = pfsspec.scan_shard(path)
    assert (info.n_spectra, info.n_pixels) == truth["flux"].shape
    np.testing.assert_array_equal(info.wavelength, truth["wave"])
    assert info.columns == tuple(truth["params"].columns)
    assert info.missing_columns == ()
    assert info.flux_dtype == np.float64


@pytest.mark.parametrize("rows", [(0, 12), (3, 7), (5, 5), (11, 12)])
def test_read_shard_returns_the_written_rows_under_store_names(shard, rows):
    path, truth = shard
    start, stop = rows
    out = pfsspec.read_shard(path, start, stop)
    np.testing.assert_array_equal(out["flux"], truth["flux"][start:stop])
    np.testing.assert_array_equal(out["error"], truth["error"][start:stop])  # NaN where NaN
    np.testing.assert_array_equal(out["wavelength"], truth["wave"])
    params = truth["params"].iloc[start:stop]
    for column, name in pfsspec.LABEL_COLUMNS.items():
        assert out[name].dtype == np.float64
        np.testing.assert_array_equal(out[name], params[column].to_numpy())
    assert "snr" not in out and "snr_table" in out  # the table's snr is not the true snr


def test_read_shard_reads_only_the_rows_asked_for(shard, monkeypatch):
    """Shards are up to 19 GB: flux and error are read as row hyperslabs, nothing whole."""
    path, truth = shard
    info = pfsspec.scan_shard(path)
    selections = []
    getitem = h5py.Dataset.__getitem__

    def recording(self, args, *rest, **kwargs):
        selections.append((self.name, args))
        return getitem(self, args, *rest, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    out = pfsspec.read_shard(path, 4, 9, info=info)
    assert selections == [
        ("/dataset/arrays/flux/value", slice(4, 9)),
        ("/dataset/arrays/error/value", slice(4, 9)),
    ]
    np.testing.assert_array_equal(out["flux"], truth["flux"][4:9])


def test_read_shard_reads_a_missing_optional_column_as_nan(tmp_path):
    path = tmp_path / "dataset.h5"
    write_pfsspec_shard(path, columns=("T_eff", "log_g", "M_H", "mag"))
    info = pfsspec.scan_shard(path)
    assert info.missing_columns == ("a_M", "C_M", "snr", "redshift")
    out = pfsspec.read_shard(path, 2, 6, info=info)
    assert np.isnan(out["a_m"]).all() and np.isnan(out["snr_table"]).all()
    assert out["a_m"].shape == (4,)
    assert np.isfinite(out["teff"]).all()


def test_read_shard_reads_a_fixed_format_label_table(tmp_path):
    path = tmp_path / "dataset.h5"
    truth = write_pfsspec_shard(path)
    truth["params"].to_hdf(path, key="dataset/params", format="fixed")
    out = pfsspec.read_shard(path, 3, 8)
    np.testing.assert_array_equal(out["logg"], truth["params"]["log_g"].to_numpy()[3:8])


def test_the_package_and_the_kernel_import_no_file_library():
    code = (
        "import sys, snr_moe_dask.ingest, snr_moe_dask.ingest.resample; "
        "print(sorted(m for m in ('h5py', 'astropy', 'tables') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_read_shard_keeps_float32_native(tmp_path):
    path = tmp_path / "dataset.h5"
    truth = write_pfsspec_shard(path, flux_dtype=np.float32)
    out = pfsspec.read_shard(path, 0, 4)
    assert out["flux"].dtype == np.float32 and out["flux"].dtype.isnative
    np.testing.assert_array_equal(out["flux"], truth["flux"][:4])


def test_noisy_flux_is_bit_identical_for_any_chunking(shard):
    path, _ = shard
    info = pfsspec.scan_shard(path)
    whole = pfsspec.read_shard(path, 0, 12, info=info)
    expected = pfsspec.noisy_flux(whole["flux"], whole["error"], 1.0, seed=7, start=0)
    for edges in ([0, 5, 9, 12], [0, 1, 2, 3, 12], [0, 12]):
        parts = []
        for a, b in zip(edges[:-1], edges[1:]):
            chunk = pfsspec.read_shard(path, a, b, info=info)
            parts.append(pfsspec.noisy_flux(chunk["flux"], chunk["error"], 1.0, seed=7, start=a))
        got = np.concatenate(parts)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_noisy_flux_is_the_studys_formula(shard):
    _, truth = shard
    flux, error = truth["flux"], truth["error"]
    got = pfsspec.noisy_flux(flux, error, 0.5, seed=11, start=100)
    for i in range(flux.shape[0]):
        rng = np.random.default_rng(np.random.SeedSequence(11, spawn_key=(100 + i,)))
        z = rng.standard_normal(flux.shape[1], dtype=np.float32)
        e = error[i].copy()
        if i == 1:
            e[0] = e[1]  # a leading NaN takes the next pixel's error
        if i == 2:
            e[5:7] = e[4]  # others take the previous pixel's
        expected = (np.maximum(flux[i], 0.0) + 0.5 * e * z.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(got[i], expected)
    assert np.isfinite(got).all()


def test_noisy_flux_with_noise_level_zero_is_the_clipped_flux(shard):
    _, truth = shard
    got = pfsspec.noisy_flux(truth["flux"], truth["error"], 0.0, seed=1, start=0)
    np.testing.assert_array_equal(got, np.clip(truth["flux"], 0, None).astype(np.float32))
    assert (got[0, :3] == 0).all()


def test_noisy_flux_streams_follow_the_global_index(shard):
    _, truth = shard
    flux, error = truth["flux"], truth["error"]
    full = pfsspec.noisy_flux(flux, error, 1.0, seed=3, start=0)
    np.testing.assert_array_equal(pfsspec.noisy_flux(flux[4:6], error[4:6], 1.0, 3, 4), full[4:6])
    assert not np.array_equal(pfsspec.noisy_flux(flux, error, 1.0, 4, 0), full)
    assert not np.array_equal(pfsspec.noisy_flux(flux, error, 1.0, 3, 1)[:-1], full[1:])


def test_fill_nan_errors_takes_the_neighbouring_pixel():
    nan = np.nan
    error = np.array(
        [[nan, 1.0, nan, nan, 4.0, nan], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [nan] * 6],
        dtype=np.float32,
    )
    got = pfsspec.fill_nan_errors(error)
    expected = np.array([[1, 1, 1, 1, 4, 4], [2, 3, 4, 5, 6, 7], [nan] * 6], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32
    assert np.isnan(error[0, 0])  # the input is not modified


def test_true_snr_definitions_match_direct_formulas(shard):
    _, truth = shard
    flux, error = truth["flux"], truth["error"]
    good = np.isfinite(error)
    median = pfsspec.true_snr(flux, error, "median")
    norm = pfsspec.true_snr(flux, error, "norm", noise_level=2.0)
    norm0 = pfsspec.true_snr(flux, error, "norm", noise_level=0.0)
    for i in range(flux.shape[0]):
        f, e = flux[i][good[i]], error[i][good[i]]
        assert median[i] == np.median(f / e)
        np.testing.assert_allclose(norm[i], np.linalg.norm(f) / np.linalg.norm(e * 2.0), rtol=1e-14)
        np.testing.assert_allclose(norm0[i], np.linalg.norm(f) / np.linalg.norm(e), rtol=1e-14)
    # The store's definition, as the mock generator computes it: float64 flux / float32 error.
    e32 = np.where(good, error, 1.0).astype(np.float32)
    np.testing.assert_array_equal(
        pfsspec.true_snr(flux[3:], e32[3:]), np.median(flux[3:] / e32[3:], axis=1)
    )
    assert np.isnan(pfsspec.true_snr(np.ones((1, 3)), np.zeros((1, 3)), "median")).all()
    assert np.isnan(pfsspec.true_snr(np.ones((1, 3)), np.zeros((1, 3)), "norm")).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, e: pfsspec.true_snr(f, e, "mean"), r"definition must be one of \('median', "),
        (
            lambda f, e: pfsspec.true_snr(f, e[:, :-1]),
            r"flux has shape \(2, 5\) and error \(2, 4\)",
        ),
        (lambda f, e: pfsspec.true_snr(f, e, "norm", -1.0), r"noise_level must be a finite number"),
        (lambda f, e: pfsspec.noisy_flux(f, e, np.nan, 1, 0), r"noise_level must be a finite"),
        (lambda f, e: pfsspec.noisy_flux(f, e, 1.0, -1, 0), r"seed must be a non-negative integer"),
        (lambda f, e: pfsspec.noisy_flux(f, e, 1.0, 1, 2.5), r"start must be a non-negative"),
        (lambda f, e: pfsspec.noisy_flux(f[0], e[0], 1.0, 1, 0), r"both must be \(n_spectra, n_"),
    ],
)
def test_noise_and_snr_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones((2, 5)), np.ones((2, 5)))


def _replace(path, name, data) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        if data is not None:
            f[name] = data


def _damage_shard(path, case) -> None:
    """Write a shard, then damage it the way ``case`` says."""
    if case == "missing":
        return
    if case == "empty":
        path.write_bytes(b"")
        return
    if case == "text":
        path.write_text("T_eff,log_g\n5000,4.5\n")
        return
    if case == "fits":
        fits.HDUList([fits.PrimaryHDU(np.zeros(3))]).writeto(path)
        return
    truth = write_pfsspec_shard(path)
    n, n_pix = truth["flux"].shape
    if case == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case in ("no_wave", "no_flux", "no_error"):
        name = {"no_wave": "wave", "no_flux": "flux", "no_error": "error"}[case]
        target = "spectrumdataset/wave" if name == "wave" else f"dataset/arrays/{name}/value"
        _replace(path, target, None)
    elif case == "no_params":
        _replace(path, "dataset/params", None)
    elif case == "params_not_table":
        _replace(path, "dataset/params", None)
        _replace_new(path, "dataset/params", np.zeros(n))
    elif case == "error_shape":
        _replace(path, "dataset/arrays/error/value", np.ones((n, n_pix - 1)))
    elif case == "wave_length":
        _replace(path, "spectrumdataset/wave", np.linspace(7100, 8850, n_pix + 1))
    elif case == "wave_2d":
        _replace(path, "spectrumdataset/wave", np.ones((2, n_pix)))
    elif case == "wave_order":
        wave = truth["wave"].copy()
        wave[7] = wave[6]
        _replace(path, "spectrumdataset/wave", wave)
    elif case == "wave_nan":
        wave = truth["wave"].copy()
        wave[0] = np.nan
        _replace(path, "spectrumdataset/wave", wave)
    elif case == "params_rows":
        truth["params"].iloc[:-1].to_hdf(path, key="dataset/params", format="table")
    elif case == "no_teff":
        truth["params"].drop(columns="T_eff").to_hdf(path, key="dataset/params", format="table")
    elif case == "zero_spectra":
        for name in ("flux", "error"):
            _replace(path, f"dataset/arrays/{name}/value", np.zeros((0, n_pix)))
    elif case == "int_flux":
        _replace(path, "dataset/arrays/flux/value", np.ones((n, n_pix), dtype=np.int32))
    else:
        raise ValueError(case)


def _replace_new(path, name, data) -> None:
    with h5py.File(path, "a") as f:
        f[name] = data


BAD_SHARDS = {
    "missing": r"does not exist; check the path",
    "empty": r"is empty \(0 bytes\).*copy the file again",
    "text": r"is not an HDF5 file \(it starts with b'T_eff,log_g",
    "fits": r"is not an HDF5 file \(it starts with b'SIMPLE.*FITS pipeline products",
    "truncated": r"cannot be read as HDF5 .*truncated: copy it again",
    "no_wave": r"has no dataset 'spectrumdataset/wave' \(the wavelength grid",
    "no_flux": r"has no dataset 'dataset/arrays/flux/value' \(the noiseless flux",
    "no_error": r"has no dataset 'dataset/arrays/error/value' \(the 1-sigma error",
    "no_params": r"has no label table 'dataset/params'; .*format='table'",
    "params_not_table": r"has a 'dataset/params' that is not a pandas table",
    "error_shape": r"has 'dataset/arrays/error/value' of shape \(12, 39\) but .* of \(12, 40\)",
    "wave_length": r"has 40 pixels per spectrum in .* but 41 wavelengths in 'spectrumdataset/wave'",
    "wave_2d": r"has 'spectrumdataset/wave' of shape \(2, 40\); expected \(n_pixels,\)",
    "wave_order": r"has a wavelength grid 'spectrumdataset/wave' that is not finite and strictly "
    r"increasing at pixel 7 \(.* then .*\)",
    "wave_nan": r"not finite and strictly increasing at pixel 0 \(nan\)",
    "params_rows": r"has 12 spectra in .* but 11 rows in 'dataset/params'.*one row per spectrum",
    "no_teff": r"has no column 'T_eff' in 'dataset/params' \(its columns are",
    "zero_spectra": r"has no spectra .*shape \(0, 40\).*leave empty shards out",
    "int_flux": r"has 'dataset/arrays/flux/value' of dtype int32; expected floating point",
}


@pytest.mark.parametrize("case", BAD_SHARDS)
def test_every_bad_shard_gives_one_clear_error(tmp_path, case):
    path = tmp_path / "dataset.h5"
    _damage_shard(path, case)
    with pytest.raises(IngestError, match=BAD_SHARDS[case]) as excinfo:
        pfsspec.scan_shard(path)
    assert_one_line_error(excinfo, path)
    assert str(excinfo.value).startswith(f"pfsspec shard '{path}' ")


@pytest.mark.parametrize("rows", [(5, 13), (-1, 3), (4, 2), (0.0, 3)])
def test_read_shard_rejects_rows_outside_the_shard(shard, rows):
    path, _ = shard
    with pytest.raises(
        IngestError, match=r"has 12 spectra, so rows \[.*\) cannot be read; use integers"
    ) as exc:
        pfsspec.read_shard(path, *rows)
    assert_one_line_error(exc, path)


# =========================================================================== PFS FITS


def expected_mask(truth, ignore_bits=0):
    variance = truth["variance"]
    with np.errstate(invalid="ignore"):
        return (
            ((truth["bits"].astype(np.int64) & ~ignore_bits) != 0)
            | ~np.isfinite(variance)
            | ~(variance > 0)
            | ~np.isfinite(truth["flux"])
        )


def test_scan_pfs_arm_reports_kind_arm_grid_and_identity(tmp_path):
    path, truth = write_pfs_arm(tmp_path)
    info = pfs.scan_pfs(path)
    assert (info.kind, info.arm, info.n_spectra, info.n_pixels) == ("pfsArm", "m", 6, 50)
    assert not info.shared_wavelength and info.wavelength_source == "WAVELENGTH"
    np.testing.assert_array_equal(info.wavelength, truth["wavelength_nm"] * 10.0)
    assert info.identity == {"visit": 123, "arm": "m", "spectrograph": 1, "pfsDesignId": 0x1234ABCD}
    np.testing.assert_array_equal(info.fiber_id, truth["fiber_id"])
    assert list(info.object_id) == [f"pfsArm-000123-m1-{f:04d}" for f in truth["fiber_id"]]
    assert info.mask_planes == MASK_PLANES
    assert info.has_norm


def test_read_pfs_arm_converts_what_was_written(tmp_path):
    path, truth = write_pfs_arm(tmp_path)
    with fits.open(path) as hdul:  # what is on disk is big-endian
        assert hdul["FLUX"].data.dtype.byteorder == ">"
        assert hdul["COVAR"].data.dtype.byteorder == ">"
    out = pfs.read_pfs(path)
    for name, dtype in (("flux", np.float32), ("error", np.float32), ("mask", bool)):
        assert out[name].dtype == dtype and out[name].dtype.isnative, name
        assert out[name].shape == (6, 50)
    np.testing.assert_array_equal(out["flux"], truth["flux"])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out["error"], np.sqrt(truth["variance"]))
    np.testing.assert_array_equal(out["mask"], expected_mask(truth))
    assert out["mask"].any() and not out["mask"].all()
    np.testing.assert_array_equal(out["wavelength"], truth["wavelength_nm"] * 10.0)
    assert out["wavelength"].dtype == np.float64
    assert list(out["object_id"]) == [f"pfsArm-000123-m1-{f:04d}" for f in truth["fiber_id"]]
    for label in ("logg", "teff", "mh", "mag"):
        assert out[label].shape == (6,) and np.isnan(out[label]).all()


@pytest.mark.parametrize("rows", [slice(2, 5), (2, 5), slice(2, 5, 1), range(2, 5)])
def test_read_pfs_rows_are_the_rows_of_a_full_read(tmp_path, rows):
    path, _ = write_pfs_arm(tmp_path)
    info = pfs.scan_pfs(path)
    full = pfs.read_pfs(path, info=info)
    rows = (rows.start, rows.stop) if isinstance(rows, range) else rows
    part = pfs.read_pfs(path, rows, info=info)
    for name in ("flux", "error", "mask", "wavelength", "object_id"):
        np.testing.assert_array_equal(part[name], full[name][2:5], err_msg=name)
    assert pfs.read_pfs(path, slice(None), info=info)["flux"].shape == (6, 50)
    assert pfs.read_pfs(path, (3, 3), info=info)["flux"].shape == (0, 50)


def test_read_pfs_ignores_named_mask_planes_and_applies_norm(tmp_path):
    path, truth = write_pfs_arm(tmp_path)
    out = pfs.read_pfs(path, ignore_flags=("REFLINE",))
    reflines = 1 << MASK_PLANES["REFLINE"]
    np.testing.assert_array_equal(out["mask"], expected_mask(truth, ignore_bits=reflines))
    assert out["mask"].sum() < pfs.read_pfs(path)["mask"].sum()
    normed = pfs.read_pfs(path, apply_norm=True)
    plain = pfs.read_pfs(path)
    good = ~normed["mask"]
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(normed["flux"][good], (plain["flux"] / truth["norm"])[good])
        np.testing.assert_allclose(normed["error"][good], (plain["error"] / truth["norm"])[good])
    assert normed["mask"][0, 1]  # its norm is 0


def test_scan_pfs_merged_shares_one_grid(tmp_path):
    path, truth = write_pfs_merged(tmp_path)
    info = pfs.scan_pfs(path)
    assert (info.kind, info.arm) == ("pfsMerged", "bmn")
    assert info.shared_wavelength and info.wavelength.shape == (50,)
    np.testing.assert_array_equal(info.wavelength, truth["wavelength_nm"][0] * 10.0)
    assert info.object_id[0] == f"pfsMerged-000123-{truth['fiber_id'][0]:04d}"
    out = pfs.read_pfs(path, (1, 4), info=info)
    assert out["wavelength"].shape == (3, 50)
    np.testing.assert_array_equal(out["wavelength"], truth["wavelength_nm"][1:4] * 10.0)


@pytest.mark.parametrize("layout", ["hdu", "wcs", "legacy"])
def test_pfs_object_in_each_wavelength_layout(tmp_path, layout):
    path, truth = write_pfs_object(tmp_path, wavelength=layout)
    info = pfs.scan_pfs(path)
    assert (info.kind, info.n_spectra, info.n_pixels) == ("pfsObject", 1, 60)
    assert info.wavelength_source == ("WAVELENGTH" if layout == "hdu" else "WCS")
    np.testing.assert_allclose(info.wavelength, truth["wavelength_nm"] * 10.0, rtol=1e-13)
    assert info.identity["catId"] == 1 and info.identity["objId"] == 0x02468ACE1234ABCD
    assert info.identity["patch"] == "2,2" and info.identity["tract"] == 7621
    assert list(info.object_id) == ["pfsObject-00001-07621-2,2-02468ace1234abcd"]
    assert info.arm == (None if layout == "legacy" else "bmn")
    assert info.mask_planes == MASK_PLANES
    out = pfs.read_pfs(path)
    assert out["flux"].shape == out["mask"].shape == out["wavelength"].shape == (1, 60)
    np.testing.assert_array_equal(out["flux"][0], truth["flux"])
    np.testing.assert_array_equal(out["mask"][0], expected_mask(truth))
    good = ~out["mask"][0]
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out["error"][0][good], np.sqrt(truth["variance"])[good])


def test_wcs_wavelengths_follow_the_datamodels_readers():
    n = 50
    header = wavelength_array_header(600.0, 900.0, n)  # WavelengthArray.toFitsHeader
    np.testing.assert_allclose(pfs.wavelength_from_wcs(header, n), np.linspace(600, 900, n))
    # The datamodel's own test of that header: sample ii is astropy's pixel_to_world(ii + 1).
    import astropy.units as u
    import astropy.wcs

    world = astropy.wcs.WCS(header).pixel_to_world(np.arange(n) + 1.0).to(u.nm).value
    np.testing.assert_allclose(pfs.wavelength_from_wcs(header, n), world, rtol=1e-12)
    legacy = fits.Header({"CRVAL1": 700.0, "CRPIX1": 0.0, "CD1_1": 0.5})  # old PfsObject.read
    np.testing.assert_allclose(pfs.wavelength_from_wcs(legacy, 4), 700.0 + 0.5 * np.arange(1, 5))
    assert pfs.wavelength_from_wcs(fits.Header(), 4) is None


def test_pfs_single_names_its_visit(tmp_path):
    path, truth = write_pfs_single(tmp_path)
    info = pfs.scan_pfs(path)
    assert info.kind == "pfsSingle" and info.identity["visit"] == 101
    assert list(info.object_id) == ["pfsSingle-00001-07621-2,2-02468ace1234abcd-000101"]


def test_kind_comes_from_the_structure_when_a_file_is_renamed(tmp_path):
    arm, _ = write_pfs_arm(tmp_path)
    obj, _ = write_pfs_object(tmp_path / "", wavelength="hdu")
    renamed_arm = shutil.copy(arm, tmp_path / "spectra-a.fits")
    renamed_obj = shutil.copy(obj, tmp_path / "spectra-b.fits")
    info = pfs.scan_pfs(renamed_arm)
    assert (info.kind, info.arm, info.identity["visit"]) == ("pfsArm", "m", 123)
    info = pfs.scan_pfs(renamed_obj)
    assert info.kind == "pfsObject" and info.object_id[0].endswith("-02468ace1234abcd")


def _arm(tmp_path, name=None, **changes) -> object:
    """Write a pfsArm whose HDUs ``changes`` replace (None deletes one)."""
    hdus, truth = make_fiber_array_set()
    for key, data in changes.items():
        if data is None:
            del hdus[key]
        else:
            hdus[key] = fits.ImageHDU(data(truth) if callable(data) else data, name=key)
    return write_hdus(hdus, tmp_path / (name or pfs_arm_name()))


def _object(tmp_path, layout="wcs", name=None, edit=None) -> object:
    hdus, _ = make_fiber_array(wavelength=layout)
    if edit is not None:
        edit(hdus)
    return write_hdus(hdus, tmp_path / (name or pfs_object_name()))


def _non_increasing(truth):
    wave = truth["wavelength_nm"].copy()
    wave[2, [10, 11]] = wave[2, [11, 10]]
    return wave


def _drop_wcs(hdus):
    for key in ("CRVAL1", "CRPIX1", "CDELT1", "CUNIT1", "CTYPE1"):
        del hdus["FLUX"].header[key]


def _log_wcs(hdus):
    hdus["FLUX"].header["CTYPE1"] = "WAVE-LOG"


def _drop_identity(hdus):
    del hdus["TARGET"]


def _bad_pfs(tmp_path, case):
    n, n_pix = 6, 50
    if case == "missing":
        return tmp_path / pfs_arm_name()
    if case == "empty":
        path = tmp_path / pfs_arm_name()
        path.write_bytes(b"")
        return path
    if case == "text":
        path = tmp_path / pfs_arm_name()
        path.write_text("not a fits file\n")
        return path
    if case == "hdf5":
        path = tmp_path / pfs_arm_name()
        write_pfsspec_shard(path)
        return path
    if case == "truncated":
        path, _ = write_pfs_arm(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 5000])
        return path
    cases = {
        "no_covar": lambda: _arm(tmp_path, COVAR=None),
        "no_fiberid": lambda: _arm(tmp_path, FIBERID=None),
        "no_wavelength_arm": lambda: _arm(tmp_path, WAVELENGTH=None),
        "mask_shape": lambda: _arm(tmp_path, MASK=np.zeros((n, n_pix - 1), np.int32)),
        "covar_shape": lambda: _arm(tmp_path, COVAR=np.ones((n, 2, n_pix), np.float32)),
        "fiberid_length": lambda: _arm(tmp_path, FIBERID=np.arange(1, n, dtype=np.int32)),
        "wavelength_shape": lambda: _arm(tmp_path, WAVELENGTH=np.ones((n, n_pix + 1))),
        "wavelength_order": lambda: _arm(tmp_path, WAVELENGTH=_non_increasing),
        "wavelength_angstrom": lambda: _arm(tmp_path, WAVELENGTH=lambda t: t["wavelength_nm"] * 10),
        "float_mask": lambda: _arm(tmp_path, MASK=np.zeros((n, n_pix), np.float32)),
        "flux_1d": lambda: _arm(tmp_path, FLUX=np.ones(n_pix, np.float32)),
        "zero_spectra": lambda: _arm(
            tmp_path,
            FLUX=np.zeros((0, n_pix), np.float32),
            MASK=np.zeros((0, n_pix), np.int32),
            COVAR=np.zeros((0, 3, n_pix), np.float32),
            FIBERID=np.zeros(0, np.int32),
            WAVELENGTH=np.zeros((0, n_pix)),
        ),
        "name_mismatch": lambda: _arm(tmp_path, name=pfs_arm_name(visit=124)),
        "arm_mismatch": lambda: _arm(tmp_path, name=pfs_arm_name(arm="r")),
        "object_no_wavelength": lambda: _object(tmp_path, edit=_drop_wcs),
        "object_log_wcs": lambda: _object(tmp_path, edit=_log_wcs),
        "object_no_identity": lambda: _object(tmp_path, name="spectrum.fits", edit=_drop_identity),
    }
    return cases[case]()


BAD_PFS = {
    "missing": r"does not exist; check the path",
    "empty": r"is empty \(0 bytes\)",
    "text": r"is not a FITS file \(it starts with b'not a fits file",
    "hdf5": r"is not a FITS file \(it starts with b'\\x89HDF.*read by ingest.pfsspec",
    "truncated": r"is truncated or corrupt .*copy the file again",
    "no_covar": r"has no 'COVAR' HDU \(its HDUs are .*\); a pfsArm file needs",
    "no_fiberid": r"has no 'FIBERID' HDU",
    "no_wavelength_arm": r"has no WAVELENGTH HDU and no wavelength WCS in its FLUX header",
    "mask_shape": r"has a MASK HDU of shape \(6, 49\) but FLUX of \(6, 50\), so MASK should be",
    "covar_shape": r"has a COVAR HDU of shape \(6, 2, 50\) .*COVAR should be \(6, 3, 50\)",
    "fiberid_length": r"has a FIBERID HDU of shape \(5,\) .*FIBERID should be \(6,\)",
    "wavelength_shape": r"has a WAVELENGTH HDU of shape \(6, 51\) but FLUX of \(6, 50\)",
    "wavelength_order": r"has wavelengths for spectrum 2 \(fiberId \d+\) that are not finite and "
    r"strictly increasing at pixel 11 \(.* nm then .* nm\)",
    "wavelength_angstrom": r"has wavelengths of median [\d.]+, which is not in nm as the datamodel",
    "float_mask": r"has a floating-point MASK HDU \(BITPIX -32\)",
    "flux_1d": r"has a FLUX HDU of shape \(50,\); a pfsArm file's FLUX is \(n_fiber, n_pixels\)",
    "zero_spectra": r"contains no spectra \(FLUX has shape \(0, 50\)\)",
    "name_mismatch": r"is named for visit=124 but its headers say visit=123; rename",
    "arm_mismatch": r"is named for arm='r' but its headers say arm='m'",
    "object_no_wavelength": r"has no WAVELENGTH HDU and no wavelength WCS",
    "object_log_wcs": r"has an unusable wavelength WCS in its FLUX header \(CTYPE1 = 'WAVE-LOG'",
    "object_no_identity": r"gives no catId, tract, patch, objId in its TARGET header or its file "
    r"name; name it as the datamodel does: pfsObject-\{catId:05d\}",
}


@pytest.mark.parametrize("case", BAD_PFS)
def test_every_bad_pfs_file_gives_one_clear_error(tmp_path, case):
    path = _bad_pfs(tmp_path, case)
    with pytest.raises(IngestError, match=BAD_PFS[case]) as excinfo:
        pfs.scan_pfs(path)
    assert_one_line_error(excinfo, path)
    assert str(excinfo.value).startswith(f"PFS file '{path}' ")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rows": (0, 99)}, r"has 6 spectra, so rows \[0, 99\) cannot be read"),
        ({"rows": slice(0, 4, 2)}, r"cannot be read in rows .* \(step 2\); read a contiguous"),
        ({"rows": "all"}, r"cannot be read in rows 'all'; pass None, a slice or \(start, stop\)"),
        ({"ignore_flags": ("NOPE",)}, r"does not define mask plane 'NOPE' \(from ignore_flags\)"),
    ],
)
def test_read_pfs_rejects_bad_rows_and_flags(tmp_path, kwargs, match):
    path, _ = write_pfs_arm(tmp_path)
    with pytest.raises(IngestError, match=match) as excinfo:
        pfs.read_pfs(path, **kwargs)
    assert_one_line_error(excinfo, path)


# =========================================================================== resampling


def reference_resample(wave_in, flux, error, mask, wave_out, method):
    """A slow loop over spectra and output pixels, straight from the definitions."""
    n, n_in = flux.shape
    wave_in = np.broadcast_to(wave_in, (n, n_in))
    out = np.full((3, n, wave_out.size), np.nan)
    bad_out = np.ones((n, wave_out.size), dtype=bool)
    edges_out = rs.pixel_edges(wave_out) if method == "flux" else None
    for r in range(n):
        w, f, e = wave_in[r], flux[r].astype(float), error[r].astype(float)
        bad = mask[r] | ~np.isfinite(f) | ~np.isfinite(e) | ~(e > 0)
        edges_in = rs.pixel_edges(w)
        for k, lam in enumerate(wave_out):
            weights = {}
            if method == "linear":
                if not w[0] <= lam <= w[-1]:
                    continue
                j = min(max(i for i in range(n_in) if w[i] <= lam), n_in - 2)
                t = (lam - w[j]) / (w[j + 1] - w[j])
                weights = {j: 1 - t, j + 1: t}
                var_weights = weights
            else:
                lo, hi = edges_out[k], edges_out[k + 1]
                if lo < edges_in[0] or hi > edges_in[-1]:
                    continue
                for j in range(n_in):
                    overlap = min(hi, edges_in[j + 1]) - max(lo, edges_in[j])
                    if overlap > 0:
                        weights[j] = overlap
                width = sum(weights.values())
                weights = {j: o / width for j, o in weights.items()}
                var_weights = {j: o**2 for j, o in weights.items()}
            if any(bad[j] for j, wt in weights.items() if wt > 0):
                continue
            out[0, r, k] = sum(wt * f[j] for j, wt in weights.items() if wt > 0)
            out[1, r, k] = np.sqrt(sum(wt * e[j] ** 2 for j, wt in var_weights.items() if wt > 0))
            bad_out[r, k] = False
    return out[0], out[1], bad_out


def random_spectra(seed, n=3, n_in=25, shared=False, float32=True):
    rng = np.random.default_rng(seed)
    shape = (n_in,) if shared else (n, n_in)
    wave = 7100.0 + np.cumsum(rng.uniform(0.5, 2.0, shape), axis=-1)
    dtype = np.float32 if float32 else np.float64
    flux = rng.normal(1.0, 0.3, (n, n_in)).astype(dtype)
    error = rng.uniform(0.1, 0.5, (n, n_in)).astype(dtype)
    mask = rng.random((n, n_in)) < 0.08
    flux[rng.random((n, n_in)) < 0.03] = np.nan
    error[rng.random((n, n_in)) < 0.03] = np.inf
    return wave, flux, error, mask


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(rs.METHODS),
    shared=st.booleans(),
    n_out=st.integers(2, 40),
    on_grid=st.booleans(),
)
def test_resample_matches_the_reference_loop(seed, method, shared, n_out, on_grid):
    wave, flux, error, mask = random_spectra(seed, shared=shared)
    rng = np.random.default_rng(seed + 1)
    if on_grid:  # output points (and edges) on input points: the ties
        row = wave if shared else wave[0]
        wave_out = np.unique(rng.choice(row, min(n_out, row.size), replace=False))
        if wave_out.size < 2:
            wave_out = row[:2]
    else:
        wave_out = np.sort(rng.uniform(7095.0, 7145.0, n_out))
        wave_out = np.unique(wave_out) if np.unique(wave_out).size >= 2 else wave_out[:1] + [0, 1]
    got = rs.resample(wave, flux, error, mask, wave_out, method)
    expected = reference_resample(wave, flux, error, mask, wave_out, method)
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6, atol=1e-6)  # float32 outputs
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-7)
    assert np.isnan(got[0][got[2]]).all() and np.isnan(got[1][got[2]]).all()
    assert np.isfinite(got[0][~got[2]]).all()


@pytest.mark.parametrize("method", rs.METHODS)
@pytest.mark.parametrize("shared", [True, False])
def test_resample_on_the_identity_grid_is_the_identity(method, shared):
    wave, flux, error, mask = random_spectra(5, n=4, shared=shared)
    for r in range(4):
        w = wave if shared else wave[r]
        f, e, m = rs.resample(w, flux[r : r + 1], error[r : r + 1], mask[r : r + 1], w, method)
        bad = rs.find_bad_inputs(flux[r : r + 1], error[r : r + 1], mask[r : r + 1])
        np.testing.assert_array_equal(m, bad)
        np.testing.assert_array_equal(f[~m], flux[r : r + 1][~m])  # bit for bit
        np.testing.assert_array_equal(e[~m], error[r : r + 1][~m])
        assert f.dtype == np.float32


@pytest.mark.parametrize("method", rs.METHODS)
def test_resample_preserves_a_constant_spectrum(method):
    wave, _, _, _ = random_spectra(6, n=3)
    flux = np.full((3, 25), 2.5)
    error = np.full((3, 25), 0.2)
    wave_out = np.linspace(7105.0, 7120.0, 31)
    f, e, m = rs.resample(wave, flux, error, None, wave_out, method)
    assert not m.all()
    np.testing.assert_allclose(f[~m], 2.5, rtol=1e-14)
    if method == "linear":
        np.testing.assert_allclose(e[~m], 0.2, rtol=1e-14)  # interpolated variance
    else:
        assert (e[~m] <= 0.2 * (1 + 1e-14)).all()  # averaging lowers the noise


def test_linear_resampling_preserves_a_linear_spectrum():
    wave, _, _, _ = random_spectra(7, n=3, float32=False)
    flux = 3.0 + 0.01 * (wave - 7100.0)
    wave_out = np.linspace(7101.0, 7130.0, 57)
    f, _, m = rs.resample(wave, flux, np.ones_like(flux), None, wave_out, "linear")
    expected = np.broadcast_to(3.0 + 0.01 * (wave_out - 7100.0), f.shape)
    np.testing.assert_allclose(f[~m], expected[~m], rtol=1e-13)
    assert f.dtype == np.float64


def test_flux_resampling_of_a_linear_spectrum():
    wave = 7100.0 + 0.5 * np.arange(40)
    flux = (3.0 + 0.01 * (wave - 7100.0))[None, :]
    error = np.ones_like(flux)
    # Output bins that are unions of 4 whole input bins: exact.
    coarse = wave.reshape(10, 4).mean(axis=1)
    f, e, m = rs.resample(wave, flux, error, None, coarse, "flux")
    assert not m.any()
    np.testing.assert_allclose(f[0], 3.0 + 0.01 * (coarse - 7100.0), rtol=1e-14)
    np.testing.assert_allclose(e[0], 0.5, rtol=1e-14)  # 4 pixels averaged: sigma / 2
    # Any uniform grid: within half an input pixel's change of the line.
    other = np.linspace(7101.3, 7117.9, 23)
    f, _, m = rs.resample(wave, flux, error, None, other, "flux")
    assert np.abs(f[~m] - (3.0 + 0.01 * (other - 7100.0))[~m[0]]).max() <= 0.01 * 0.5 / 2 + 1e-12


def test_flux_resampling_conserves_the_integral():
    wave, flux, _, _ = random_spectra(8, n=2, float32=False)
    flux = np.abs(np.nan_to_num(flux, nan=1.0))
    wave_out = np.linspace(7110.0, 7125.0, 19)
    f, _, m = rs.resample(wave, flux, np.ones_like(flux), None, wave_out, "flux")
    assert not m.any()
    edges_out = rs.pixel_edges(wave_out)
    for r in range(2):
        edges_in = rs.pixel_edges(wave[r])
        cumulative = np.concatenate([[0.0], np.cumsum(flux[r] * np.diff(edges_in))])
        integral = np.diff(np.interp(edges_out[[0, -1]], edges_in, cumulative))[0]
        np.testing.assert_allclose(np.sum(f[r] * np.diff(edges_out)), integral, rtol=1e-12)


def test_uncovered_or_touching_a_bad_pixel_is_bad():
    wave = 7100.0 + np.arange(20.0)  # input bins [7099.5, 7119.5]
    flux, error = np.ones((1, 20)), np.ones((1, 20))
    mask = np.zeros((1, 20), dtype=bool)
    mask[0, 10] = True  # 7110, its bin [7109.5, 7110.5]
    # Linear: 7109.5 and 7110.25 take weight from pixel 10 and 7110.0 is it; 7104.0 is
    # pixel 4 exactly (no weight on pixel 5); 7090 and 7125 are outside.
    wave_out = np.array([7090.0, 7104.0, 7109.5, 7110.0, 7110.25, 7112.0, 7125.0])
    f, _, m = rs.resample(wave, flux, error, mask, wave_out, "linear")
    np.testing.assert_array_equal(m[0], [True, False, True, True, True, False, True])
    assert np.isnan(f[0][m[0]]).all() and (f[0][~m[0]] == 1.0).all()
    # Flux: output bins [7096, 7098], [7098, 7100], ... [7120, 7122]: the first two and
    # last two are not inside the input's bins; [7108, 7110] and [7110, 7112] overlap bin 10.
    wave_out = 7097.0 + 2.0 * np.arange(13)
    f, e, m = rs.resample(wave, flux, error, mask, wave_out, "flux")
    np.testing.assert_array_equal(np.flatnonzero(m[0]), [0, 1, 6, 7, 11, 12])
    assert np.isnan(f[0][m[0]]).all() and np.isnan(e[0][m[0]]).all()
    np.testing.assert_allclose(f[0][~m[0]], 1.0, rtol=1e-15)
    np.testing.assert_allclose(e[0][~m[0]], np.sqrt(0.375), rtol=1e-15)  # weights 1/4, 1/2, 1/4


def test_resample_in_blocks_equals_one_block(monkeypatch):
    wave, flux, error, mask = random_spectra(9, n=7)
    wave_out = np.linspace(7102.0, 7130.0, 33)
    for method in rs.METHODS:
        whole = rs.resample(wave, flux, error, mask, wave_out, method)
        monkeypatch.setattr(rs, "_BLOCK_ELEMENTS", 100)  # 1 row per block
        blocked = rs.resample(wave, flux, error, mask, wave_out, method)
        monkeypatch.undo()
        for a, b in zip(whole, blocked):
            np.testing.assert_array_equal(a, b)


def test_locate_is_searchsorted_per_row():
    wave, _, _, _ = random_spectra(10, n=5, n_in=30)
    wave_out = np.sort(np.concatenate([wave[0, ::3], np.linspace(7090, 7160, 20)]))
    got = rs.locate(wave, wave_out)
    for r in range(5):
        np.testing.assert_array_equal(got[r], np.searchsorted(wave[r], wave_out, "right") - 1)


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(method="cubic"), r"method must be one of \('linear', 'flux'\); got 'cubic'"),
        (dict(flux=np.ones(10)), r"flux has shape \(10,\); expected \(n_spectra, n_in\)"),
        (dict(error=np.ones((2, 9))), r"flux has shape \(2, 10\) but error \(2, 9\)"),
        (dict(mask=np.zeros((2, 9), bool)), r"but error \(2, 10\), mask \(2, 9\)"),
        (dict(wave_in=np.arange(9.0)), r"wave_in has shape \(9,\); expected \(10,\) or \(2, 10\)"),
        (dict(wave_out=np.array([1.0])), r"wave_out has shape \(1,\); expected .* n_out >= 2"),
        (
            dict(wave_in=np.vstack([np.arange(10.0), np.arange(10.0)[::-1]])),
            r"wave_in is not finite and strictly increasing at row 1, pixel 1",
        ),
        (dict(wave_out=np.array([1.0, 3.0, 2.0])), r"wave_out .* at pixel 2; sort the grid"),
    ],
)
def test_resample_rejects_bad_arguments(args, match):
    call = dict(
        wave_in=np.arange(10.0),
        flux=np.ones((2, 10)),
        error=np.ones((2, 10)),
        mask=None,
        wave_out=np.linspace(1, 8, 5),
        method="flux",
    )
    call.update(args)
    with pytest.raises(ValueError, match=match):
        rs.resample(**call)


def test_pipeline_files_resample_onto_the_store_grid(tmp_path):
    """A pfsArm (per-fibre grids, nm) read and resampled onto a store's Angstrom grid."""
    path, _ = write_pfs_arm(tmp_path)
    out = pfs.read_pfs(path)
    grid = np.linspace(7120.0, 8830.0, 64)
    f, e, m = rs.resample(out["wavelength"], out["flux"], out["error"], out["mask"], grid, "flux")
    assert f.shape == e.shape == m.shape == (6, 64) and f.dtype == np.float32
    assert m.any() and not m.all()
    assert np.isfinite(f[~m]).all() and (e[~m] > 0).all()
    pd.testing.assert_index_equal(pd.Index(out["object_id"]), pd.Index(out["object_id"]).unique())
