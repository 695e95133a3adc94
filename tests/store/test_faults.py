"""Faults outside the cluster: damaged stores, a run killed while writing, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest

from snr_moe_dask import generate_survey
from snr_moe_dask.cli import main
from snr_moe_dask.model import SNRBinnedRidge

ROWS, PIXELS = 20, 16  # rows per chunk and pixels of the damaged stores


def _store(path: Path, codec: str = "none", n: int = 60, seed: int = 3) -> str:
    with dask.config.set(scheduler="sync"):
        generate_survey(path, n, pixels=PIXELS, chunk_size=ROWS, seed=seed, codec=codec)
    return str(path)


def _truncate(store: str, key: str) -> None:
    chunk = Path(store, "flux", key)
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size // 2)


def _garble(store: str, key: str, size: int | None = None) -> None:
    chunk = Path(store, "flux", key)
    n = chunk.stat().st_size if size is None else size
    chunk.write_bytes(bytes((7 * i + 13) % 256 for i in range(n)))


# How each store is damaged: (codec, damage). Chunk c/1/0 holds spectra 20-39.
# An uncompressed chunk overwritten with garbage of its own size is not
# detectable (no checksum): it reads as other numbers. Garbage of another size
# is, and so is any garbage in a compressed chunk.
DAMAGE = {
    "truncated": ("none", lambda s: _truncate(s, "c/1/0")),
    "garbage-wrong-size": ("none", lambda s: _garble(s, "c/1/0", size=37)),
    "garbage-zstd": ("zstd", lambda s: _garble(s, "c/1/0")),
    "truncated-zstd": ("zstd", lambda s: _truncate(s, "c/1/0")),
}


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"snr-moe {command}: error: "), err
    return lines[0]


def _names_the_chunk(line: str, store: str) -> None:
    assert f"store {store!r}" in line, line
    assert "variable 'flux'" in line, line
    assert "spectra 20-39" in line, line
    assert "chunk 'flux/c/1/0'" in line, line


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_fit_on_a_damaged_chunk_is_one_line_naming_it(damage, client, tmp_path, capsys):
    codec, spoil = DAMAGE[damage]
    store = _store(tmp_path / "train.zarr", codec)
    spoil(store)
    capsys.readouterr()  # the generator's own line
    out = tmp_path / "m.zarr"
    address = client.scheduler.address
    code = main(["fit", store, "--model", str(out), "--quiet", "--cluster", address])
    line = _one_error_line(capsys.readouterr().err, "fit")
    assert code == 2
    _names_the_chunk(line, store)
    assert not out.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_evaluate_on_a_damaged_chunk_is_one_line_naming_it(damage, client, tmp_path, capsys):
    codec, spoil = DAMAGE[damage]
    train = _store(tmp_path / "train.zarr", seed=4)
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=10.0, min_spectra=1).fit(train).save(tmp_path / "m.zarr")
    test = _store(tmp_path / "test.zarr", codec)
    spoil(test)
    capsys.readouterr()  # the generator's own lines
    out = tmp_path / "eval"
    address = client.scheduler.address
    code = main(
        ["evaluate", str(tmp_path / "m.zarr"), test, "--out", str(out), "--quiet"]
        + ["--bootstrap", "10", "--cluster", address]
    )
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert code == 2
    _names_the_chunk(line, test)
    assert not out.exists()
    assert not list(tmp_path.glob(".eval.tmp-*"))


# ---------------------------------------------------------------- killed runs


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``snr-moe ARGS`` in its own process group (so the test can signal it and its
    workers as a terminal would), on a one-worker LocalCluster."""
    return subprocess.Popen(
        [sys.executable, "-m", "snr_moe_dask.cli", *args, "--workers", "1"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def model_and_test(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    train = _store(root / "train.zarr", n=400, seed=5)
    test = _store(root / "test.zarr", n=300, seed=6)
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=10.0, min_spectra=1).fit(train).save(root / "model.zarr")
    return root / "model.zarr", Path(test)


@pytest.mark.timeout(180)
def test_evaluate_killed_while_writing_leaves_the_previous_output(model_and_test, tmp_path):
    from snr_moe_dask.evaluation.graph import evaluate_model

    model, test = model_and_test
    out = tmp_path / "eval"
    with dask.config.set(scheduler="sync"):
        evaluate_model(model, test, out, bootstrap=50)
    before = _snapshot(out)
    assert "metrics.json" in before and "report.md" in before

    proc = _start(
        ["evaluate", str(model), str(test), "--out", str(out), "--overwrite", "--quiet"], tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        writing = []
        while not writing and proc.poll() is None and time.monotonic() < deadline:
            writing = list(tmp_path.glob(".eval.tmp-*/predictions.zarr"))
            time.sleep(0.01)
        assert writing, f"the evaluation never started writing (status {proc.poll()})"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _stop(proc)

    assert _snapshot(out) == before
    json.loads((out / "metrics.json").read_text())
    # The killed run's temporary sibling is left behind, hidden; nothing else.
    others = {p.name for p in tmp_path.iterdir()} - {"eval"}
    assert all(re.fullmatch(r"\.eval\.tmp-[0-9a-f]{8}", name) for name in others), others


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "target, signum, status, word",
    [
        ("process", signal.SIGINT, 130, "interrupted"),
        ("group", signal.SIGINT, 130, "interrupted"),
        ("process", signal.SIGTERM, 143, "terminated"),
    ],
)
def test_an_interrupt_during_fit_exits_with_one_line(target, signum, status, word, tmp_path):
    """SIGINT to the command (``kill -INT``) or to its whole process group, workers
    included (Ctrl-C in a terminal), or SIGTERM to the command (``kill PID``, what a
    batch system or a supervisor sends first), while the fold tasks run: one line,
    nothing written, the LocalCluster's worker processes gone with the command."""
    import psutil

    store = _store(tmp_path / "train.zarr", n=2000, seed=7)  # 100 chunks of 20 x 16
    out = tmp_path / "m.zarr"
    proc = _start(["fit", store, "--model", str(out), "--min-spectra", "1"], tmp_path)
    try:
        for line in proc.stderr:  # the dashboard line, then the label of the pass
            if line.startswith("fit: one pass"):
                break
        if proc.poll() is not None:
            pytest.fail(
                f"the fit ended (status {proc.poll()}) before the interrupt: {proc.stderr.read()}"
            )
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "the LocalCluster has worker processes"
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)

    assert proc.returncode == status, err
    assert err.splitlines() == [f"snr-moe fit: {word}; outputs left as they were"], err
    assert not out.exists()
    assert not list(tmp_path.glob(".m.zarr.*"))
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.cmdline()[:3] for p in alive]


