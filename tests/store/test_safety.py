"""Nothing lost, nothing silently wrong: each reproduction of a data-loss or silent-error
defect gives one clear line and exit status 2 with nothing lost, or a correct result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from sklearn.linear_model import Ridge

from snr_moe_dask import generate_survey, open_spectra
from snr_moe_dask.cli import main
from snr_moe_dask.model import SNRBinnedRidge

ONE = ["--workers", "1", "--threads-per-worker", "1", "--quiet"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) with the hash of its bytes."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run(args, capfd) -> tuple[int, str]:
    capfd.readouterr()
    status = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return status, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A training and a test store (ours: marked and checksummed), and a model."""
    root = tmp_path_factory.mktemp("safety")
    with dask.config.set(scheduler="threads"):
        generate_survey(root / "train.zarr", 600, pixels=32, chunk_size=200, seed=1)
        generate_survey(root / "test.zarr", 300, pixels=32, chunk_size=100, seed=2)
        model = SNRBinnedRidge(alpha=10.0, min_spectra=1).fit(str(root / "train.zarr"))
    model.save(root / "m.zarr")
    return root


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------- 1. outputs


def test_evaluate_out_onto_its_test_store_is_refused(stores, tmp_path, capfd):
    test = copy(stores / "test.zarr", tmp_path / "test.zarr")
    before = snapshot(test)
    status, err = run(
        ["evaluate", stores / "m.zarr", test, "--out", test, "--overwrite", *ONE], capfd
    )
    line = one_line(err)
    assert status == 2 and "is the input" in line and str(test) in line
    assert snapshot(test) == before


def test_fit_model_onto_its_training_store_is_refused(stores, tmp_path, capfd):
    train = copy(stores / "train.zarr", tmp_path / "S.zarr")
    before = snapshot(train)
    status, err = run(["fit", train, "--model", train, "--overwrite", *ONE], capfd)
    assert status == 2 and "is the input" in one_line(err)
    assert snapshot(train) == before


def test_evaluate_out_holding_its_inputs_is_refused(stores, tmp_path, capfd):
    proj = tmp_path / "proj"
    copy(stores / "test.zarr", proj / "test.zarr")
    copy(stores / "m.zarr", proj / "m.zarr")
    (proj / "notes.txt").write_text("mine")
    before = snapshot(proj)
    args = ["evaluate", proj / "m.zarr", proj / "test.zarr", "--out", proj, "--overwrite", *ONE]
    status, err = run(args, capfd)
    line = one_line(err)
    assert status == 2 and "contains the input" in line
    assert snapshot(proj) == before


def test_generate_overwrite_of_a_folder_the_tool_did_not_write_is_refused(tmp_path, capfd):
    folder = tmp_path / "DIR"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    before = snapshot(folder)
    status, err = run(["generate", folder, "--n", "10", "--overwrite", *ONE], capfd)
    line = one_line(err)
    assert status == 2 and "carries no snr-moe marker" in line and "delete it yourself" in line
    assert snapshot(folder) == before


def test_overwrite_of_another_kind_of_output_is_refused(stores, tmp_path, capfd):
    train = tmp_path / "t.zarr"
    with dask.config.set(scheduler="sync"):
        generate_survey(train, 50, pixels=8, chunk_size=25)
    before = snapshot(train)
    status, err = run(["fit", stores / "train.zarr", "--model", train, "--overwrite", *ONE], capfd)
    assert status == 2 and "it is an snr-moe spectra output" in one_line(err)
    assert snapshot(train) == before


def test_run_with_stores_inside_its_output_folder_is_refused(stores, tmp_path, capfd):
    out = tmp_path / "results"
    copy(stores / "train.zarr", out / "train.zarr")
    copy(stores / "test.zarr", out / "test.zarr")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "output": str(out),
                "data": {
                    "train_size": 600,
                    "test_size": 300,
                    "feature_dim": 32,
                    "train_store": str(out / "train.zarr"),
                    "test_store": str(out / "test.zarr"),
                },
            }
        )
    )
    before = snapshot(out)
    status, err = run(["run", cfg, "--overwrite", *ONE], capfd)
    assert status == 2 and "contains the input" in one_line(err)
    assert snapshot(out) == before


