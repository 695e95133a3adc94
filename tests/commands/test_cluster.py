"""Clusters: local binding and cleanup, the dashboard, SLURM/PBS workers and TLS.

The SLURM tests submit real worker jobs to the throw-away SLURM of
tests/slurm_fixture.py (skipped without SLURM on a developer machine, failing
under CI). The PBS tests only render job scripts: no PBS is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import operator
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster
from distributed.security import Security

from snr_moe_dask.cli import main
from snr_moe_dask.cluster import get_client, make_jobqueue_cluster
from snr_moe_dask.model import SNRBinnedRidge

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
LOCAL = {"workers": 2, "threads_per_worker": 1, "memory_limit": "1GB"}
FIT = {"precision": "float64", "min_spectra": 1, "alpha": 1e3}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/")[0])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return True
    except OSError:
        return False


def _listening_hosts(port: int) -> set[str]:
    """Addresses this process listens on at ``port``."""
    return {
        c.laddr.ip
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _worker_pids(client: Client) -> set[int]:
    """The worker processes (their nannies run in this process)."""
    pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and set(client.run(os.getppid).values()) == {os.getpid()}
    return pids


def _assert_closed(scheduler_port: int, dashboard_port: int, pids: set[int]) -> None:
    assert not _accepts(scheduler_port), "scheduler still accepts connections"
    assert not _accepts(dashboard_port), "dashboard still accepts connections"
    _wait_until(lambda: not any(_alive(p) for p in pids), 20, f"worker processes {pids} to exit")


# ---------------------------------------------------------------- local


def test_local_cluster_binds_to_loopback_and_closes():
    with get_client("local", quiet=True, **LOCAL) as client:
        address = client.scheduler.address
        assert address.startswith(f"tcp://{LOOPBACK}:")
        link = urlparse(client.dashboard_link)
        assert (link.scheme, link.hostname, link.path) == ("http", LOOPBACK, "/status")
        # Bound to loopback only, not to every interface (0.0.0.0 / ::).
        assert _listening_hosts(_port(address)) == {LOOPBACK}
        assert _listening_hosts(link.port) == {LOOPBACK}
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2 and all(w.startswith(f"tcp://{LOOPBACK}:") for w in workers)
        pids = _worker_pids(client)
    _assert_closed(_port(address), link.port, pids)


def test_local_cluster_closes_when_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with get_client("local", quiet=True, workers=1, threads_per_worker=1) as client:
            address, dashboard = client.scheduler.address, urlparse(client.dashboard_link)
            pids = _worker_pids(client)
            assert _accepts(_port(address)) and _accepts(dashboard.port)
            raise RuntimeError("boom")
    _assert_closed(_port(address), dashboard.port, pids)


def _freed_block_stays_resident() -> tuple[str | None, int]:
    """In a worker: its malloc settings, and how much of a freed 256 MB array its
    resident set still holds (retained for the next large array, or given back)."""
    import gc

    import psutil

    gc.collect()
    before = psutil.Process().memory_info().rss
    block = np.ones(2**25)  # 256 MB, touched
    del block
    return os.environ.get("GLIBC_TUNABLES"), psutil.Process().memory_info().rss - before


@pytest.mark.parametrize("retain", [True, False])
def test_local_workers_retain_freed_memory_when_asked(retain):
    """``snr-moe.cluster.retain-memory`` keeps a worker's freed large arrays in its
    heap, so the next one reuses resident pages; off (the default), glibc maps and
    unmaps each, as distributed sets it up, and the setting of one cluster does not
    leak into the next one's workers."""
    import dask

    with dask.config.set({"snr-moe.cluster.retain-memory": retain}):
        with get_client("local", quiet=True, workers=1, threads_per_worker=1) as client:
            ((tunables, kept),) = client.run(_freed_block_stays_resident).values()
    if retain:
        assert "glibc.malloc.mmap_threshold=" in tunables
        assert kept > 200 * 2**20
    else:
        assert tunables is None
        assert kept < 32 * 2**20


# ---------------------------------------------------------------- dashboard


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode("utf-8", "replace")


def test_dashboard_answers_during_fit(store_pair, capsys):
    train, _ = store_pair
    errors: list[BaseException] = []

    def fit() -> None:
        try:
            SNRBinnedRidge(**FIT).fit(train)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    with get_client("local", **LOCAL) as client:
        printed = capsys.readouterr().err
        assert f"dashboard: {client.dashboard_link}" in printed
        assert urlparse(client.dashboard_link).hostname == LOOPBACK
        scheduler = client.cluster.scheduler  # LocalCluster: in this process
        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        try:
            _wait_until(lambda: scheduler.tasks or not thread.is_alive(), 60, "the fit's tasks")
            status, body = _get(client.dashboard_link)
        finally:
            thread.join(120)
        assert not thread.is_alive(), "fit did not finish in 120 s"
        if errors:
            raise errors[0]
        assert status == 200 and "Dask" in body and "bokeh" in body.lower()
        assert _get(client.dashboard_link.replace("/status", "/workers"))[0] == 200
        assert scheduler.task_prefixes, "the fit ran no tasks on this cluster"


