"""``snr-moe predict``: ingest -> fit -> predict for each format, what predictions.zarr
and catalog.parquet hold, the flags, the uncertainties, and the refusals."""

from __future__ import annotations

import json

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from ingest_fixtures import write_pfs_arm, write_pfs_merged, write_pfs_object, write_pfsspec_shard

from snr_moe_dask import SNRBinnedRidge, load_model, open_spectra, predict_spectra
from snr_moe_dask.cli import main
from snr_moe_dask.ingest.graph import ingest_spectra
from snr_moe_dask.kernels.calibration import expert_variance, routed_variance
from snr_moe_dask.predict.tasks import FLAGS

CLUSTER = ["--workers", "2", "--threads-per-worker", "1", "--quiet"]
FIT = ["--alpha", "1", "--min-spectra", "5", "--bins", "1.5,2.5,3.5"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """pfsspec shards ingested to a training store, and a model fitted on it."""
    root = tmp_path_factory.mktemp("labelled")
    shards = []
    for i in range(3):
        shards.append(root / f"train-{i}.h5")
        write_pfsspec_shard(shards[-1], n=300, seed=i)
    train, model = root / "train.zarr", root / "model.zarr"
    with dask.config.set(scheduler="sync"):
        ingest_spectra(shards, train, format="pfsspec", chunk_size=256)
        SNRBinnedRidge(alpha=1.0, min_spectra=5, bins=[1.5, 2.5, 3.5]).fit(str(train)).save(model)
    return root, train, model


def test_pfsspec_ingest_fit_predict_through_the_command(tmp_path, capsys):
    shards = []
    for i in range(3):
        shards.append(str(tmp_path / f"s{i}.h5"))
        write_pfsspec_shard(shards[-1], n=250, seed=10 + i)
    train, model, obs = (str(tmp_path / n) for n in ("train.zarr", "m.zarr", "obs.zarr"))
    assert main(["ingest", "--format", "pfsspec", *shards[:2], "--out", train, *CLUSTER]) == 0
    assert main(["fit", train, "--model", model, *FIT, *CLUSTER]) == 0
    assert (
        main(["ingest", "--format", "pfsspec", shards[2], "--out", obs, "--seed", "5", *CLUSTER])
        == 0
    )
    out = tmp_path / "pred"
    assert main(["predict", model, obs, "--out", str(out), "--workers", "2"]) == 0
    said = capsys.readouterr().out
    assert "predicted logg for 250 spectra (soft routing)" in said and "catalog.parquet" in said
    pred = xr.open_zarr(out / "predictions.zarr")
    fitted = load_model(model)
    with dask.config.set(scheduler="sync"):
        expected = fitted.predict(open_spectra(obs), routing="soft").compute()
    np.testing.assert_allclose(pred["logg"].values, expected, rtol=1e-12)
    assert (pred["logg_err"].values > 0).all() and pred.attrs["routing"] == "soft"
    np.testing.assert_allclose(pred["gate_p"].values.sum(axis=1), 1.0)
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert len(catalog) == 250 and list(catalog["spectrum"]) == list(range(250))
    assert set(catalog["expert"]) <= set(fitted.experts_)
    np.testing.assert_array_equal(catalog["logg"], pred["logg"].values)
    np.testing.assert_array_equal(catalog["flag"], pred["flag"].values)
    assert {"p_X", "p_H", "logg_err", "snr_observed", "n_bad_pixels"} <= set(catalog.columns)


def test_pfs_files_resampled_onto_the_model_grid_and_predicted(labelled, tmp_path):
    root, train, model = labelled
    arm, _ = write_pfs_arm(tmp_path, n_fiber=4, n_pixels=50)
    merged, _ = write_pfs_merged(tmp_path, visit=7, n_fiber=3, n_pixels=60)
    obj, _ = write_pfs_object(tmp_path, n_pixels=45)
    spectra = tmp_path / "pfs.zarr"
    with dask.config.set(scheduler="sync"):
        ingest_spectra([arm, merged, obj], spectra, format="pfs", wavelength_grid=model)
        result = predict_spectra(model, spectra, tmp_path / "pred", routing="observed")
    assert result["n"] == 8 and result["routing"] == "observed"
    pred = xr.open_zarr(tmp_path / "pred" / "predictions.zarr")
    ids = open_spectra(spectra)["object_id"].values
    assert list(pred["object_id"].values) == list(ids)
    catalog = pd.read_parquet(tmp_path / "pred" / "catalog.parquet")
    assert list(catalog["object_id"]) == list(ids)
    assert json.loads(pred.attrs["flag_bits"]) == FLAGS
    flags = pred["flag"].values
    assert result["flags"] == {k: int(((flags & b) != 0).sum()) for k, b in FLAGS.items()}
    # observed routing: the served expert's leave-one-out error at the observed SNR, from
    # observed routing's table (the keys' for an expert it sent no sampled spectrum)
    cal = load_model(model).calibration_
    keyed = expert_variance(cal, pred["snr_observed"].values)
    own = expert_variance(
        {"snr_centre": cal["observed_snr_centre"], "variance": cal["observed_variance"]},
        pred["snr_observed"].values,
    )
    empty = ~np.isfinite(cal["observed_variance"]).any(axis=1)
    var = np.where(empty[None], keyed, own)
    np.testing.assert_array_equal(
        var, routed_variance(cal, "observed", pred["snr_observed"].values)
    )
    expert = pred["expert"].values
    np.testing.assert_allclose(
        pred["logg_err"].values, np.sqrt(var[np.arange(len(expert)), expert, 0]), rtol=1e-12
    )


def test_flags_mark_unusable_spectra_and_a_model_without_an_error_model(labelled, tmp_path):
    root, train, model = labelled
    ds = open_spectra(train).isel(spectrum=slice(0, 20)).load()
    flux = ds["flux"].values.copy()
    flux[0] = np.nan  # no good pixel
    flux[1, :20] = np.nan  # half bad: over the fit's 20 %
    data = {"flux": flux, "error": ds["error"].values, "wavelength": ds["wavelength"].values}
    from snr_moe_dask import write_spectra

    spectra = write_spectra(data, tmp_path / "odd.zarr")
    with dask.config.set(scheduler="sync"):
        predict_spectra(model, spectra, tmp_path / "a")
        plain = SNRBinnedRidge(alpha=1.0, min_spectra=5, bins=[1.5, 2.5, 3.5], calibration=0)
        plain.fit(str(train)).save(tmp_path / "plain.zarr")
        predict_spectra(tmp_path / "plain.zarr", spectra, tmp_path / "b")
    a = xr.open_zarr(tmp_path / "a" / "predictions.zarr")
    assert a["flag"].values[0] & FLAGS["NO_GOOD_PIXEL"] and np.isnan(a["logg"].values[0])
    assert a["flag"].values[1] & FLAGS["BAD_PIXELS"] and np.isfinite(a["logg"].values[1])
    assert not (a["flag"].values[2:] & (FLAGS["BAD_PIXELS"] | FLAGS["NO_GOOD_PIXEL"])).any()
    b = xr.open_zarr(tmp_path / "b" / "predictions.zarr")
    assert (b["flag"].values & FLAGS["NO_UNCERTAINTY"]).all() and np.isnan(b["logg_err"]).all()
    assert "fitted without calibration" in b.attrs["uncertainty"]


def test_a_grid_mismatch_is_refused_naming_both_grids(labelled, tmp_path, capsys):
    root, train, model = labelled
    merged, _ = write_pfs_merged(tmp_path, n_pixels=50)
    spectra = tmp_path / "own-grid.zarr"
    with dask.config.set(scheduler="sync"):
        ingest_spectra([merged], spectra, format="pfs")
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(spectra), "--out", str(out), *CLUSTER]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("snr-moe predict: error: ") and "\n" not in err
    assert "has 40 pixels but store" in err and "has 50" in err and "--wavelength-grid" in err
    assert str(model) in err and str(spectra) in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--routing", "oracle"], "needs each spectrum's true SNR"),
        (["--target", "teff"], "not one the model predicts"),
    ],
)
def test_predict_refusals_are_one_line(labelled, tmp_path, capsys, flags, says):
    root, train, model = labelled
    out = tmp_path / "pred"
    try:
        status = main(["predict", str(model), str(train), "--out", str(out), *flags, "--quiet"])
    except SystemExit as exc:  # argparse refuses a bad flag value itself
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and not out.exists()