def test_overwrite_of_the_tools_own_output_still_works(stores, tmp_path, capfd):
    out = tmp_path / "eval"
    args = ["evaluate", stores / "m.zarr", stores / "test.zarr", "--out", out, "--bootstrap", "0"]
    assert run([*args, *ONE], capfd)[0] == 0
    assert run([*args, "--overwrite", *ONE], capfd)[0] == 0
    from snr_moe_dask.store.outputs import output_kind

    assert output_kind(out) == "evaluation" and output_kind(out / "model.zarr") is None
    assert output_kind(out / "predictions.zarr") == "predictions"
    assert json.loads((out / ".snr-moe-output.json").read_text())["kind"] == "evaluation"


# ---------------------------------------------------------------------- 2. complete reads


def test_a_missing_flux_chunk_stops_the_fit(stores, tmp_path, capfd):
    train = copy(stores / "train.zarr", tmp_path / "train.zarr")
    (train / "flux" / "c" / "1" / "0").unlink()
    status, err = run(["fit", train, "--model", tmp_path / "m.zarr", *ONE], capfd)
    line = one_line(err)
    assert status == 2
    assert f"store {str(train)!r} is incomplete" in line and "'flux/c/1/0'" in line
    assert not (tmp_path / "m.zarr").exists()


def test_missing_model_coefficients_stop_the_evaluation(stores, tmp_path, capfd):
    model = copy(stores / "m.zarr", tmp_path / "m.zarr")
    for chunk in (model / "coef" / "c").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    args = ["evaluate", model, stores / "test.zarr", "--out", tmp_path / "e", *ONE]
    status, err = run(args, capfd)
    line = one_line(err)
    assert status == 2 and "is incomplete" in line and "'coef/c/" in line
    assert not (tmp_path / "e").exists()


def test_a_missing_checkpoint_chunk_stops_the_resume(stores, tmp_path, capfd):
    ckpt = tmp_path / "ckpt"
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(**FIT).fit(str(stores / "train.zarr"), checkpoint=ckpt)
    # The first chunk file of the Gram statistics (packed or not, its key has 2 or 3 parts).
    min(p for p in (ckpt / "partition-0.zarr" / "sxx" / "c").rglob("*") if p.is_file()).unlink()
    args = ["fit", stores / "train.zarr", "--model", tmp_path / "m.zarr", *FIT_FLAGS]
    status, err = run([*args, "--checkpoint", ckpt, "--resume", *ONE], capfd)
    line = one_line(err)
    assert status == 2 and "is incomplete" in line and "sxx" in line


def test_a_chunk_overwritten_with_garbage_of_its_own_size_fails_its_checksum(
    stores, tmp_path, capfd
):
    train = copy(stores / "train.zarr", tmp_path / "train.zarr")
    chunk = train / "flux" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[100:108] = b"\x00\x01\x02\x03\x04\x05\x06\x07"
    chunk.write_bytes(bytes(data))
    status, err = run(["fit", train, "--model", tmp_path / "m.zarr", *ONE], capfd)
    line = one_line(err)
    assert status == 2 and "checksum" in line and "'flux/c/1/0'" in line


# ---------------------------------------------------------------------- 3. fingerprint


FIT = {"alpha": 10.0, "min_spectra": 1, "partitions": 1}
FIT_FLAGS = ["--alpha", "10", "--min-spectra", "1", "--partitions", "1"]


def _interrupted_fit(store: Path, ckpt: Path) -> None:
    """Checkpoints of a fit of ``store`` (kept, as after a driver that died)."""
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(**FIT).fit(str(store), checkpoint=ckpt)


@pytest.mark.parametrize("ours", [True, False])
def test_labels_rewritten_in_place_refuse_the_resume(stores, tmp_path, capfd, ours):
    store = tmp_path / "s.zarr"
    if ours:
        copy(stores / "train.zarr", store)
    else:  # written by plain xarray, uncompressed: no checksums, no marker, fixed sizes
        ds = xr.open_zarr(stores / "train.zarr").load()
        ds.to_zarr(store, zarr_format=3, encoding={v: {"compressors": None} for v in ds})
    ckpt = tmp_path / "ckpt"
    _interrupted_fit(store, ckpt)
    logg = zarr.open_array(store / "logg", mode="r+")
    logg[:100] = logg[:100] + 1.0  # same sizes, new content
    args = ["fit", store, "--model", tmp_path / "m.zarr", *FIT_FLAGS]
    status, err = run([*args, "--checkpoint", ckpt, "--resume", *ONE], capfd)
    line = one_line(err)
    assert status == 2 and "cannot resume from checkpoint" in line
    assert ("fingerprint" in line) if ours else ("changed since it was checkpointed" in line)


