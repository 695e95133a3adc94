"""One way to get a Dask cluster, for every command and for the Python API.

``cluster`` is ``"local"`` (a LocalCluster of worker processes bound to
127.0.0.1), ``"slurm"`` or ``"pbs"`` (dask-jobqueue, TLS by default), or the
address of a scheduler that already exists (``tcp://HOST:PORT``,
``tls://HOST:PORT``); ``scheduler_file`` connects through a scheduler file.
The cluster is always closed on exit, including on errors and Ctrl-C.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import dask
import yaml
from distributed import Client, LocalCluster

from .options import resolve

JOBQUEUE_KINDS = ("slurm", "pbs")
_JOBQUEUE_KEYS = (
    "cores",
    "memory",
    "processes",
    "walltime",
    "queue",
    "account",
    "interface",
    "log_directory",
    "job_extra_directives",
    "job_script_prologue",
    "worker_extra_args",
    "local_directory",
    "death_timeout",
    "resource_spec",
    "name",
    "job_directives_skip",
    "scheduler_options",
    "shared_temp_directory",
    "python",
)
# The YAML's (and dask-jobqueue's config) ``name`` is the batch job name; the
# ``name`` keyword of the cluster classes is the cluster's, so it goes in as ``job_name``.
_KEYWORD_FOR = {"name": "job_name"}

log = logging.getLogger(__name__)


def describe(client: Client) -> str:
    """One line naming the scheduler, workers and dashboard link."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return (
        f"Dask scheduler {client.scheduler.address} with {len(workers)} workers / "
        f"{threads} threads; dashboard: {client.dashboard_link}"
    )


def private_directory(base: str | os.PathLike | None = None, prefix: str = "snr-moe-") -> Path:
    """Create a directory only its owner can enter (mode 700)."""
    base_path = Path(base) if base else None
    if base_path is not None:
        base_path.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base_path))
    path.chmod(stat.S_IRWXU)
    return path


def load_jobqueue_config(kind: str, path: str | os.PathLike | None) -> dict:
    """Read the ``jobqueue.<kind>`` section of a dask-jobqueue YAML file.

    Keys are returned as dask-jobqueue's keyword names: underscores, and
    ``name`` (the batch job name) as ``job_name``.
    """
    if path is None:
        return {}
    text = Path(path).read_text()
    top = yaml.safe_load(text) or {}
    jobqueue = top.get("jobqueue") if isinstance(top, dict) else None
    section = jobqueue.get(kind) if isinstance(jobqueue, dict) else None
    if section is None:
        raise ValueError(
            f"jobqueue config {str(path)!r} has no 'jobqueue: {kind}:' section; "
            f"see deploy/jobqueue.yaml for an example"
        )
    if not isinstance(section, dict):
        raise ValueError(
            f"jobqueue config {str(path)!r}: 'jobqueue.{kind}' must be a mapping of "
            f"settings (cores: 8, memory: 32GB, ...); got {type(section).__name__}"
        )
    out = {}
    for key, value in section.items():
        name = str(key).replace("-", "_")
        if name not in _JOBQUEUE_KEYS:
            allowed = [k.replace("_", "-") for k in _JOBQUEUE_KEYS]
            close = difflib.get_close_matches(str(key).replace("_", "-"), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"jobqueue config {str(path)!r}: unknown key 'jobqueue.{kind}.{key}'; "
                f"{hint}allowed: {', '.join(allowed)}"
            )
        if value is not None:
            value = os.path.expandvars(value) if isinstance(value, str) else value
            out[_KEYWORD_FOR.get(name, name)] = value
    return out


