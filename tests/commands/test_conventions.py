"""The ecosystem's conventions: stores open without warnings, worker logs stay off
the terminal, and an error is one line."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

from snr_moe_dask import generate_survey
from snr_moe_dask.cli import main
from snr_moe_dask.model import SNRBinnedRidge

CLUSTER = ["--workers", "2", "--threads-per-worker", "1"]


def _config(tmp_path, **fit) -> str:
    cfg = {
        "name": "tiny",
        "output": str(tmp_path / "out"),
        "model": {"type": "Ridge", "alpha": 1000.0},
        "data": {
            "train_size": 600,
            "test_size": 300,
            "feature_dim": 64,
            "chunk_size": 150,
            "train_store": str(tmp_path / "train.zarr"),
            "test_store": str(tmp_path / "test.zarr"),
        },
        "fit": {"min_spectra": 1, **fit},
        "evaluate": {"bootstrap": 20, "routings": ["oracle", "soft"]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_every_store_the_tool_writes_opens_without_a_warning(tmp_path):
    assert main(["run", _config(tmp_path), "--quiet", *CLUSTER]) == 0
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=10.0, min_spectra=1, gate=False).fit(
            str(tmp_path / "train.zarr"), checkpoint=tmp_path / "ckpt"
        )
    stores = [
        tmp_path / "train.zarr",
        tmp_path / "test.zarr",
        tmp_path / "out" / "model.zarr",
        tmp_path / "out" / "predictions.zarr",
    ]
    checkpoints = sorted((tmp_path / "ckpt").glob("partition-*.zarr"))
    assert checkpoints
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for store in stores:
            ds = xr.open_zarr(store)
            assert ds.data_vars, store
            assert xr.open_zarr(store, consolidated=False).data_vars, store
        for store in checkpoints:
            group = zarr.open_group(store, mode="r")
            assert group.metadata.consolidated_metadata is not None, store


def test_strict_fit_error_is_the_whole_terminal_output(tmp_path, capfd):
    path = tmp_path / "bad.zarr"
    with dask.config.set(scheduler="sync"):
        generate_survey(path, 400, pixels=32, chunk_size=100)
    flux = zarr.open_array(path / "flux", mode="r+")
    row = flux[250]
    row[7] = np.nan
    flux[250] = row
    capfd.readouterr()
    status = main(
        ["fit", str(path), "--model", str(tmp_path / "m.zarr"), "--strict", "--quiet", *CLUSTER]
    )
    out, err = capfd.readouterr()
    assert status == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snr-moe fit: error: --strict: variable 'flux'")
    assert "spectrum 250" in lines[0] and "pixel 7" in lines[0]
    assert "worker logs: .snr-moe/logs/" in lines[0]
    assert "Traceback" not in err and "Compute Failed" not in err
    assert not (tmp_path / "m.zarr").exists()


@pytest.mark.parametrize("quiet", [True, False])
def test_worker_log_file_holds_what_the_workers_said(tmp_path, capfd, monkeypatch, quiet):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.zarr"
    with dask.config.set(scheduler="sync"):
        generate_survey(path, 200, pixels=16, chunk_size=100)
    flux = zarr.open_array(path / "flux", mode="r+")
    flux[5] = np.full(16, np.nan, dtype=np.float32)
    args = ["fit", str(path), "--model", "m.zarr", "--strict", *CLUSTER]
    assert main(args + (["--quiet"] if quiet else [])) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Compute Failed" not in err
    logs = sorted((tmp_path / ".snr-moe" / "logs").glob("fit-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "Compute Failed" in text and "--strict" in text
    assert str(logs[0].relative_to(tmp_path)) in err