def test_an_unchanged_foreign_store_resumes(stores, tmp_path, capfd):
    store = tmp_path / "s.zarr"
    xr.open_zarr(stores / "train.zarr").load().to_zarr(store, zarr_format=3)
    ckpt = tmp_path / "ckpt"
    _interrupted_fit(store, ckpt)
    args = ["fit", store, "--model", tmp_path / "m.zarr", *FIT_FLAGS]
    assert run([*args, "--checkpoint", ckpt, "--resume", *ONE], capfd)[0] == 0


# ---------------------------------------------------------------------- 4. configuration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)  # a hang fails here, not in CI's limit
def test_the_yaml_cluster_kind_is_honoured(stores, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("DASK_SNR_MOE__CLUSTER__CONNECT_TIMEOUT", "2s")
    address = f"tcp://127.0.0.1:{_free_port()}"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "output": str(tmp_path / "out"),
                "data": {
                    "train_size": 600,
                    "test_size": 300,
                    "feature_dim": 32,
                    "train_store": str(stores / "train.zarr"),
                    "test_store": str(stores / "test.zarr"),
                },
                "cluster": {"kind": address},
            }
        )
    )
    status, err = run(["run", cfg, "--quiet"], capfd)
    line = one_line(err)
    assert status == 2 and f"cannot connect to the Dask scheduler at {address}" in line


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fit": {"min_spectra": -5}}, r"exp\.yaml: fit\.min_spectra: must be an integer >= 1"),
        ({"evaluate": {"seed": -1}}, r"exp\.yaml: evaluate\.seed: must be an integer >= 0"),
        ({"model": {"alpha": float("inf")}}, r"exp\.yaml: model\.alpha: must be a finite"),
        ({"cluster": {"workers": 0}}, r"exp\.yaml: cluster\.workers: must be an integer >= 1"),
        (
            {"routing": {"type": "observed"}, "evaluate": {"routings": ["oracle", "soft"]}},
            r"exp\.yaml: evaluate\.routings: \['soft'\] need the gate",
        ),
    ],
)
def test_yaml_value_errors_name_the_file_and_key(stores, tmp_path, capfd, change, message):
    import re

    raw = {
        "output": str(tmp_path / "out"),
        "data": {
            "train_size": 600,
            "test_size": 300,
            "train_store": str(tmp_path / "new-train.zarr"),
            "test_store": str(tmp_path / "new-test.zarr"),
        },
    }
    for section, values in change.items():
        raw.setdefault(section, {}).update(values)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    status, err = run(["run", cfg, *ONE], capfd)
    assert status == 2 and re.search(message, one_line(err)), err
    assert not (tmp_path / "new-train.zarr").exists()  # nothing generated, nothing fitted


# ---------------------------------------------------------------------- 5. honest evaluation


def test_evaluating_the_training_store_is_refused_unless_allowed(stores, tmp_path, capfd):
    copy_of_train = copy(stores / "train.zarr", tmp_path / "copy.zarr")
    for test in (stores / "train.zarr", copy_of_train):
        status, err = run(
            ["evaluate", stores / "m.zarr", test, "--out", tmp_path / "e", *ONE], capfd
        )
        assert status == 2 and "is the training store of model" in one_line(err)
    args = ["evaluate", stores / "m.zarr", stores / "train.zarr", "--out", tmp_path / "e"]
    assert run([*args, "--allow-training-store", "--bootstrap", "20", *ONE], capfd)[0] == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["test_is_training_set"] is True
    report = (tmp_path / "e" / "report.md").read_text()
    assert "Training set, not held-out" in report and "held-out test spectra" not in report


def test_a_foreign_copy_of_the_training_store_is_recognised_by_content(stores, tmp_path):
    from snr_moe_dask.evaluation.graph import is_training_store

    train = tmp_path / "train.zarr"
    xr.open_zarr(stores / "train.zarr").load().to_zarr(train, zarr_format=3)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0, min_spectra=1, gate=False).fit(str(train))
        copy(train, tmp_path / "copy.zarr")
        assert is_training_store(model, str(tmp_path / "copy.zarr"))
        other = tmp_path / "other.zarr"
        copy(train, other)
        logg = zarr.open_array(other / "logg", mode="r+")
        logg[0] = logg[0] + 1.0  # same layout and sizes, other content
        assert not is_training_store(model, str(other))