def test_cli_fit_writes_performance_report(store_pair, tmp_path, capsys):
    train, _ = store_pair
    report = tmp_path / "perf.html"
    argv = [
        "fit",
        str(train),
        "--model",
        str(tmp_path / "m.zarr"),
        "--alpha",
        "1e3",
        "--min-spectra",
        "1",
        "--precision",
        "float64",
        "--workers",
        "2",
        "--threads-per-worker",
        "1",
        "--performance-report",
        str(report),
    ]
    assert main(argv) == 0
    assert f"dashboard: http://{LOOPBACK}:" in capsys.readouterr().err
    text = report.read_text()
    assert report.stat().st_size > 10_000
    assert "Dask Performance Report" in text and "Task Stream" in text


# ---------------------------------------------------------------- TLS


async def _add_on(address: str, security: Security | None) -> int:
    client = Client(address, security=security, asynchronous=True, timeout=5)
    try:
        await client
        return await client.submit(operator.add, 40, 2)
    finally:
        await client.close()  # also after a refused start, so __del__ has nothing left to do


def test_tls_scheduler_rejects_client_without_certificates():
    # The refused clients run on their own event loop (asyncio.run): a
    # synchronous Client that fails to start can leave distributed's shared
    # loop runner broken for every later Client in this process.
    security = Security.temporary()
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        host=LOOPBACK,
        dashboard_address=None,
        security=security,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith(f"tls://{LOOPBACK}:")
        # No certificates at all: distributed refuses before connecting.
        with pytest.raises(TypeError, match="TLS expects a `ssl_context` argument"):
            asyncio.run(_add_on(address, None))
        # Plain TCP to the TLS port: the scheduler drops the connection
        # (CommClosedError, an OSError; TimeoutError is one too).
        with pytest.raises(OSError):
            asyncio.run(_add_on(address.replace("tls://", "tcp://", 1), None))
        # Certificates from another CA: the handshake fails.
        with pytest.raises(OSError, match="TLS certificate does not match"):
            asyncio.run(_add_on(address, Security.temporary()))
        assert asyncio.run(_add_on(address, security)) == 42
        with Client(address, security=security, timeout=10) as client:
            assert client.submit(operator.add, 40, 2).result(timeout=10) == 42


# ---------------------------------------------------------------- SLURM


@pytest.fixture(scope="module")
def local_fit(store_pair):
    """The reference: the same fit on a LocalCluster of as many threads."""
    train, _ = store_pair
    with get_client("local", quiet=True, **LOCAL):
        return SNRBinnedRidge(**FIT).fit(train)


