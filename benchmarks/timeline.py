"""The task stream of one fit: how long each kind of task took, and on which worker.

Run as ``python -m benchmarks.timeline [--store PATH] [--workers 2] [--out FILE]``.
It fits the same five models as ``python -m benchmarks`` (no gate, and no
uncertainties unless ``--calibration N``) on a
LocalCluster of single-threaded workers, with distributed's task stream
recording every task, then prints per kind of task (fold, merge, solve, ...)
the count and total, mean and largest duration of its compute and transfer
steps, each worker's fold durations in order, and when and where each
task after the pass (the experts' pieces, solves, refinement steps and
factors) ran.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

from .harness import BIN_NAMES, EDGES, TARGET, blas_summary, started_cluster, worker_blas
from .kernel import describe_kernels


def task_kind(key) -> str:
    name = key if isinstance(key, str) else key[0]
    return name.split("-")[0]


FINISH = ("expert_piece", "solve_expert", "solve_experts", "refine_expert", "refined", "factor")


def summarize(stream: list[dict], t0: float) -> dict:
    steps = collections.defaultdict(list)
    spans = collections.defaultdict(list)
    folds = collections.defaultdict(list)
    finish = []
    workers = sorted({task["worker"] for task in stream})
    for task in stream:
        kind = task_kind(task["key"])
        for step in task["startstops"]:
            seconds = step["stop"] - step["start"]
            steps[f"{kind} {step['action']}"].append(seconds)
            spans[kind].append((step["start"] - t0, seconds))
            if kind == "fold" and step["action"] == "compute":
                folds[task["worker"]].append((step["start"] - t0, seconds))
            if kind in FINISH and step["action"] == "compute":
                worker = workers.index(task["worker"])
                finish.append([kind, worker, step["start"] - t0, seconds])
    return {
        "finish": sorted(finish, key=lambda row: row[2]),
        "steps": {
            k: {"count": len(v), "total_s": sum(v), "mean_s": float(np.mean(v)), "max_s": max(v)}
            for k, v in sorted(steps.items())
        },
        "folds_by_worker": {w: [s for _, s in sorted(v)] for w, v in folds.items()},
        "windows": sorted(([kind, *_window(v)] for kind, v in spans.items()), key=lambda r: r[1]),
    }


def _window(steps: list[tuple[float, float]]) -> list[float]:
    """When the first step started and the last one ended (seconds from the fit's start)."""
    return [min(s for s, _ in steps), max(s + d for s, d in steps)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__)
    parser.add_argument("--store", default="data/bench/train-n100000-p4096-c4096-s42.zarr")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--calibration",
        type=int,
        default=0,
        help="training spectra read again for the uncertainties (default 0, as python -m "
        "benchmarks times ours; the package default is 20000)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not Path(args.store).exists():
        parser.error(f"no store {args.store!r}: generate it with `python -m benchmarks --n 100000`")
    from distributed import get_task_stream

    from snr_moe_dask.model import SNRBinnedRidge

    model = SNRBinnedRidge(
        alpha=1e5,
        bins=list(EDGES),
        bin_names=list(BIN_NAMES),
        target=TARGET,
        min_spectra=1,
        gate=False,
        calibration=args.calibration,
    )
    with started_cluster(args.workers) as (client, _):
        with get_task_stream(client) as stream:
            t0 = time.time()
            model.fit(args.store)
            seconds = time.time() - t0
        from threadpoolctl import threadpool_info

        result = {
            "command": "python -m benchmarks.timeline " + " ".join(argv or sys.argv[1:]),
            "kernel": describe_kernels(blas_summary(threadpool_info()), worker_blas(client)),
            "fit_s": seconds,
            **model.timings_,
            **summarize(stream.data, t0),
        }
    for kind, s in result["steps"].items():
        print(
            f"{kind:24s} {s['count']:4d} tasks  total {s['total_s']:7.2f} s  "
            f"mean {s['mean_s']:6.3f} s  max {s['max_s']:6.3f} s"
        )
    for worker, folds in result["folds_by_worker"].items():
        print(f"folds on {worker}: " + " ".join(f"{s:.2f}" for s in folds))
    for kind, start, stop in result["windows"]:
        print(f"  {kind:14s} from {start:6.2f} s to {stop:6.2f} s")
    for kind, worker, start, took in result["finish"]:
        print(f"  {kind:14s} worker {worker}  at {start:6.2f} s  for {took:5.2f} s")
    print(f"fit {seconds:.1f} s (pass {result['pass']:.1f} s, solve {result['solve']:.1f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from benchmarks.kernel import run_on_native_kernel

    run_on_native_kernel("benchmarks.timeline")
    raise SystemExit(main())