# ---------------------------------------------------------------------- 6, 7. cluster, damage


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "-2"], r"argument --workers: must be an integer >= 1; got '-2'"),
        (["--threads-per-worker", "-1"], r"argument --threads-per-worker: must be an integer"),
        (["--scheduler-file", "/no/such/file.json"], r"must be the path of an existing file"),
        (["--cluster", "tcp://nowhere"], r"argument --cluster: must be local, slurm, pbs"),
        (["--partitions", "0"], r"argument --partitions: must be an integer >= 1"),
        (["--min-spectra", "-5"], r"argument --min-spectra: must be an integer >= 1"),
        (["--alpha", "inf"], r"argument --alpha: must be a finite number >= 0"),
        (["--alpha", "nan"], r"argument --alpha: must be a finite number >= 0"),
        (["--alpha", "global=1e5,X=inf"], r"argument --alpha: must be a finite number"),
    ],
)
@pytest.mark.timeout(120)  # a hang fails here, not in CI's limit
def test_bad_cluster_and_fit_flags_are_one_line_before_anything_starts(
    stores, tmp_path, capfd, flags, message
):
    import re

    with pytest.raises(SystemExit) as info:
        main(["fit", str(stores / "train.zarr"), "--model", str(tmp_path / "m.zarr"), *flags])
    err = capfd.readouterr().err
    assert info.value.code == 2 and re.search(message, one_line(err)), err


@pytest.mark.timeout(120)  # a hang fails here, not in CI's limit
def test_an_unreachable_scheduler_is_one_line_within_the_timeout(stores, tmp_path, capfd):
    address = f"tcp://127.0.0.1:{_free_port()}"
    with dask.config.set({"snr-moe.cluster.connect-timeout": "2s"}):
        status, err = run(
            ["fit", stores / "train.zarr", "--model", tmp_path / "m.zarr", "--cluster", address],
            capfd,
        )
    line = one_line(err)
    assert status == 2 and "cannot connect to the Dask scheduler" in line and "2 s" in line


@pytest.mark.timeout(120)  # a hang fails here, not in CI's limit
def test_a_scheduler_file_naming_nobody_is_one_line(stores, tmp_path, capfd):
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"address": f"tcp://127.0.0.1:{_free_port()}"}))
    with dask.config.set({"snr-moe.cluster.connect-timeout": "2s"}):
        status, err = run(
            ["fit", stores / "train.zarr", "--model", tmp_path / "m", "--scheduler-file", sched],
            capfd,
        )
    assert status == 2 and "cannot connect to the Dask scheduler" in one_line(err)


@pytest.mark.parametrize("damage", ["variable", "attribute"])
def test_a_damaged_model_store_names_what_it_lacks(stores, tmp_path, capfd, damage):
    model = copy(stores / "m.zarr", tmp_path / "m.zarr")
    if damage == "variable":
        shutil.rmtree(model / "intercept")
        meta = json.loads((model / "zarr.json").read_text())
        meta["consolidated_metadata"]["metadata"].pop("intercept")
        (model / "zarr.json").write_text(json.dumps(meta))
        expected = "lacks intercept"
    else:
        group = zarr.open_group(model, mode="r+")
        del group.attrs["solver"]
        zarr.consolidate_metadata(model)
        expected = "lacks attribute 'solver'"
    args = ["evaluate", model, stores / "test.zarr", "--out", tmp_path / "e", *ONE]
    status, err = run(args, capfd)
    line = one_line(err)
    assert status == 2 and "damaged or incomplete" in line and expected in line


def test_run_given_a_directory_is_one_line(tmp_path, capfd):
    status, err = run(["run", tmp_path, *ONE], capfd)
    assert status == 2 and "is a directory; expected an experiment YAML file" in one_line(err)


# ---------------------------------------------------------------------- 8. degenerate values