def _squeue(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %j %T"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {job: (name, state) for job, name, state in (ln.split() for ln in out.splitlines())}


def _slurm_kwargs(tmp_path: Path) -> dict:
    return {
        "jobs": 2,
        "cores": 1,
        "processes": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "queue": "debug",
        "interface": "lo",
        "python": sys.executable,
        "log_directory": str(tmp_path / "logs"),
        "shared_temp_directory": str(tmp_path),
        "job_script_prologue": ["export OMP_NUM_THREADS=1"],
        "job_name": "snr-moe-test",
        "death_timeout": 30,
        "scheduler_options": {"dashboard_address": f"{LOOPBACK}:0"},
        "quiet": True,
    }


@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "insecure"])
def test_fit_on_slurm_workers_matches_local(
    testslurm, store_pair, local_fit, tmp_path, monkeypatch, insecure
):
    train, _ = store_pair
    monkeypatch.setenv("SLURM_CONF", str(testslurm.conf))
    monkeypatch.setenv("SNR_MOE_WORKER_TIMEOUT", "60")
    scheme = "tcp" if insecure else "tls"
    with contextlib.ExitStack() as stack:
        if insecure:
            stack.enter_context(pytest.warns(UserWarning, match="--insecure: the scheduler"))
        client = stack.enter_context(
            get_client("slurm", insecure=insecure, **_slurm_kwargs(tmp_path))
        )
        assert client.scheduler.address.startswith(f"{scheme}://{LOOPBACK}:")
        script = client.cluster.job_script()
        assert f"-m distributed.cli.dask_worker {scheme}://" in script
        assert sys.executable in script and "export OMP_NUM_THREADS=1" in script
        if not insecure:
            (tls_dir,) = tmp_path.glob("tls-*")
            assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
            assert f"--tls-ca-file {tls_dir}/" in script
        client.wait_for_workers(2, timeout=60)
        assert all(w.startswith(f"{scheme}://") for w in client.scheduler_info()["workers"])
        jobs = {job.job_id for job in client.cluster.workers.values()}
        on_workers = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        assert len(jobs) == 2 and on_workers == jobs
        queue = _squeue(testslurm.env)
        assert all(queue.get(j) == ("snr-moe-test", "RUNNING") for j in jobs), queue
        model = SNRBinnedRidge(**FIT).fit(train)
    assert not list(tmp_path.glob("tls-*")), "certificates left behind"
    _wait_until(lambda: not jobs & set(_squeue(testslurm.env)), 30, f"jobs {jobs} to end")
    np.testing.assert_allclose(model.coef_, local_fit.coef_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(model.intercept_, local_fit.intercept_, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(model.n_train_, local_fit.n_train_)


# ---------------------------------------------------------------- PBS


def _pbs_cluster(tmp_path: Path, **changes):
    kw = {
        "config_file": REPO / "deploy" / "jobqueue.yaml",
        "queue": "workq",
        "account": "astro42",
        "walltime": "00:30:00",
        "interface": "lo",
        "log_directory": str(tmp_path / "logs"),
        "shared_temp_directory": str(tmp_path),
        "scheduler_options": {"dashboard_address": f"{LOOPBACK}:0"},
        **changes,
    }
    return make_jobqueue_cluster("pbs", **kw)


def test_pbs_job_script_from_deploy_config(tmp_path):
    with _pbs_cluster(tmp_path) as cluster:
        script = cluster.job_script()
        address = cluster.scheduler_address
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for line in (
        "#PBS -N snr-moe-worker",
        "#PBS -q workq",
        "#PBS -A astro42",
        "#PBS -l walltime=00:30:00",
        "#PBS -l select=1:ncpus=8:mem=30GB",
        f"#PBS -e {tmp_path / 'logs'}/",
        f"#PBS -o {tmp_path / 'logs'}/",
        "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
    ):
        assert line in lines, f"{line!r} not in job script:\n{script}"
    assert address.startswith(f"tls://{LOOPBACK}:") and address in script
    (tls_dir,) = tmp_path.glob("tls-*")
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert f"{flag} {tls_dir}/.dask-jobqueue.worker." in script, flag
    for arg in ("--nthreads 4", "--nworkers 2", "--lifetime 55m", "--death-timeout 120"):
        assert arg in script, arg
    del cluster
    gc.collect()
    assert not tls_dir.exists(), "TLS certificate directory left behind"


def test_pbs_insecure_job_script_has_no_tls(tmp_path):
    with pytest.warns(UserWarning, match="--insecure: the scheduler accepts plain TCP"):
        cluster = _pbs_cluster(tmp_path, insecure=True)
    with cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith(f"tcp://{LOOPBACK}:")
    assert "--tls" not in script and not list(tmp_path.glob("tls-*"))


def test_jobqueue_config_errors_name_file_and_key(tmp_path, capsys):
    conf = tmp_path / "site.yaml"
    conf.write_text("jobqueue:\n  pbs:\n    cores: 4\n    wall-time: '01:00:00'\n")
    with pytest.raises(
        ValueError,
        match=r"site\.yaml'.*unknown key 'jobqueue\.pbs\.wall-time'; "
        r"did you mean 'walltime'\? allowed: cores, memory",
    ):
        make_jobqueue_cluster("pbs", config_file=conf)
    with pytest.raises(ValueError, match=r"site\.yaml' has no 'jobqueue: slurm:' section"):
        make_jobqueue_cluster("slurm", config_file=conf)
    conf.write_text("jobqueue:\n  pbs: 4\n")
    with pytest.raises(ValueError, match=r"site\.yaml': 'jobqueue\.pbs' must be a mapping"):
        make_jobqueue_cluster("pbs", config_file=conf)
    with pytest.raises(ValueError, match=r"kind must be one of \('slurm', 'pbs'\); got 'sge'"):
        make_jobqueue_cluster("sge")
    assert not list(tmp_path.glob("tls-*"))
    # The CLI reports the same message as a one-line error, before any cluster starts.
    argv = ["fit", "train.zarr", "--model", str(tmp_path / "m.zarr"), "--cluster", "pbs"]
    assert main([*argv, "--jobqueue-config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "snr-moe fit: error: jobqueue config" in err and "Traceback" not in err
