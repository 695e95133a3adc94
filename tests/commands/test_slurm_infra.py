"""The throw-away single-node SLURM (tests/infra/testslurm.sh) works.

The session-scoped ``testslurm`` fixture (tests/slurm_fixture.py, shared
through conftest.py) starts munged + slurmctld + slurmd in a private state
directory, the tests submit real batch jobs to it, and the teardown stops it
and checks that every daemon it started is gone.

Needs `slurm-wlm` and `munge` (.ci/install-system.sh). Without them the
module is skipped on a developer machine, and fails under CI (CI set).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _sbatch(cluster, workdir: Path, script: str, *extra: str) -> int:
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--cpus-per-task=1",
            "--mem=100M",
            "--time=2",
            f"--chdir={workdir}",
            "--output=job-%j.out",
            *extra,
            "--wrap",
            script,
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return int(out.strip().split(";")[0])


def _wait_for_output(path: Path, marker: str, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if marker in text:
                return text
        time.sleep(0.2)
    raise AssertionError(f"{path} has no {marker!r} after {timeout}s")


def test_status_reports_idle_node(testslurm):
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %t %c %P"],
        env=testslurm.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    node, state, cpus, partition = out[:4]
    assert node == socket.gethostname().split(".")[0]
    assert state in ("idle", "mix", "alloc")
    assert int(cpus) == os.cpu_count()
    assert partition == "debug*"


def test_sbatch_job_runs_and_writes_output(testslurm, tmp_path):
    job = _sbatch(testslurm, tmp_path, "echo job=$SLURM_JOB_ID host=$(hostname -s); echo DONE")
    text = _wait_for_output(tmp_path / f"job-{job}.out", "DONE")
    assert f"job={job} host={socket.gethostname().split('.')[0]}" in text


def test_two_one_cpu_jobs_run_concurrently(testslurm, tmp_path):
    """CR_Core_Memory packs two 1-CPU jobs on the node at the same time."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs")
    script = "echo start $(date +%s.%N); sleep 3; echo end $(date +%s.%N)"
    jobs = [_sbatch(testslurm, tmp_path, script) for _ in range(2)]
    spans = []
    for job in jobs:
        text = _wait_for_output(tmp_path / f"job-{job}.out", "end ")
        fields = dict(
            line.split()[:2] for line in text.splitlines() if line.startswith(("start ", "end "))
        )
        spans.append((float(fields["start"]), float(fields["end"])))
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end, f"jobs did not overlap: {spans}"


def test_dask_jobqueue_tls_workers(testslurm, tmp_path, monkeypatch):
    """dask-jobqueue submits worker jobs that connect back over TLS.

    Security.temporary() keeps its certificates in memory; dask-jobqueue writes
    the worker's copies into shared_temp_directory for the job script.
    """
    handler = signal.getsignal(signal.SIGINT)
    from dask_jobqueue import SLURMCluster

    # Importing dask_jobqueue installs SIGINT -> sys.exit(); keep pytest's Ctrl-C.
    signal.signal(signal.SIGINT, handler)
    from distributed import Client
    from distributed.security import Security

    monkeypatch.setenv("SLURM_CONF", str(testslurm.conf))
    security = Security.temporary()
    with SLURMCluster(
        cores=1,
        processes=1,
        memory="1GB",
        walltime="00:05:00",
        queue="debug",
        python=sys.executable,
        interface="lo",
        security=security,
        shared_temp_directory=str(tmp_path),
        log_directory=str(tmp_path / "logs"),
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        script = cluster.job_script()
        assert "--tls-ca-file" in script and str(tmp_path) in script
        cluster.scale(jobs=1)
        with Client(cluster, security=security) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info()["workers"]
            assert worker.startswith("tls://127.0.0.1:")
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            job_ids = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            assert all(j and j.isdigit() for j in job_ids.values()), job_ids
