"""The session-wide throw-away SLURM (tests/infra/testslurm.sh) as a pytest fixture.

``conftest.py`` re-exports :func:`testslurm`, so every test module shares one
SLURM per session: munged + slurmctld + slurmd in a private state directory,
started on first use and stopped (every daemon checked gone) at the end.

Needs `slurm-wlm` and `munge` (.ci/install-system.sh). Without them the tests
that use it are skipped on a developer machine, and fail under CI (CI set).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTSLURM = REPO / "tests" / "infra" / "testslurm.sh"
NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "munged")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recorded_pids(state: Path) -> dict[str, int]:
    pids = {}
    for f in (state / "pids").glob("*.pid"):
        text = f.read_text().strip()
        if text.isdigit():
            pids[f.stem] = int(text)
    return pids


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _testslurm(action: str, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        ["bash", str(TESTSLURM), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"testslurm.sh {action} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture(scope="session")
def testslurm(tmp_path_factory):
    """A running single-node SLURM; yields .state, .conf and .env (with SLURM_CONF)."""
    missing = [c for c in NEEDED if shutil.which(c) is None]
    if missing:
        reason = f"SLURM not installed (missing {', '.join(missing)}; run .ci/install-system.sh)"
        if _in_ci():
            hint = ".ci/run must call .ci/install-system.sh"
            pytest.fail(f"{reason}, but CI is set: {hint}", pytrace=False)
        pytest.skip(reason)

    state = tmp_path_factory.mktemp("testslurm")
    env = dict(
        os.environ,
        TESTSLURM_DIR=str(state),
        # Own ports, so a testslurm a developer left running does not clash.
        TESTSLURM_CTLD_PORT=str(_free_port()),
        TESTSLURM_SLURMD_PORT=str(_free_port()),
        TESTSLURM_TIMEOUT="60",
    )
    try:
        out = _testslurm("start", env)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        try:
            _testslurm("stop", env, timeout=60)
        finally:
            pytest.fail(f"could not start the test SLURM: {exc}", pytrace=False)
    conf = state / "slurm.conf"
    assert f"export SLURM_CONF={conf}" in out
    assert (state / "env").read_text().strip() == f"export SLURM_CONF={conf}"
    pids = _recorded_pids(state)
    assert set(pids) == {"munged", "slurmctld", "slurmd"}, pids

    client_env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        yield SimpleNamespace(state=state, conf=conf, env=client_env, pids=pids)
    finally:
        _testslurm("stop", env, timeout=90)
        alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not alive, f"daemons still running after testslurm.sh stop: {alive}"