@pytest.mark.timeout(60)
def test_ctrl_c_inside_a_gc_callback_is_not_lost(monkeypatch, tmp_path, capsys):
    """Python ignores a KeyboardInterrupt raised in a gc callback (distributed's
    scheduler runs one on every collection); the command must still stop."""
    import gc

    from snr_moe_dask import cli

    def interrupted_in_gc(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the callback
            sum(range(1000))

    def fake_fit(args):
        gc.callbacks.append(interrupted_in_gc)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(interrupted_in_gc)
        assert fired
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0  # the interrupt was lost

    fired: list[bool] = []
    monkeypatch.setitem(cli.COMMANDS, "fit", fake_fit)
    # Keep distributed's gc callback (a scheduler of this session may have one)
    # out of the way: an interrupt landing in it would upset it for later tests.
    others = gc.callbacks[:]
    gc.callbacks.clear()
    try:
        code = cli.main(["fit", "train.zarr", "--model", str(tmp_path / "m.zarr")])
    finally:
        gc.callbacks[:] = others
    assert code == 130
    assert capsys.readouterr().err.splitlines() == [
        "snr-moe fit: interrupted; outputs left as they were"
    ]
    # Handler and logging are as they were for whatever runs next in this process.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert logging.root.manager.disable == logging.NOTSET


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


@pytest.mark.parametrize("death", [1, 2, 3])
def test_replacing_an_output_always_leaves_one_under_its_name(death, monkeypatch, tmp_path):
    """Die at each file-system step of the final swap: the output's name holds
    the old output or the new one, complete, never nothing."""
    from snr_moe_dask.store import outputs as io

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    steps = []

    def step(func):
        def wrapped(*a, **k):
            steps.append(func.__name__)
            if len(steps) == death:
                raise _Killed
            return func(*a, **k)

        return wrapped

    monkeypatch.setattr(io.os, "replace", step(os.replace))
    monkeypatch.setattr(io, "_remove", step(io._remove))
    if hasattr(io, "_exchange"):
        monkeypatch.setattr(io, "_exchange", step(io._exchange))
    with contextlib.suppress(_Killed):
        with io.atomic_path(out, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "metrics.json").write_text("new")
    assert (out / "metrics.json").read_text() in ("old", "new"), steps


def test_replacing_an_output_without_an_atomic_swap(monkeypatch, tmp_path):
    """Where the file system cannot swap (e.g. NFS), the two-rename path replaces
    the output and cleans up after itself."""
    from snr_moe_dask.store import outputs as io

    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    for text in ("old", "new"):
        with io.atomic_path(out, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "metrics.json").write_text(text)
    assert (out / "metrics.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