def make_jobqueue_cluster(
    kind: str,
    *,
    config_file: str | os.PathLike | None = None,
    insecure: bool = False,
    tls_base: str | os.PathLike | None = None,
    **overrides,
):
    """Start a dask-jobqueue SLURM or PBS cluster (no workers yet).

    Settings come from ``config_file`` (``jobqueue.<kind>`` section), then
    ``overrides`` (None values ignored). Unless ``insecure``, the scheduler
    and workers talk TLS with temporary certificates kept in a private
    (mode 700) directory under ``tls_base``, else the ``shared_temp_directory``
    setting, else ``.snr-moe`` in the current directory (batch jobs must be
    able to read it, so it belongs on a shared file system). ``get_client``
    removes the directory when it closes the cluster; otherwise it goes when
    the cluster object is garbage collected or Python exits.

    Every dask-jobqueue keyword passes through ``overrides``, e.g.
    ``python="/path/to/.venv/bin/python"`` when the compute nodes must run
    another interpreter than the driver's ``sys.executable`` (the default), or
    ``job_script_prologue=[...]``.
    """
    import dask_jobqueue
    from distributed.security import Security

    # dask_jobqueue installs a SIGINT handler that exits with status 0 on import;
    # restore Python's default so Ctrl-C raises KeyboardInterrupt and fails the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if kind not in JOBQUEUE_KINDS:
        raise ValueError(f"jobqueue cluster kind must be one of {JOBQUEUE_KINDS}; got {kind!r}")
    settings = load_jobqueue_config(kind, config_file)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings.setdefault("cores", 1)
    settings.setdefault("memory", "4GB")
    settings.setdefault("processes", 1)
    scheduler_options = dict(settings.pop("scheduler_options", {}) or {})
    scheduler_options.setdefault("dashboard_address", ":8787")
    settings["scheduler_options"] = scheduler_options
    if insecure:
        warnings.warn(
            "--insecure: the scheduler accepts plain TCP connections; any user who can "
            "reach its port can run code as you",
            stacklevel=2,
        )
    else:
        base = tls_base or settings.get("shared_temp_directory") or Path.cwd() / ".snr-moe"
        tls_dir = private_directory(os.path.expanduser(base), prefix="tls-")
        settings["shared_temp_directory"] = str(tls_dir)
        settings["security"] = Security.temporary()
    if "log_directory" in settings:
        Path(settings["log_directory"]).mkdir(parents=True, exist_ok=True)
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    try:
        cluster = cls(**settings)
    except BaseException:
        if not insecure:
            shutil.rmtree(tls_dir, ignore_errors=True)
        raise
    if not insecure:
        cluster._snr_moe_remove_tls = _remove_on_collect(cluster, tls_dir)
    return cluster


def _remove_on_collect(cluster, tls_dir: Path) -> weakref.finalize:
    """Delete the certificate directory once ``cluster`` is gone (or when called).

    dask-jobqueue keeps the worker certificate files open as NamedTemporaryFile
    attributes of the cluster; closing them first deletes them in order.
    """
    inside = str(tls_dir) + os.sep
    files = [
        f
        for f in vars(cluster).values()
        if isinstance(getattr(f, "name", None), str)
        and f.name.startswith(inside)
        and callable(getattr(f, "close", None))
    ]
    return weakref.finalize(cluster, _remove_tls_directory, str(tls_dir), files)


def _remove_tls_directory(path: str, files: list) -> None:
    for f in files:
        with suppress(OSError):
            f.close()
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def get_client(
    cluster: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = None,
    scheduler_file: str | None = None,
    jobs: int | None = None,
    adapt: tuple[int, int] | None = None,
    jobqueue_config: str | None = None,
    insecure: bool = False,
    quiet: bool | None = None,
    dashboard_address: str | None = None,
    connect_timeout: float | str | None = None,
    **jobqueue_overrides,
) -> Iterator[Client]:
    """Start or connect to a cluster, yield a Client, and always close it.

    Parameters
    ----------
    cluster : str, optional
        ``"local"`` (default), ``"slurm"``, ``"pbs"``, or a scheduler address.
    workers, threads_per_worker, memory_limit : optional
        LocalCluster sizing (default: one single-threaded worker per core).
    scheduler_file : str, optional
        Connect through a scheduler file instead.
    jobs : int, optional
        Worker jobs to submit on SLURM/PBS (default 1).
    adapt : (int, int), optional
        Adaptive scaling between this many jobs instead of ``jobs``.
    jobqueue_config : str, optional
        dask-jobqueue YAML (see ``deploy/jobqueue.yaml``).
    insecure : bool
        Jobqueue clusters only: plain TCP instead of TLS.
    quiet : bool, optional
        Do not print the dashboard link.
    dashboard_address : str, optional
        LocalCluster dashboard address (default ``127.0.0.1:0``, a free port).
    connect_timeout : float or str, optional
        How long to wait for an existing scheduler (default
        ``snr-moe.cluster.connect-timeout``, 10 s); then a one-line error.
    **jobqueue_overrides
        cores, memory, walltime, queue, account, processes, log_directory...
    """
    kind = resolve("cluster", cluster)
    quiet = bool(resolve("quiet", quiet))
    timeout = resolve("connect_timeout", connect_timeout)
    if scheduler_file is not None:
        resolve("scheduler_file", scheduler_file)
    with ExitStack() as stack:
        if scheduler_file or "://" in kind:
            where = f"scheduler file {scheduler_file!r}" if scheduler_file else kind
            client = stack.enter_context(_connect(where, scheduler_file, kind, timeout))
        elif kind == "local":
            n = resolve("workers", workers) or os.cpu_count() or 1
            # The nannies pass both to their workers, setting the malloc variables in
            # this process's environment too: they are put back once the workers run,
            # and again when the cluster closes (a nanny restarting a worker sets them).
            restore = _environ_restorer(MALLOC_VARIABLES)
            stack.callback(restore)
            with dask.config.set({**_spill_config(), **_memory_config()}):
                local = LocalCluster(
                    n_workers=int(n),
                    threads_per_worker=resolve("threads_per_worker", threads_per_worker),
                    memory_limit=resolve("memory_limit", memory_limit),
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=resolve("dashboard_address", dashboard_address),
                )
            restore()
            local = stack.enter_context(local)
            client = stack.enter_context(Client(local))
        elif kind in JOBQUEUE_KINDS:
            jq = make_jobqueue_cluster(
                kind, config_file=jobqueue_config, insecure=insecure, **jobqueue_overrides
            )
            # Runs after the cluster is closed: its certificates are no longer needed.
            stack.callback(getattr(jq, "_snr_moe_remove_tls", lambda: None))
            stack.enter_context(jq)
            client = stack.enter_context(Client(jq))
            if adapt:
                jq.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
            else:
                jq.scale(jobs=jobs or 1)
            _say(quiet, f"Submitted worker jobs to {kind}; dashboard: {client.dashboard_link}")
            client.wait_for_workers(1, timeout=float(os.environ.get("SNR_MOE_WORKER_TIMEOUT", 600)))
        else:
            raise ValueError(
                f"cluster must be 'local', 'slurm', 'pbs' or a scheduler address like "
                f"tcp://host:8786; got {kind!r}"
            )
        _say(quiet, describe(client))
        yield client


