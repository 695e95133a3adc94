"""Driver loss: a fit killed with SIGKILL resumes from its checkpoints, bit-identically."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dask
import numpy as np
import pytest
import zarr

from snr_moe_dask import generate_survey
from snr_moe_dask.cli import main
from snr_moe_dask.model import SNRBinnedRidge, load_model
from snr_moe_dask.store.checkpoint import META, partition_path

FIT = ["--alpha", "1e3", "--min-spectra", "1", "--partitions", "2", "--quiet"]
CLUSTER = ["--workers", "1", "--threads-per-worker", "2"]


@pytest.fixture(scope="module")
def long_store(tmp_path_factory):
    """60 chunks of 100 spectra: long enough a pass to kill in the middle."""
    path = tmp_path_factory.mktemp("ckpt") / "train.zarr"
    with dask.config.set(scheduler="threads"):
        generate_survey(path, 6000, pixels=512, chunk_size=100, seed=5)
    return path


def _saved_chunks(directory) -> dict[int, int]:
    """Partition to the last chunk its checkpoint holds."""
    out = {}
    for p in range(2):
        path = partition_path(directory, p)
        if path.exists():
            try:
                out[p] = int(zarr.open_group(str(path), mode="r").attrs["last_chunk"])
            except (KeyError, FileNotFoundError):  # being renamed into place right now
                pass
    return out


@pytest.fixture(scope="module")
def killed(long_store, tmp_path_factory):
    """The checkpoint directory of a fit whose driver was SIGKILLed mid-pass."""
    root = tmp_path_factory.mktemp("killed")
    ckpt, model = root / "ckpt", root / "m.zarr"
    cmd = [sys.executable, "-m", "snr_moe_dask.cli", "fit", str(long_store)]
    cmd += ["--model", str(model), "--checkpoint", str(ckpt), *FIT, *CLUSTER]
    env = {**os.environ, "DASK_SNR_MOE__FIT__CHECKPOINT_EVERY": "3"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not _saved_chunks(ckpt):
        time.sleep(0.01)
    # SIGKILL the driver and everything it started, as a batch system does at walltime.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not model.exists()
    assert _saved_chunks(ckpt), "no checkpoint was written before the kill"
    assert (ckpt / META).exists()
    return ckpt


def _copy(ckpt, tmp_path):
    import shutil

    return shutil.copytree(ckpt, tmp_path / "ckpt")


def _resume(store, model, ckpt, *extra):
    args = ["fit", str(store), "--model", str(model), "--checkpoint", str(ckpt), "--resume"]
    with dask.config.set({"snr-moe.fit.checkpoint-every": 3}):
        return main([*args, *FIT[:-1], *CLUSTER, *extra])


@pytest.mark.timeout(300)
def test_sigkill_of_the_driver_then_resume_is_bit_identical(long_store, killed, tmp_path, capsys):
    ckpt, model = _copy(killed, tmp_path), tmp_path / "m.zarr"
    assert _resume(long_store, model, ckpt) == 0
    out = capsys.readouterr().out
    restored = sum(last + 1 - (0, 30)[p] for p, last in _saved_chunks(killed).items())
    assert f"{restored} of 60 chunks restored from checkpoints, {60 - restored} read" in out
    assert 0 < restored < 60
    assert not ckpt.exists()  # removed once the model is saved
    resumed = load_model(model)
    # The same fit uninterrupted, on the same kind of cluster (BLAS threads change
    # the last bits of a product, so the reference runs where the resumed fit ran).
    assert (
        main(["fit", str(long_store), "--model", str(tmp_path / "clean.zarr"), *FIT, *CLUSTER]) == 0
    )
    clean = load_model(tmp_path / "clean.zarr")
    np.testing.assert_array_equal(resumed.coef_, clean.coef_)
    np.testing.assert_array_equal(resumed.intercept_, clean.intercept_)
    np.testing.assert_array_equal(resumed.n_train_, clean.n_train_)
    np.testing.assert_array_equal(resumed.gate_["coef"], clean.gate_["coef"])


def test_a_checkpointed_fit_equals_a_plain_one(long_store, tmp_path):
    ckpt = tmp_path / "ckpt"
    with dask.config.set(scheduler="threads", **{"snr-moe.fit.checkpoint-every": 7}):
        plain = SNRBinnedRidge(alpha=1e3, partitions=2).fit(long_store)
        saved = SNRBinnedRidge(alpha=1e3, partitions=2).fit(long_store, checkpoint=ckpt)
    record = saved.fit_record
    assert (record.chunks, record.folded, record.restored) == (60, 60, 0)
    assert record.checkpoint == str(ckpt)
    np.testing.assert_array_equal(saved.coef_, plain.coef_)
    assert (ckpt / "partition-0.zarr").exists()  # kept until the caller removes them
    from snr_moe_dask.store.checkpoint import remove

    (ckpt / "notes.txt").write_text("mine")
    remove(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["notes.txt"]


def test_a_checkpoint_directory_with_other_files_is_refused(long_store, tmp_path):
    from snr_moe_dask.store.checkpoint import CheckpointError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds other files"):
        SNRBinnedRidge(alpha=1e3, partitions=2).fit(long_store, checkpoint=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        SNRBinnedRidge(alpha=1e3).fit(long_store, checkpoint=tmp_path / "new", resume=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--max-bad-fraction", "0.5"], "max_bad_fraction"),
        (["--precision", "float64"], "precision"),
        (["--partitions", "3"], "partitions"),
    ],
)
def test_resume_with_other_settings_is_refused(
    long_store, killed, tmp_path, capsys, change, message
):
    ckpt, model = _copy(killed, tmp_path), tmp_path / "m.zarr"
    assert _resume(long_store, model, ckpt, *change, "--quiet") == 2
    err = capsys.readouterr().err
    assert "cannot resume from checkpoint" in err and message in err, err
    assert "Traceback" not in err and not model.exists()


def test_resume_against_a_changed_store_is_refused(long_store, killed, tmp_path, capsys):
    import shutil

    store = tmp_path / "train.zarr"
    shutil.copytree(long_store, store)
    zarr.open_group(str(store), mode="r+").attrs["edited"] = True
    ckpt = _copy(killed, tmp_path)
    assert _resume(store, tmp_path / "m.zarr", ckpt, "--quiet") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "fingerprint" in err and "store" in err


def test_existing_checkpoints_need_resume_or_overwrite(long_store, killed, tmp_path, capsys):
    ckpt = _copy(killed, tmp_path)
    args = ["fit", str(long_store), "--model", str(tmp_path / "m.zarr"), "--checkpoint"]
    assert main([*args, str(ckpt), "--alpha", "1e3", *CLUSTER, "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["fit", str(long_store), "--model", "m.zarr", "--resume", *CLUSTER]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err
