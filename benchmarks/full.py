"""The full study end to end, beside its two floors, measured in one run.

``python -m benchmarks.full CONFIG.yaml --out RESULT.json`` measures, in order:

1. the read floor: the bytes of the experiment's training and test stores over
   the disk's throughput, from ``dd iflag=direct`` (no page cache) on the
   flux and error chunk files of ``--dd-chunks`` chunks evenly spread over the
   training store;
2. the product floor: ``--product-factor`` (10) times numpy's float32 ``X.T @
   X`` of ``--product-rows`` (100,000) x the store's pixels, in memory, on all
   cores (best of at least 2 and up to 5 runs), the FLOPs a 1M fit cannot avoid;
3. ``snr-moe run CONFIG --out DIR --overwrite`` as a user runs it, in a child
   process: its wall time, process and cluster start-up included, the fit and
   evaluation times it records, and the peak of the summed RSS of its process
   tree.

It runs on the native BLAS kernel (:mod:`benchmarks.kernel`) and records the
kernel of this process and of the workers of a LocalCluster started the way
the run starts its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from .harness import (
    PeakRSS,
    blas_summary,
    describe_machine,
    measure_numpy,
    process_tree,
    started_cluster,
    worker_blas,
)
from .kernel import describe_kernels

GB = 1e9


def store_bytes(path: Path) -> int:
    """The bytes of every file under a store."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def chunk_files(store: Path, count: int) -> list[Path]:
    """The flux and error chunk files of ``count`` chunks evenly spread over the store."""
    files = []
    for var in ("flux", "error"):
        found = sorted((store / var / "c").glob("*/*"), key=lambda p: int(p.parent.name))
        picks = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
        files += [found[i] for i in sorted(set(picks.tolist()))]
    return files


def dd_throughput(files: list[Path]) -> dict:
    """Read each file with ``dd iflag=direct`` (bypassing the page cache); bytes/s."""
    total, t0 = 0, time.perf_counter()
    for f in files:
        subprocess.run(
            ["dd", f"if={f}", "of=/dev/null", "bs=16M", "iflag=direct", "status=none"],
            check=True,
        )
        total += f.stat().st_size
    seconds = time.perf_counter() - t0
    return {"files": len(files), "bytes": total, "seconds": seconds, "bytes_per_s": total / seconds}


def product_floor(rows: int, pixels: int, factor: float) -> dict:
    """``factor`` x the best time of numpy's float32 ``X.T @ X`` of ``rows`` x ``pixels``."""
    x = np.random.default_rng(0).standard_normal((rows, pixels), dtype=np.float32)
    result = measure_numpy(x)
    del x
    return {**result, "rows": rows, "factor": factor, "floor_s": factor * result["seconds"]}


def run_snr_moe(*args: str) -> dict:
    """``snr-moe ARGS`` in a child process: its command line, wall time, printed
    output and the peak of its process tree's summed RSS (MB). A failure stops the
    benchmark with the child's output."""
    argv = [sys.executable, "-m", "snr_moe_dask.cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    with PeakRSS(lambda: process_tree(root), interval=0.5) as mem:
        output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"snr-moe {args[0]} failed ({proc.returncode}):\n{output}")
    return {
        "command": " ".join(["snr-moe", *args]),
        "wall_s": wall,
        "output": output,
        "peak_rss_mb": mem.peak / 1e6,
    }


def run_command(config: str, out: str) -> dict:
    """``snr-moe run CONFIG --out OUT --overwrite`` in a child; wall time and memory."""
    child = run_snr_moe("run", config, "--out", out, "--overwrite")
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {
        "command": child["command"],
        "wall_s": child["wall_s"],
        "timings": metrics.get("timings", {}),
        "peak_rss_mb": child["peak_rss_mb"],
        "output": child["output"].splitlines()[-12:],
        "r2": {k: metrics["overall"].get(k) for k in ("r2_global", "r2_moe", "delta_r2")},
    }


def run(config: str, out: str, dd_chunks: int, rows: int, factor: float) -> dict:
    import yaml
    from threadpoolctl import threadpool_info

    exp = yaml.safe_load(Path(config).read_text())
    train, test = Path(exp["data"]["train_store"]), Path(exp["data"]["test_store"])
    pixels = int(exp["data"]["feature_dim"])
    for store in (train, test):
        if not (store / "flux").is_dir():
            raise SystemExit(
                f"{config}: store {store} is missing: run `snr-moe run {config}` once to "
                "generate it (a benchmark does not time the generation)"
            )
    with started_cluster(2) as (client, _):
        kernel = describe_kernels(blas_summary(threadpool_info()), worker_blas(client))
    machine = describe_machine() | {"kernel": kernel}
    size = store_bytes(train) + store_bytes(test)
    disk = dd_throughput(chunk_files(train, dd_chunks))
    read = {"store_bytes": size, "dd": disk, "floor_s": size / disk["bytes_per_s"]}
    products = product_floor(rows, pixels, factor)
    command = run_command(config, out)
    floor = max(read["floor_s"], products["floor_s"])
    return {
        "config": config,
        "machine": machine,
        "read_floor": read,
        "product_floor": products,
        "run": command,
        "floor_s": floor,
        "ratio": command["wall_s"] / floor,
        "load_average_end": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.full")
    parser.add_argument("config", help="an experiment YAML (configs/oracle_snr_moe.yaml)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--run-dir", default="runs/bench-full", help="the run's output folder")
    parser.add_argument("--dd-chunks", type=int, default=24)
    parser.add_argument("--product-rows", type=int, default=100_000)
    parser.add_argument("--product-factor", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = run(args.config, args.run_dir, args.dd_chunks, args.product_rows, args.product_factor)
    read, products, command = result["read_floor"], result["product_floor"], result["run"]
    print(
        f"read floor {read['floor_s']:.1f} s ({read['store_bytes'] / GB:.1f} GB at "
        f"{read['dd']['bytes_per_s'] / 1e6:.0f} MB/s); product floor {products['floor_s']:.1f} s "
        f"({products['factor']:g} x {products['seconds']:.2f} s); run {command['wall_s']:.1f} s "
        f"= {result['ratio']:.2f}x the larger floor; peak {command['peak_rss_mb'] / 1e3:.2f} GB; "
        f"kernel {result['machine']['kernel']['driver']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    from benchmarks.kernel import run_on_native_kernel

    run_on_native_kernel("benchmarks.full")
    sys.exit(main())