def test_penalties_must_be_finite():
    x, y = np.ones((5, 3)), np.arange(5.0)
    for bad in (np.inf, np.nan, {"global": np.inf}):
        with pytest.raises(ValueError, match="alpha must be >= 0 and finite"):
            SNRBinnedRidge(alpha=bad, routing="observed").fit(x, y)


def test_values_beyond_float32_are_fitted_correctly(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)) * 1e39  # a float64 store in units float32 cannot hold
    y = x @ rng.normal(size=6) / 1e39 + rng.normal(size=300) * 0.1
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=1e70, routing="observed", gate=False, bins=[1e300], bin_names=["A", "B"]
        ).fit(x, y, error=np.ones_like(x))
    ref = Ridge(alpha=1e70).fit(x, y)
    assert np.isfinite(model.coef_).all()
    np.testing.assert_allclose(x @ model.coef_[0, :, 0] + model.intercept_[0, 0], ref.predict(x),
                               rtol=0, atol=1e-8 * y.std())  # fmt: skip


def test_tiny_values_are_fitted_correctly():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(300, 6)) * 1e-20).astype(np.float32)  # erg/s/cm2/A-like units
    y = x.astype(np.float64) @ rng.normal(size=6) * 1e20 + rng.normal(size=300) * 0.1
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=1e-42, routing="observed", gate=False, bins=[1.0], bin_names=["A", "B"]
        ).fit(x, y)
    ref = Ridge(alpha=1e-42).fit(x.astype(np.float64), y)
    pred = x.astype(np.float64) @ model.coef_[0, :, 0] + model.intercept_[0, 0]
    np.testing.assert_allclose(pred, ref.predict(x.astype(np.float64)), atol=1e-6 * y.std())


def test_a_store_with_no_spectra_is_one_line(stores, tmp_path, capfd):
    empty = tmp_path / "empty.zarr"
    xr.open_zarr(stores / "train.zarr").isel(spectrum=slice(0, 0)).load().to_zarr(
        empty, zarr_format=3
    )
    status, err = run(["fit", empty, "--model", tmp_path / "m.zarr", *ONE], capfd)
    assert status == 2 and "holds no spectra" in one_line(err)


def test_a_test_store_with_no_usable_spectrum_is_one_line(stores, tmp_path, capfd):
    unlabelled = tmp_path / "u.zarr"
    ds = xr.open_zarr(stores / "test.zarr").load()
    ds["logg"][:] = np.nan
    ds.to_zarr(unlabelled, zarr_format=3)
    args = ["evaluate", stores / "m.zarr", unlabelled, "--out", tmp_path / "e", *ONE]
    status, err = run(args, capfd)
    line = one_line(err)
    assert status == 2 and "no spectrum of test store" in line and "nothing was written" in line
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("target", ["name", "flux"])
def test_a_string_or_2d_target_is_one_line_before_compute(stores, tmp_path, capfd, target):
    store = tmp_path / "s.zarr"
    ds = xr.open_zarr(stores / "train.zarr").load()
    ds["name"] = ("spectrum", np.array([f"star{i}" for i in range(ds.sizes["spectrum"])]))
    ds.to_zarr(store, zarr_format=3)
    status, err = run(["fit", store, "--model", tmp_path / "m", "--target", target, *ONE], capfd)
    line = one_line(err)
    assert status == 2 and f"variable {target!r}" in line and "one number per spectrum" in line


def test_a_negative_seed_is_refused_at_once(stores, tmp_path, capfd):
    args = ["evaluate", stores / "m.zarr", stores / "test.zarr", "--out", tmp_path / "e"]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in [*args, "--seed", "-1"]])
    assert info.value.code == 2
    assert "argument --seed: must be an integer >= 0" in one_line(capfd.readouterr().err)


def test_an_output_under_a_file_is_refused_before_compute(stores, tmp_path, capfd):
    (tmp_path / "file").write_text("x")
    status, err = run(
        ["fit", stores / "train.zarr", "--model", tmp_path / "file" / "m", *ONE], capfd
    )
    assert status == 2 and "is a file, not a folder" in one_line(err)


def test_open_spectra_refuses_an_empty_store(stores, tmp_path):
    empty = tmp_path / "e.zarr"
    xr.open_zarr(stores / "test.zarr").isel(spectrum=slice(0, 0)).load().to_zarr(
        empty, zarr_format=3
    )
    with pytest.raises(ValueError, match="holds no spectra"):
        open_spectra(empty)