def test_learned_routing_needs_a_gate(labelled, tmp_path):
    root, train, model = labelled
    no_gate = tmp_path / "nogate.zarr"
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=1.0, min_spectra=5, gate=False).fit(str(train)).save(no_gate)
        with pytest.raises(ValueError, match="needs the model's gate"):
            predict_spectra(no_gate, train, tmp_path / "p", routing="learned")
        result = predict_spectra(no_gate, train, tmp_path / "q")
    assert result["routing"] == "observed"
    assert "gate_p" not in xr.open_zarr(tmp_path / "q" / "predictions.zarr")


def test_a_gate_on_store_variables_reads_them_for_predict(labelled, tmp_path):
    root, train, _ = labelled
    model = tmp_path / "mag-gate.zarr"
    with dask.config.set(scheduler="sync"):
        fitted = SNRBinnedRidge(alpha=1.0, min_spectra=5, bins=[1.5, 2.5, 3.5], gate="snr,mag")
        fitted.fit(str(train)).save(model)
        predict_spectra(model, train, tmp_path / "p")
        expected = fitted.predict(open_spectra(train), routing="soft").compute()
    got = xr.open_zarr(tmp_path / "p" / "predictions.zarr")
    assert "mag" in fitted.gate_["features"]
    np.testing.assert_allclose(got["logg"].values, expected, rtol=1e-12)
    assert np.isfinite(got["logg_err"].values).all()
