"""``snr-moe ingest`` and ``write_spectra``: real fixture files in, a checked spectra
store out, one clear line for every bad input and nothing written then."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
from ingest_fixtures import (
    make_fiber_array_set,
    write_hdus,
    write_pfs_arm,
    write_pfs_merged,
    write_pfs_object,
    write_pfsspec_shard,
)

from snr_moe_dask import open_spectra, write_spectra
from snr_moe_dask.cli import main
from snr_moe_dask.ingest import pfs, pfsspec
from snr_moe_dask.ingest.graph import ingest_spectra
from snr_moe_dask.ingest.noise import noisy_flux, true_snr

CLUSTER = ["--workers", "2", "--threads-per-worker", "1", "--quiet"]


@pytest.fixture
def shards(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    return [(a, write_pfsspec_shard(a, n=12, seed=0)), (b, write_pfsspec_shard(b, n=9, seed=1))]


def ingest_sync(*args, **kwargs):
    with dask.config.set(scheduler="sync"):
        return ingest_spectra(*args, **kwargs)


def test_pfsspec_store_holds_the_noised_flux_labels_snr_and_provenance(tmp_path, shards):
    out = tmp_path / "s.zarr"
    result = ingest_sync([p for p, _ in shards], out, format="pfsspec", chunk_size=5, seed=3)
    ds = open_spectra(out, require=["logg", "teff", "mh", "mag", "snr"])
    flux = np.concatenate([t["flux"] for _, t in shards])
    error = np.concatenate([t["error"] for _, t in shards])
    # Store row i draws its noise from stream (seed, i), whichever shard it came from.
    expected = np.concatenate(
        [noisy_flux(t["flux"], t["error"], 1.0, 3, start) for (_, t), start in zip(shards, [0, 12])]
    )
    np.testing.assert_array_equal(ds["flux"].values, expected)
    filled = pfsspec.fill_nan_errors(error)
    np.testing.assert_array_equal(ds["error"].values, filled.astype(np.float32))
    snr = true_snr(np.clip(flux, 0, None), filled, "median")
    np.testing.assert_array_equal(ds["snr"].values, snr)
    params = np.concatenate([t["params"]["log_g"].to_numpy() for _, t in shards])
    np.testing.assert_array_equal(ds["logg"].values, params)
    np.testing.assert_array_equal(ds["source_file"].values, [0] * 12 + [1] * 9)
    np.testing.assert_array_equal(ds["source_row"].values, [*range(12), *range(9)])
    assert "mask" not in ds  # the shards' own grid: nothing uncovered
    a = ds.attrs
    assert a["format"] == "pfsspec" and a["seed"] == 3 and a["noise_level"] == 1.0
    assert a["sources"] == [str(p) for p, _ in shards] and a["snr_definition"] == "median"
    assert a["resampling"].startswith("none")
    counts = json.loads(a["ingest_counts"])
    assert counts == result["counts"]
    assert counts["spectra"] == 21 and counts["dropped_spectra"] == 0
    assert counts["nan_errors_filled"] == 6  # three NaN errors in each fixture shard


def test_pfsspec_with_noise_level_1_is_bit_identical_for_two_chunkings(tmp_path, shards):
    """On a real two-process cluster, through the command."""
    paths = [str(p) for p, _ in shards]
    stores = []
    for chunk in ("4", "7"):
        out = tmp_path / f"s{chunk}.zarr"
        argv = ["ingest", "--format", "pfsspec", *paths, "--out", str(out)]
        assert main([*argv, "--noise-level", "1", "--chunk-size", chunk, *CLUSTER]) == 0
        stores.append(open_spectra(out))
    assert stores[0]["flux"].chunks[0] != stores[1]["flux"].chunks[0]
    for var in ("flux", "error", "snr", "logg"):
        a, b = stores[0][var].values, stores[1][var].values
        assert a.tobytes() == b.tobytes(), var


def test_norm_snr_definition_and_noise_level_are_recorded(tmp_path, shards):
    out = tmp_path / "s.zarr"
    ingest_sync([shards[0][0]], out, format="pfsspec", noise_level=2.0, snr_definition="norm")
    ds = open_spectra(out)
    t = shards[0][1]
    filled = pfsspec.fill_nan_errors(t["error"])
    expected = true_snr(np.clip(t["flux"], 0, None), filled, "norm", 2.0)
    np.testing.assert_array_equal(ds["snr"].values, expected)
    assert ds.attrs["noise_level"] == 2.0 and ds.attrs["snr_definition"] == "norm"


def test_pfs_merged_keeps_its_grid_ids_mask_and_has_no_labels(tmp_path):
    path, truth = write_pfs_merged(tmp_path, n_fiber=5, n_pixels=30)
    out = tmp_path / "m.zarr"
    ingest_sync([path], out, format="pfs", chunk_size=2)
    ds = open_spectra(out)
    direct = pfs.read_pfs(path)
    np.testing.assert_array_equal(ds["flux"].values, direct["flux"])
    np.testing.assert_array_equal(ds["mask"].values, direct["mask"])
    np.testing.assert_array_equal(ds["wavelength"].values, truth["wavelength_nm"][0] * 10)
    assert list(ds["object_id"].values) == list(direct["object_id"])
    for var in ("logg", "teff", "mh", "mag", "snr"):
        assert np.isnan(ds[var].values).all(), var
    assert "no true SNR" in ds.attrs["snr_definition"] and ds.attrs["noise_level"] == 0.0


def test_pfs_arm_and_object_resampled_onto_a_model_grid(tmp_path, shards):
    grid = tmp_path / "grid.zarr"
    ingest_sync([shards[0][0]], grid, format="pfsspec")
    arm, _ = write_pfs_arm(tmp_path, n_fiber=4, n_pixels=50)
    obj, _ = write_pfs_object(tmp_path, n_pixels=60)
    out = tmp_path / "p.zarr"
    result = ingest_sync([arm, obj], out, format="pfs", wavelength_grid=grid, resample="flux")
    ds = open_spectra(out)
    assert ds.sizes == {"spectrum": 5, "wavelength": 40}
    np.testing.assert_array_equal(ds["wavelength"].values, open_spectra(grid)["wavelength"].values)
    assert ds["object_id"].values[-1].startswith("pfsObject-")
    assert ds.attrs["resampling"].startswith("flux onto the grid of")
    assert result["counts"]["bad_pixels"] == int(ds["mask"].values.sum())


def test_per_fibre_grids_without_a_target_grid_are_refused(tmp_path, capsys):
    arm, _ = write_pfs_arm(tmp_path)
    out = tmp_path / "p.zarr"
    assert main(["ingest", "--format", "pfs", str(arm), "--out", str(out), *CLUSTER]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(arm) in err and "--wavelength-grid" in err
    assert not out.exists()


def _bad_cases(tmp_path, shards):
    """(format, sources, extra flags, what the message must say)."""
    good = str(shards[0][0])
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    other = tmp_path / "other.h5"
    write_pfsspec_shard(other, n_pixels=32)
    hdus, _ = make_fiber_array_set("pfsMerged", n_fiber=3, n_pixels=20, shared_wavelength=True)
    fits_path = write_hdus(hdus, tmp_path / "pfsMerged-000123.fits")
    cut = tmp_path / "pfsMerged-000124.fits"
    cut.write_bytes(fits_path.read_bytes()[:-3000])
    return {
        "missing": ("pfsspec", [str(tmp_path / "nope.h5")], [], "does not exist"),
        "empty": ("pfsspec", [good, str(empty)], [], "is empty"),
        "not hdf5": ("pfsspec", [str(text)], [], "not an HDF5 file"),
        "two bad files": ("pfsspec", [str(empty), good, str(text)], [], "2 of 3 source files"),
        "grids differ": ("pfsspec", [good, str(other)], [], "--wavelength-grid"),
        "truncated fits": ("pfs", [str(cut)], [], "truncated"),
        "hdf5 as pfs": ("pfs", [good], [], "not a FITS file"),
        "noise for pfs": ("pfs", [str(fits_path)], ["--noise-level", "1"], "--noise-level"),
        "flags for pfsspec": ("pfsspec", [good], ["--ignore-flags", "CR"], "--ignore-flags"),
        "grid not a store": ("pfsspec", [good], ["--wavelength-grid", good], "not a Zarr store"),
        "twice": ("pfsspec", [good, good], [], "more than once"),
    }


CASES = [
    "missing",
    "empty",
    "not hdf5",
    "two bad files",
    "grids differ",
    "truncated fits",
    "hdf5 as pfs",
    "noise for pfs",
    "flags for pfsspec",
    "grid not a store",
    "twice",
]


@pytest.mark.parametrize("case", CASES)
def test_every_bad_input_is_one_line_and_writes_nothing(tmp_path, shards, capsys, case):
    fmt, sources, extra, says = _bad_cases(tmp_path, shards)[case]
    out = tmp_path / "out.zarr"
    argv = ["ingest", "--format", fmt, *sources, "--out", str(out), *extra, "--quiet"]
    assert main([*argv, "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snr-moe ingest: error: ") and "\n" not in err, err
    assert says in err, err
    if case == "two bad files":
        assert sources[0] in err and sources[2] in err and sources[1] not in err
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))


def test_write_spectra_round_trips_arrays_and_checks_them_first(tmp_path):
    rng = np.random.default_rng(0)
    n, p = 10, 6
    data = {
        "flux": rng.normal(size=(n, p)).astype(np.float32),
        "error": np.ones((n, p), np.float32),
        "mask": rng.random((n, p)) < 0.1,
        "logg": rng.uniform(1, 5, n),
        "object_id": np.array([f"star-{i}" for i in range(n)]),
    }
    wave = np.linspace(7100.0, 8850.0, p)
    attrs = {"arm": "m"}
    out = write_spectra(data, tmp_path / "s.zarr", wavelength=wave, chunk_size=4, attrs=attrs)
    ds = open_spectra(out, require=["logg"])
    for name in ("flux", "error", "mask", "logg"):
        np.testing.assert_array_equal(ds[name].values, data[name])
    assert list(ds["object_id"].values) == list(data["object_id"])
    assert ds["flux"].chunks[0] == (4, 4, 2) and ds.attrs["arm"] == "m"
    with pytest.raises(FileExistsError, match="already exists"):
        write_spectra(data, out, wavelength=wave)
    bad = tmp_path / "bad.zarr"
    with pytest.raises(ValueError, match="'wavelength' .* not strictly increasing"):
        write_spectra(data, bad, wavelength=wave[::-1])
    with pytest.raises(ValueError, match="variable 'flux' .* dtype int64"):
        write_spectra({**data, "flux": np.ones((n, p), np.int64)}, bad, wavelength=wave)
    with pytest.raises(ValueError, match="pass wavelength="):
        write_spectra(data, bad)
    assert not bad.exists()


def test_write_spectra_writes_a_dataset_with_dask_on_a_cluster(tmp_path, small_survey):
    from conftest import local_client

    with local_client(2):
        out = write_spectra(small_survey, tmp_path / "s.zarr", chunk_size=300)
    ds = open_spectra(out, require=["logg", "snr"])
    np.testing.assert_array_equal(ds["flux"].values, small_survey["flux"].values)
    assert ds["flux"].chunks[0] == (300, 300, 300)
