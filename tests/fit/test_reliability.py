"""Faults: a worker killed mid-fit or mid-evaluation costs time, never correctness."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
from conftest import local_client

from snr_moe_dask import generate_survey
from snr_moe_dask.evaluation.graph import evaluate_model
from snr_moe_dask.model import SNRBinnedRidge


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """40 chunks of 500 spectra x 2048 pixels: long enough to kill a worker mid-fit."""
    path = tmp_path_factory.mktemp("faults") / "train.zarr"
    with dask.config.set(scheduler="threads"):
        generate_survey(path, 20_000, pixels=2048, chunk_size=500, seed=21)
    return str(path)


def _latest(prefix: str):
    """On the scheduler: the highest task index in memory among keys with this prefix."""

    def probe(dask_scheduler=None):
        done = [
            int(str(ts.key).rsplit("-", 1)[-1])
            for ts in dask_scheduler.tasks.values()
            if str(ts.key).startswith(prefix) and ts.state == "memory"
        ]
        return max(done, default=-1)

    return probe


def _kill_a_worker_when(client, probe, threshold, worker_thread, timeout=120.0):
    """SIGKILL one worker process once probe() reaches threshold; return True if killed
    while the computation was still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker_thread.is_alive():
        if client.run_on_scheduler(probe) >= threshold:
            pid = next(iter(client.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            return worker_thread.is_alive()
        time.sleep(0.05)
    return False


def test_worker_killed_mid_fit_gives_identical_coefficients(big_store):
    with local_client() as client:

        def fit():
            return SNRBinnedRidge(alpha=1e3, precision="float64", min_spectra=1, partitions=2).fit(
                big_store
            )

        reference = fit()
        result = {}
        thread = threading.Thread(target=lambda: result.update(model=fit()))
        thread.start()
        killed = _kill_a_worker_when(client, _latest("fold-"), 8, thread)
        thread.join(timeout=300)
        assert killed, "the fit finished before a worker could be killed"
        assert "model" in result
        np.testing.assert_array_equal(result["model"].coef_, reference.coef_)
        np.testing.assert_array_equal(result["model"].intercept_, reference.intercept_)
        np.testing.assert_array_equal(result["model"].n_train_, reference.n_train_)


def test_worker_killed_mid_evaluation_gives_identical_metrics(big_store, tmp_path):
    with local_client() as client:
        model = SNRBinnedRidge(alpha=1e3, min_spectra=1).fit(big_store)
        model.save(tmp_path / "m.zarr")
        # Scored on its own training store (allowed): only the fault handling is tested.
        same = {"bootstrap": 200, "report": False, "allow_training_store": True}
        ref = evaluate_model(tmp_path / "m.zarr", big_store, tmp_path / "ref", **same)
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(
                m=evaluate_model(tmp_path / "m.zarr", big_store, tmp_path / "faulty", **same)
            )
        )
        thread.start()
        killed = _kill_a_worker_when(client, _latest("summary-"), 6, thread)
        thread.join(timeout=300)
        assert killed, "the evaluation finished before a worker could be killed"
        faulty = json.loads((tmp_path / "faulty" / "metrics.json").read_text())
        for key in ("overall", "bins", "delta_r2_ci95", "coverage"):
            assert faulty[key] == json.loads(json.dumps(ref[key])), key


@pytest.fixture
def flawed_store(small_survey, tmp_path):
    """The small survey with one NaN flux (spectrum 412) and one zero error (spectrum 655)."""
    ds = small_survey.copy(deep=True).load()  # not the shared fixture itself
    ds["flux"][412, 7] = np.nan
    ds["error"][655, 3] = 0.0
    path = tmp_path / "flawed.zarr"
    ds.chunk({"spectrum": 150}).to_zarr(path, zarr_format=3, consolidated=False)
    return str(path), ds


def test_strict_names_the_variable_and_the_first_spectrum(flawed_store):
    path, ds = flawed_store
    with dask.config.set(scheduler="sync"):
        with pytest.raises(
            ValueError,
            match=r"--strict: variable 'flux' has a non-finite value "
            r"in spectrum 412 \(pixel 7\)",
        ):
            SNRBinnedRidge(strict=True, min_spectra=1, partitions=1).fit(path)
        ds2 = ds.copy(deep=True)
        ds2["flux"][412, 7] = 1.0
        with pytest.raises(
            ValueError,
            match=r"variable 'error' has a non-finite or non-positive "
            r"value in spectrum 655",
        ):
            SNRBinnedRidge(strict=True, min_spectra=1).fit(ds2.chunk({"spectrum": 100}))
        # Without --strict the two pixels are imputed and counted, nothing is lost.
        model = SNRBinnedRidge(min_spectra=1).fit(path)
    assert sum(model.excluded_["bad_pixels"].values()) == 2
    assert model.n_train_[0] == ds.sizes["spectrum"]


def test_strict_from_the_cli_is_one_line(flawed_store, tmp_path, capsys):
    from snr_moe_dask.cli import main

    path, _ = flawed_store
    code = main(
        [
            "fit",
            path,
            "--model",
            str(tmp_path / "m.zarr"),
            "--strict",
            "--quiet",
            "--partitions",
            "1",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "snr-moe fit: error: --strict: variable 'flux'" in err and "spectrum 412" in err
    assert not (tmp_path / "m.zarr").exists()