def test_nothing_outside_the_tools_outputs_is_touched_by_this_module(stores):
    assert sorted(os.listdir(stores)) == ["m.zarr", "test.zarr", "train.zarr"]


@pytest.mark.parametrize("how", ["xarray", "cp"])
def test_a_user_copy_of_a_tool_store_is_the_users(stores, tmp_path, capfd, how):
    """Attributes travel with the data, the marker's inode does not: a store written
    from a Dataset the tool opened, or copied, is not replaced by --overwrite."""
    mine = tmp_path / "mine.zarr"
    if how == "xarray":
        xr.open_zarr(stores / "train.zarr").load().to_zarr(mine, zarr_format=3)
    else:
        copy(stores / "train.zarr", mine)
    assert "snr_moe_output" in xr.open_zarr(mine).attrs  # the attribute came along
    before = snapshot(mine)
    status, err = run(["generate", mine, "--n", "10", "--overwrite", *ONE], capfd)
    assert status == 2 and "carries no snr-moe marker" in one_line(err)
    assert snapshot(mine) == before


def test_a_file_added_to_a_tool_output_is_kept(stores, tmp_path, capfd):
    out = tmp_path / "e"
    args = ["evaluate", stores / "m.zarr", stores / "test.zarr", "--out", out, "--bootstrap", "0"]
    assert run([*args, *ONE], capfd)[0] == 0
    (out / "my-notes.md").write_text("keep me")
    status, err = run([*args, "--overwrite", *ONE], capfd)
    assert status == 2 and "'my-notes.md', which it did not write" in one_line(err)
    assert (out / "my-notes.md").read_text() == "keep me"


# ---------------------------------------------------------------------- the property

NAMES = ("a", "b", "c")
KINDS = ("spectra", "model", "evaluation")


def _build(root: Path, spec) -> list[Path]:
    """Create a random tree: each entry (depth-path, what) is a user file, a user
    folder, or an output the tool wrote (through atomic_path, as the commands do)."""
    from snr_moe_dask.store.outputs import atomic_path

    made = []
    for parts, what in spec:
        path = root.joinpath(*parts)
        if any(p.exists() and not p.is_dir() for p in path.parents) or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if what == "file":
            path.write_text(f"user data {parts}")
        elif what == "dir":
            path.mkdir()
            (path / "inside.txt").write_text("user data inside")
        else:
            with atomic_path(path, kind=what) as tmp:
                tmp.mkdir()
                (tmp / "zarr.json").write_text("{}")
        made.append(path)
    return made


def test_overwrite_never_removes_what_the_tool_did_not_write_nor_an_input(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from snr_moe_dask.store.outputs import OutputError, atomic_path, output_kind

    part = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)
    entry = st.tuples(part, st.sampled_from(("file", "dir", *KINDS)))

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        spec=st.lists(entry, max_size=8),
        out=part,
        reuse=st.integers(-1, 7),
        kind=st.sampled_from(KINDS),
        picks=st.lists(st.integers(0, 7), max_size=3),
    )
    def check(spec, out, reuse, kind, picks):
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        made = _build(root, spec)
        inputs = [made[i] for i in picks if i < len(made)]
        user = {}
        for p in root.rglob("*"):
            if p.is_file() and not any(output_kind(q) for q in [p.parent, *p.parents]):
                user[p] = p.read_bytes()
        protected = {k: v for k, v in snapshot(root).items() if any(
            Path(k) == i or Path(k).is_relative_to(i) for i in inputs)}  # fmt: skip
        target = made[reuse] if 0 <= reuse < len(made) else root.joinpath(*out)
        existed = target.exists()
        try:
            with atomic_path(target, overwrite=True, kind=kind, inputs=inputs) as tmp:
                tmp.mkdir()
                (tmp / "zarr.json").write_text('{"new": true}')
            outcomes["replaced" if existed else "written"] += 1
        except (OutputError, FileExistsError):
            outcomes["refused"] += 1
        for p, data in user.items():
            assert p.is_file() and p.read_bytes() == data, p
        now = snapshot(root)
        for p, digest in protected.items():
            assert now.get(p) == digest, p

    outcomes = {"replaced": 0, "written": 0, "refused": 0}
    check()
    assert all(outcomes.values()), outcomes  # every branch was exercised
