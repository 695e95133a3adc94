"""Measurements: the BLAS limit, our fit, scikit-learn's Ridge and dask-ml, on the same data.

Run as ``python -m benchmarks`` (see :func:`main` and ``benchmarks/README.md``).
Every method fits the same five ridge models (a global one and one per SNR
bin, bins from the store's true ``snr`` with right-closed edges 2, 4, 7) with
the same ``alpha``, and is scored on the same held-out test store.

Order of the runs: our fit and dask-ml first, while the driver holds no
training data; then the training rows are loaded into memory for numpy and
scikit-learn. Peak memory is resident memory (RSS) sampled in a background
thread, reported above the baseline taken just before each measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil

from .kernel import describe_kernels

ALPHA = 1e5
EDGES = (2.0, 4.0, 7.0)
BIN_NAMES = ("X", "L", "M", "H")
EXPERTS = ("global", *BIN_NAMES)
TARGET = "logg"
METHODS = ("numpy", "ours", "sklearn-float64", "sklearn-float32", "dask-ml")
SKIPPABLE = ("numpy", "sklearn", "dask-ml")
DASK_ML_SOLVER = "lbfgs"
DASK_ML_STARTUP_LIMIT = 300.0
MB = 2**20
GB = 2**30

# Modules the workers import on their first task; imported during start-up so
# that the fit's timing does not include them.
_WORKER_IMPORTS = (
    "snr_moe_dask",
    "snr_moe_dask.kernels.stats",
    "snr_moe_dask.fit.tasks",
    "snr_moe_dask.predict.tasks",
    "xarray",
    "zarr",
    "scipy.linalg",
)
_VERSIONED = (
    "numpy",
    "scipy",
    "dask",
    "distributed",
    "scikit-learn",
    "dask-ml",
    "xarray",
    "zarr",
    "threadpoolctl",
    "psutil",
    "snr-moe-dask",
)
_CHILD_CODE = (
    "import sys; from benchmarks.harness import run_daskml_child; run_daskml_child(sys.argv[1])"
)


@dataclass(frozen=True)
class Options:
    """Resolved command-line options."""

    n: int
    pixels: int
    chunk_size: int
    precision: str
    alpha: float
    workers: int
    seed: int
    dask_ml_cap: float
    out: Path
    data_dir: Path
    skip: tuple[str, ...]
    scaling: tuple[int, ...]
    command: str

    @property
    def n_test(self) -> int:
        return max(1000, self.n // 10)


# ---------------------------------------------------------------------- memory


class PeakRSS:
    """Peak of the summed resident memory of some processes, sampled in a thread.

    tracemalloc misses BLAS and other C allocations; RSS sees them.

    Parameters
    ----------
    processes : callable returning a list of psutil.Process
        Called at every sample, so a process tree may grow.
    interval : float
        Seconds between samples.
    """

    def __init__(self, processes: Callable[[], list[psutil.Process]], interval: float = 0.2):
        self._processes = processes
        self.interval = interval
        self.baseline = self.peak = 0
        self.per_process: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        """Summed RSS in bytes now (and each process's peak so far)."""
        total = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                total += rss
                self.per_process[proc.pid] = max(self.per_process.get(proc.pid, 0), rss)
        return total

    def rebase(self) -> None:
        """Restart the measurement from now (for example once a cluster is up)."""
        now = self.sample()
        with self._lock:
            self.baseline = self.peak = now

    def _record(self) -> None:
        now = self.sample()
        with self._lock:
            self.peak = max(self.peak, now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> PeakRSS:
        self.rebase()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()

    def as_dict(self) -> dict:
        return {
            "peak_rss_mb": self.peak / MB,
            "baseline_rss_mb": self.baseline / MB,
            "peak_rss_delta_mb": (self.peak - self.baseline) / MB,
            "peak_rss_per_process_mb": {str(k): v / MB for k, v in self.per_process.items()},
            "rss_interval_s": self.interval,
        }


def this_process() -> list[psutil.Process]:
    return [psutil.Process()]


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and all its descendants (empty once it has exited)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def release_memory() -> None:
    """Return freed heap to the OS, so the next RSS baseline starts low."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------- machine


def blas_summary(info: list[dict]) -> list[dict]:
    """The BLAS entries of ``threadpoolctl.threadpool_info()``."""
    keys = ("internal_api", "version", "num_threads", "threading_layer", "architecture", "prefix")
    return [{k: d.get(k) for k in keys} for d in info if d.get("user_api") == "blas"]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe_machine() -> dict:
    """Cores, memory, BLAS, versions and the load at the time of the run."""
    from threadpoolctl import threadpool_info

    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": psutil.virtual_memory().total / GB,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "blas": blas_summary(threadpool_info()),
        "versions": versions,
    }


# ---------------------------------------------------------------------- data


def store_matches(path: Path, n: int, pixels: int, chunk_size: int, seed: int) -> bool:
    """Whether ``path`` holds a complete survey with these sizes, seed and chunking."""
    from snr_moe_dask import StoreError, open_spectra
    from snr_moe_dask.survey.mock import GENERATOR_VERSION

    if not path.exists():
        return False
    try:
        ds = open_spectra(path, require=(TARGET, "snr"))
    except StoreError:
        return False
    attrs = ds.attrs
    return (
        ds.sizes["spectrum"] == n
        and ds.sizes["wavelength"] == pixels
        and attrs.get("seed") == seed
        and attrs.get("chunk_size") == min(chunk_size, n)
        and attrs.get("generator_version") == GENERATOR_VERSION
    )


def ensure_store(
    data_dir: Path, kind: str, n: int, pixels: int, chunk_size: int, seed: int
) -> tuple[Path, dict]:
    """Reuse a matching store in ``data_dir`` or generate it (threaded scheduler)."""
    import dask

    from snr_moe_dask import generate_survey

    path = data_dir / f"{kind}-n{n}-p{pixels}-c{chunk_size}-s{seed}.zarr"
    if store_matches(path, n, pixels, chunk_size, seed):
        return path, {"path": str(path), "reused": True, "seconds": 0.0}
    data_dir.mkdir(parents=True, exist_ok=True)
    log(f"generating {path} ({n:,} spectra x {pixels} pixels)")
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        generate_survey(
            path, n, pixels=pixels, chunk_size=chunk_size, seed=seed, codec="none", overwrite=True
        )
    return path, {"path": str(path), "reused": False, "seconds": time.perf_counter() - t0}


def load_arrays(path: Path, dtype) -> dict:
    """Flux as a C-ordered ``dtype`` array, the target, the true SNR and the bins."""
    from snr_moe_dask import open_spectra
    from snr_moe_dask.kernels.binning import assign_bins

    ds = open_spectra(path, require=(TARGET, "snr"))
    x = ds["flux"].data.astype(dtype).compute(scheduler="threads")
    snr = ds["snr"].values
    return {
        "x": np.ascontiguousarray(x),
        "y": ds[TARGET].values.astype(np.float64),
        "snr": snr,
        "bins": assign_bins(snr, EDGES),
    }


def expert_rows(bins: np.ndarray) -> Iterator[tuple[str, np.ndarray | None]]:
    """("global", None), then each bin's name and row indices."""
    yield "global", None
    for k, name in enumerate(BIN_NAMES):
        yield name, np.flatnonzero(bins == k)


# ---------------------------------------------------------------------- quality


def expert_predictions(x: np.ndarray, experts: list, block: int = 8192) -> np.ndarray:
    """Predictions of each expert, shape (n_spectra, 5); an absent expert is the global one.

    ``experts`` holds (coef of shape (n_pixels,), intercept) or None per expert.
    Rows are converted to float64 a block at a time, so a float32 test set is
    never copied whole.
    """
    cols = [e if e is not None else experts[0] for e in experts]
    coef = np.column_stack([c for c, _ in cols]).astype(np.float64)
    intercept = np.array([b for _, b in cols], dtype=np.float64)
    out = np.empty((len(x), len(cols)))
    for start in range(0, len(x), block):
        rows = np.asarray(x[start : start + block], dtype=np.float64)
        out[start : start + block] = rows @ coef + intercept
    return out


def route(pred: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Each spectrum's own expert's prediction (the global model where there is no bin)."""
    return pred[np.arange(len(pred)), np.where(bins < 0, 0, bins + 1)]


def score(pred: np.ndarray, test: dict) -> dict:
    from sklearn.metrics import r2_score

    return {
        "r2_global": float(r2_score(test["y"], pred[:, 0])),
        "r2_moe": float(r2_score(test["y"], route(pred, test["bins"]))),
    }


def prediction_gap(pred: np.ndarray, reference: np.ndarray, y: np.ndarray) -> dict:
    """max |pred - reference| / std(y) over the test set, per expert."""
    gap = np.abs(pred - reference).max(axis=0) / np.std(y)
    return dict(zip(EXPERTS, gap.tolist(), strict=True))


# ---------------------------------------------------------------------- (a) numpy


def measure_numpy(x: np.ndarray) -> dict:
    """Time ``x.T @ x`` with numpy's BLAS on every core: the best of at least 2 runs,
    and of up to 5 within about 1 s (one run alone varies by 30 % on a shared VM)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    n, p = x.shape
    with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
        blas = blas_summary(threadpool_info())
        release_memory()
        with PeakRSS(this_process, interval=0.02) as mem:
            times: list[float] = []
            while len(times) < 2 or (sum(times) < 1.0 and len(times) < 5):
                t0 = time.perf_counter()
                gram = x.T @ x
                times.append(time.perf_counter() - t0)
                del gram
    best = min(times)
    return {
        "status": "ok",
        "seconds": best,
        "repeats": times,
        "dtype": str(x.dtype),
        "gflops": n * p * (p + 1) / best / 1e9,
        "blas": blas,
        **mem.as_dict(),
    }


# ---------------------------------------------------------------------- (b) ours


@contextlib.contextmanager
def started_cluster(workers: int) -> Iterator[tuple[object, float]]:
    """A LocalCluster of single-threaded workers, warmed up; yields (client, start-up s)."""
    from snr_moe_dask.cluster import get_client

    t0 = time.perf_counter()
    with get_client("local", workers=workers, threads_per_worker=1, quiet=True) as client:
        client.wait_for_workers(workers)
        for module in _WORKER_IMPORTS:
            client.run(importlib.import_module, module)
        yield client, time.perf_counter() - t0


def worker_blas(client) -> dict:
    from threadpoolctl import threadpool_info

    return {addr: blas_summary(info) for addr, info in client.run(threadpool_info).items()}


def fit_ours(client, train: Path, opts: Options):
    """Our end-to-end fit from the store, with the summed RSS of driver and workers."""
    from snr_moe_dask.model import SNRBinnedRidge

    procs = [psutil.Process(), *(psutil.Process(pid) for pid in client.run(os.getpid).values())]
    release_memory()
    model = SNRBinnedRidge(
        alpha=opts.alpha,
        bins=list(EDGES),
        bin_names=list(BIN_NAMES),
        routing="oracle",
        target=TARGET,
        precision=opts.precision,
        standardize=False,
        min_spectra=1,
        gate=False,  # the same five models as the others; the gate is measured apart,
        calibration=0,  # and so are the uncertainties (BENCHMARKS.md, calibration sections)
    )
    with PeakRSS(lambda: procs, interval=0.2) as mem:
        t0 = time.perf_counter()
        model.fit(str(train))
        seconds = time.perf_counter() - t0
    info = {
        "status": "ok",
        "seconds": seconds,
        "pass_s": model.timings_["pass"],
        "solve_s": model.timings_["solve"],
        "processes": len(procs),
        "n_train": dict(zip(model.experts_, np.asarray(model.n_train_).tolist(), strict=True)),
        "fallback": model.fallback_,
        **mem.as_dict(),
    }
    return model, info


def ours_experts(model) -> list:
    return [
        (model.coef_[e, :, 0], float(model.intercept_[e, 0])) for e in range(len(model.experts_))
    ]


def measure_evaluation(model, test: Path, work: Path) -> dict:
    """Throughput of ``evaluate_model`` on the test store (no bootstrap, no report)."""
    from snr_moe_dask.evaluation.graph import evaluate_model

    with tempfile.TemporaryDirectory(prefix="bench-eval-", dir=work) as tmp:
        t0 = time.perf_counter()
        metrics = evaluate_model(
            model, test, Path(tmp) / "evaluation", bootstrap=0, report=False, overwrite=True
        )
        seconds = time.perf_counter() - t0
    overall = metrics["overall"]
    return {
        "seconds": seconds,
        "n": int(overall["n"]),
        "spectra_per_second": overall["n"] / seconds,
        "r2_global": float(overall["r2_global"]),
        "r2_moe": float(overall["r2_moe"]),
    }


def measure_ours(train: Path, test: Path, opts: Options) -> tuple[dict, dict, list]:
    """(b): start-up, fit and evaluation on one LocalCluster; returns (fit, cluster, experts)."""
    with started_cluster(opts.workers) as (client, startup):
        cluster = {
            "startup_s": startup,
            "workers": opts.workers,
            "threads_per_worker": 1,
            "worker_blas": worker_blas(client),
        }
        log(f"ours: cluster up in {startup:.1f} s; fitting")
        model, info = fit_ours(client, train, opts)
        log(f"ours: fit {info['seconds']:.2f} s; evaluating")
        evaluation = measure_evaluation(model, test, opts.data_dir)
    info.update(
        r2_global=evaluation["r2_global"], r2_moe=evaluation["r2_moe"], r2_source="evaluate_model"
    )
    cluster["evaluation"] = evaluation
    return info, cluster, ours_experts(model)


# ---------------------------------------------------------------------- (c) scikit-learn


def measure_sklearn(train: dict, alpha: float) -> tuple[dict, list]:
    """(c): Ridge(alpha) global + per-bin fits on rows already in memory, in their dtype."""
    from sklearn.linear_model import Ridge

    x, y = train["x"], train["y"]
    experts, per_expert = [], {}
    release_memory()
    with PeakRSS(this_process, interval=0.02) as mem:
        t0 = time.perf_counter()
        for name, rows in expert_rows(train["bins"]):
            if rows is not None and rows.size == 0:
                experts.append(None)
                continue
            t1 = time.perf_counter()
            xs, ys = (x, y) if rows is None else (x[rows], y[rows])
            est = Ridge(alpha=alpha).fit(xs, ys)
            experts.append((np.asarray(est.coef_, np.float64), float(est.intercept_)))
            per_expert[name] = {
                "seconds": time.perf_counter() - t1,
                "n_train": len(ys),
                "solver": getattr(est, "solver_", "auto"),
            }
            del xs, ys, est
        seconds = time.perf_counter() - t0
    return {
        "status": "ok",
        "seconds": seconds,
        "dtype": str(x.dtype),
        "experts": per_expert,
        **mem.as_dict(),
    }, experts


# ---------------------------------------------------------------------- (d) dask-ml


def fit_daskml_expert(client, x, y, rows, alpha: float) -> dict:
    """Centre (x, y) on their means and fit dask-ml's L2 LinearRegression without intercept.

    dask-glm minimizes ||y - X b||^2 + (1/C) ||b||^2 / 2, which is ridge with
    alpha = 1 / (2 C). The intercept is restored as mean_y - mean_x @ b.
    """
    import dask
    from dask_ml.linear_model import LinearRegression
    from distributed import wait

    xs, ys = (x, y) if rows is None else (x[rows], y[rows])
    mean_x, mean_y = dask.compute(xs.mean(axis=0, dtype=np.float64), ys.mean())
    xc = (xs - mean_x).astype(x.dtype)
    yc = ys - mean_y
    memory = sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    memory = memory or psutil.virtual_memory().total  # 0 means no limit
    persisted = xc.nbytes < 0.4 * memory
    if persisted:  # every iteration reads X; keep it in worker memory when it fits
        xc, yc = client.persist([xc, yc])
        wait([xc, yc])
    est = LinearRegression(
        penalty="l2",
        C=1 / (2 * alpha),
        fit_intercept=False,
        solver=DASK_ML_SOLVER,
        solver_kwargs={"normalize": False},
    )
    est.fit(xc, yc)
    coef = np.asarray(est.coef_, dtype=np.float64)
    return {
        "coef": coef.tolist(),
        "intercept": float(mean_y - mean_x @ coef),
        "n_train": int(ys.shape[0]),
        "persisted": bool(persisted),
    }


def run_daskml_child(spec_path: str) -> None:
    """Entry point of the dask-ml subprocess: own cluster, five fits, progress as JSON."""
    from snr_moe_dask import open_spectra
    from snr_moe_dask.kernels.binning import assign_bins

    spec = json.loads(Path(spec_path).read_text())
    progress = Path(spec["progress"])
    state: dict = {"state": "starting"}
    with started_cluster(spec["workers"]) as (client, startup):
        state.update(state="ready", startup_s=startup, experts={})
        write_progress(progress, state)
        t0 = time.perf_counter()
        ds = open_spectra(spec["train"], require=(TARGET, "snr"))
        x, y = ds["flux"].data.astype(spec["precision"]), ds[TARGET].data
        bins = assign_bins(ds["snr"].values, EDGES)
        for name, rows in expert_rows(bins):
            if rows is not None and rows.size == 0:
                continue
            t1 = time.perf_counter()
            fitted = fit_daskml_expert(client, x, y, rows, spec["alpha"])
            state["experts"][name] = {**fitted, "seconds": time.perf_counter() - t1}
            write_progress(progress, state)
        state.update(state="done", seconds=time.perf_counter() - t0)
        write_progress(progress, state)


def write_progress(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def read_progress(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def kill_group(proc: subprocess.Popen) -> None:
    """Stop the child and the cluster it started (its own process group)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
            return


def supervise(proc: subprocess.Popen, progress: Path, cap: float, mem: PeakRSS) -> dict:
    """Wait for the child; kill it ``cap`` seconds after its cluster is up."""
    started = time.monotonic()
    ready_at = None
    while proc.poll() is None:
        now = time.monotonic()
        if ready_at is None and read_progress(progress).get("state") in ("ready", "done"):
            ready_at = now
            mem.rebase()
        if (ready_at is not None and now - ready_at > cap) or (
            ready_at is None and now - started > DASK_ML_STARTUP_LIMIT
        ):
            kill_group(proc)
            return {"timed_out": True, "elapsed": now - (ready_at or started)}
        time.sleep(0.2)
    return {"timed_out": False, "elapsed": time.monotonic() - (ready_at or started)}


def measure_daskml(train: Path, opts: Options) -> tuple[dict, list | None]:
    """(d): dask-ml in a subprocess with its own LocalCluster, capped at ``opts.dask_ml_cap``."""
    with tempfile.TemporaryDirectory(prefix="bench-daskml-", dir=opts.data_dir) as tmp:
        work = Path(tmp)
        progress, logfile = work / "progress.json", work / "child.log"
        spec = {
            "train": str(train),
            "precision": opts.precision,
            "alpha": opts.alpha,
            "workers": opts.workers,
            "progress": str(progress),
        }
        (work / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parents[1])  # so the child imports benchmarks
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        with open(logfile, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(work / "spec.json")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        root = psutil.Process(proc.pid)
        try:
            with PeakRSS(lambda: process_tree(root), 0.2) as mem:
                outcome = supervise(proc, progress, opts.dask_ml_cap, mem)
        finally:
            if proc.poll() is None:
                kill_group(proc)
        state = read_progress(progress)
        tail = logfile.read_text()[-2000:]
    return summarize_daskml(state, outcome, proc.returncode, tail, opts, mem)


def summarize_daskml(
    state: dict, outcome: dict, returncode, tail: str, opts: Options, mem: PeakRSS
) -> tuple[dict, list | None]:
    done = state.get("experts", {})
    info = {
        "solver": DASK_ML_SOLVER,
        "solver_defaults": {"max_iter": 100, "tol": 1e-4},
        "dtype": opts.precision,
        "cap_s": opts.dask_ml_cap,
        "cluster_startup_s": state.get("startup_s"),
        "completed": list(done),
        "experts": {
            k: {kk: v[kk] for kk in ("seconds", "n_train", "persisted")} for k, v in done.items()
        },
        **mem.as_dict(),
    }
    if outcome["timed_out"]:
        info.update(status="timeout", seconds=outcome["elapsed"])
        return info, None
    if state.get("state") != "done":
        info.update(status="error", seconds=None, returncode=returncode, log_tail=tail)
        return info, None
    info.update(status="ok", seconds=state["seconds"])
    experts = [
        (np.asarray(done[e]["coef"]), done[e]["intercept"]) if e in done else None for e in EXPERTS
    ]
    return info, experts


# ---------------------------------------------------------------------- orchestration


def memory_shortfall(n: int, p: int, bytes_per_value: int) -> str | None:
    """Why an in-memory method cannot run here, or None if it fits."""
    need = n * p * bytes_per_value
    available = psutil.virtual_memory().available
    if need > 0.9 * available:
        return (
            f"needs about {need / GB:.1f} GB in memory but {available / GB:.1f} GB is "
            f"available; rerun with --skip numpy,sklearn or a smaller --n"
        )
    return None


def skipped(reason: str) -> dict:
    return {"status": "skipped", "seconds": None, "reason": reason}


def run_in_memory(train_path: Path, opts: Options, methods: dict, experts: dict) -> None:
    """(a) and (c): load the training rows once and run numpy, then scikit-learn."""
    item = np.dtype(opts.precision).itemsize
    want_sklearn = "sklearn" not in opts.skip
    need = item + (16 if want_sklearn else 0)  # + a float64 copy and Ridge's centred copy
    reason = memory_shortfall(opts.n, opts.pixels, need)
    if reason:
        for key in ("numpy", "sklearn-float64", "sklearn-float32"):
            if key not in methods:
                methods[key] = skipped(reason)
        return
    train = load_arrays(train_path, opts.precision)
    if "numpy" not in opts.skip:
        log("numpy: X.T @ X")
        methods["numpy"] = measure_numpy(train["x"])
    if not want_sklearn:
        return
    order = [opts.precision, "float64" if opts.precision == "float32" else "float32"]
    for dtype in order:
        if train["x"].dtype != np.dtype(dtype):
            train["x"] = train["x"].astype(dtype)
            release_memory()
        log(f"sklearn: Ridge in {dtype}")
        methods[f"sklearn-{dtype}"], experts[f"sklearn-{dtype}"] = measure_sklearn(
            train, opts.alpha
        )


def add_quality(methods: dict, experts: dict, test: dict) -> dict:
    """R2 per method from its coefficients, and each method's gap to scikit-learn float64."""
    preds = {k: expert_predictions(test["x"], v) for k, v in experts.items() if v}
    for key, pred in preds.items():
        scores = score(pred, test)
        if key == "ours":
            methods[key].update(r2_global_numpy=scores["r2_global"], r2_moe_numpy=scores["r2_moe"])
        else:
            methods[key].update(scores)
    reference = preds.get("sklearn-float64")
    if reference is None:
        return {}
    gaps = {
        k: prediction_gap(p, reference, test["y"])
        for k, p in preds.items()
        if k != "sklearn-float64"
    }
    agreement = {"reference": "sklearn-float64", "max_abs_pred_diff_over_std_y": gaps}
    ours = methods.get("ours", {})
    ref = methods["sklearn-float64"]
    if "r2_global" in ours:
        agreement["ours_r2_diff"] = {
            "global": abs(ours["r2_global"] - ref["r2_global"]),
            "moe": abs(ours["r2_moe"] - ref["r2_moe"]),
        }
        agreement["ours_within_1e-6"] = bool(
            max(agreement["ours_r2_diff"].values()) <= 1e-6 and max(gaps["ours"].values()) <= 1e-6
        )
    return agreement


def add_ratios(methods: dict) -> None:
    """Each time over numpy's (the BLAS limit), and how many times faster ours is."""
    base = methods.get("numpy", {}).get("seconds")
    ours = methods.get("ours", {}).get("seconds")
    for info in methods.values():
        t = info.get("seconds")
        info["ratio_to_numpy"] = t / base if t and base else None
        info["ours_speedup"] = t / ours if t and ours else None


def run_benchmark(opts: Options) -> dict:
    """Every method on the same stores; returns the result written to ``--out``."""
    result = {"command": opts.command, "config": config_dict(opts), "machine": describe_machine()}
    train, gen_train = ensure_store(
        opts.data_dir, "train", opts.n, opts.pixels, opts.chunk_size, opts.seed
    )
    test, gen_test = ensure_store(
        opts.data_dir, "test", opts.n_test, opts.pixels, opts.chunk_size, opts.seed + 1
    )
    result["stores"] = {"train": gen_train, "test": gen_test}
    methods: dict = {}
    experts: dict = {}
    methods["ours"], result["cluster"], experts["ours"] = measure_ours(train, test, opts)
    result["machine"]["kernel"] = describe_kernels(
        result["machine"]["blas"], result["cluster"]["worker_blas"]
    )
    if "dask-ml" in opts.skip:
        methods["dask-ml"] = skipped("--skip dask-ml")
    else:
        log(f"dask-ml: {DASK_ML_SOLVER}, cap {opts.dask_ml_cap:g} s")
        methods["dask-ml"], experts["dask-ml"] = measure_daskml(train, opts)
    for key in ("numpy", "sklearn"):
        if key in opts.skip:
            for name in ("numpy",) if key == "numpy" else ("sklearn-float64", "sklearn-float32"):
                methods[name] = skipped(f"--skip {key}")
    test_arrays = load_arrays(test, np.float32)  # the store's dtype; widened per block
    run_in_memory(train, opts, methods, experts)
    result["agreement"] = add_quality(methods, experts, test_arrays)
    add_ratios(methods)
    result["methods"] = {k: methods[k] for k in METHODS if k in methods}
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def run_scaling(opts: Options) -> dict:
    """Our fit only, for each N in ``opts.scaling``: time, time per spectrum, peak memory."""
    result = {
        "command": opts.command,
        "config": config_dict(opts),
        "machine": describe_machine(),
        "stores": {},
    }
    points = []
    for n in opts.scaling:
        train, gen = ensure_store(
            opts.data_dir, "train", n, opts.pixels, opts.chunk_size, opts.seed
        )
        result["stores"][str(n)] = gen
        with started_cluster(opts.workers) as (client, startup):
            log(f"scaling: n={n:,}, cluster up in {startup:.1f} s")
            kernel = describe_kernels(result["machine"]["blas"], worker_blas(client))
            result["machine"].setdefault("kernel", kernel)
            if kernel["driver"] != result["machine"]["kernel"]["driver"]:
                raise RuntimeError(f"scaling: n={n:,} ran on another BLAS kernel: {kernel}")
            _, info = fit_ours(client, train, opts)
        log(f"scaling: n={n:,} fit {info['seconds']:.2f} s")
        points.append(
            {"n": n, "startup_s": startup, "seconds_per_spectrum": info["seconds"] / n, **info}
        )
    result["scaling"] = {
        "pixels": opts.pixels,
        "chunk_size": opts.chunk_size,
        "precision": opts.precision,
        "workers": opts.workers,
        "points": points,
    }
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def config_dict(opts: Options) -> dict:
    out = asdict(opts)
    out.update(
        out=str(opts.out),
        data_dir=str(opts.data_dir),
        n_test=opts.n_test,
        bins={"edges": list(EDGES), "names": list(BIN_NAMES), "closed": "right", "by": "store snr"},
        target=TARGET,
    )
    return out


# ---------------------------------------------------------------------- CLI


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers of spectra like 10000,30000; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers of spectra; got {text!r}")
    return values


def _skip_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = sorted(set(values) - set(SKIPPABLE))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"cannot skip {unknown}; choose among {', '.join(SKIPPABLE)} "
            f"(e.g. --skip dask-ml,sklearn)"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time our SNR-binned ridge fit against the BLAS limit, scikit-learn "
        "and dask-ml on the same mock survey.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="training spectra (100000)")
    parser.add_argument(
        "--pixels",
        type=int,
        default=None,
        help="pixels per spectrum (snr-moe.generate.pixels, 4096)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="spectra per store chunk (snr-moe.generate.chunk-size, 4096)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "float64"),
        default="float32",
        help="precision of our products, of numpy's X.T @ X and of dask-ml's X",
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="ridge penalty (1e5)")
    parser.add_argument(
        "--workers", type=int, default=2, help="LocalCluster worker processes, one thread each (2)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="training store seed; the test store uses seed + 1 (42)",
    )
    parser.add_argument(
        "--dask-ml-cap",
        type=float,
        default=600.0,
        help="seconds after which dask-ml is stopped and reported as > cap",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output (benchmarks/results/bench-n{N}-p{P}.json)",
    )
    parser.add_argument(
        "--scaling",
        type=_int_list,
        default=(),
        help="comma-separated N: time only our fit at each N",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/bench"),
        help="where stores are generated and reused (data/bench)",
    )
    parser.add_argument(
        "--skip",
        type=_skip_list,
        default=(),
        help=f"comma-separated methods to skip among {', '.join(SKIPPABLE)}",
    )
    return parser


def parse_options(argv: list[str] | None) -> Options:
    from snr_moe_dask.options import resolve

    parser = build_parser()
    args = parser.parse_args(argv)
    pixels = resolve("pixels", args.pixels)
    chunk = resolve("chunk_size", args.chunk_size)
    for name, value in (
        ("--n", args.n),
        ("--pixels", pixels),
        ("--chunk-size", chunk),
        ("--workers", args.workers),
    ):
        if value < 1:
            parser.error(f"{name} must be a positive integer; got {value}")
    if args.dask_ml_cap <= 0:
        parser.error(f"--dask-ml-cap must be a positive number of seconds; got {args.dask_ml_cap}")
    results = Path(__file__).resolve().parent / "results"
    name = f"scaling-p{pixels}.json" if args.scaling else f"bench-n{args.n}-p{pixels}.json"
    given = sys.argv[1:] if argv is None else list(argv)
    return Options(
        n=args.n,
        pixels=pixels,
        chunk_size=chunk,
        precision=args.precision,
        alpha=args.alpha,
        workers=args.workers,
        seed=args.seed,
        dask_ml_cap=args.dask_ml_cap,
        out=args.out or results / name,
        data_dir=args.data_dir,
        skip=args.skip,
        scaling=args.scaling,
        command=shlex.join(["python", "-m", "benchmarks", *map(str, given)]),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the scaling run), write the JSON and print the tables."""
    import dask

    from snr_moe_dask.store.outputs import write_json

    from .report import format_report

    opts = parse_options(argv)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    with dask.config.set({"snr-moe.cluster.quiet": True}):
        result = run_scaling(opts) if opts.scaling else run_benchmark(opts)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(opts.out, result)
    print(format_report(result))
    print(f"\nwrote {opts.out}")
    return 0