def _spill_config() -> dict:
    """LocalCluster workers' spilling (``snr-moe.cluster.spill``, off by default).

    A fit's fold chain hands its accumulator from task to task in place, so a
    worker briefly holds two keys of one object and counts it twice; with
    many cells (gigabytes of packed statistics) that passes the spill target,
    and spilling writes the accumulator to disk (and copies it) only to read
    it back for the next chunk. Pausing and the 95% restart stay on.
    """
    if resolve("worker_spill"):
        return {}
    return {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}


RETAIN = 1 << 40  # bytes: no block this large is ever mapped or trimmed on its own
MALLOC_VARIABLES = ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def _environ_restorer(names) -> Callable[[], None]:
    """A function that puts the environment variables ``names`` back as they are now."""
    saved = {name: os.environ.get(name) for name in names}

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore


def _memory_config() -> dict:
    """LocalCluster workers' malloc settings (``snr-moe.cluster.retain-memory``, off by
    default), set in their environment before they start.

    By default glibc gives every block above 32 MB its own mapping and unmaps it
    when freed, and distributed trims the heap above 64 kB, so each large
    temporary (a 4096-pixel product buffer, a solve's 134 MB matrix) is
    fresh memory whose pages the kernel must zero and map again; in a virtual
    machine that returns freed memory to its host, that costs about 1-2 s per
    GB. Retained, the next array reuses the pages the last one freed. The
    worker's resident size stays at its high-water mark instead of shrinking:
    on the 100k fit the summed peak grew by 25-40 %, for no gain that paired
    runs could separate from the machine's noise (BENCHMARKS.md), hence off.
    """
    if not resolve("retain_memory"):
        return {}
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.update(
        GLIBC_TUNABLES=f"glibc.malloc.mmap_threshold={RETAIN}:glibc.malloc.trim_threshold={RETAIN}",
        MALLOC_TRIM_THRESHOLD_=RETAIN,
        MALLOC_MMAP_THRESHOLD_=RETAIN,
    )
    return {"distributed.nanny.pre-spawn-environ": environ}


def _connect(where: str, scheduler_file, address: str, timeout: float) -> Client:
    """A Client of an existing scheduler, or a one-line error within ``timeout``."""
    try:
        if scheduler_file:
            return Client(scheduler_file=scheduler_file, timeout=timeout)
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ValueError(
            f"cannot connect to the Dask scheduler at {where} within {timeout:g} s ({detail}); "
            "check that it runs and this machine can reach it, or use --cluster local"
        ) from None


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)
