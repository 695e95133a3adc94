"""Cross-validated alpha: our one-pass K-fold CV against the plain fit and explicit refits.

Run as ``python -m benchmarks.cv [--n N] [--folds K] [--grid START:STOP:NUM] [--out FILE]``.
On the same training store, in one run:

- ``plain``: ``SNRBinnedRidge(alpha=1e5).fit(store)`` (global + 4 experts, no gate);
- ``cv``: the same with ``alpha="cv"``: per-(bin, fold) statistics in the same
  single pass, one eigendecomposition per expert and fold for the whole grid;
- ``sklearn K-fold``: explicit ``Ridge(alpha)`` refits on the training folds
  of every expert, on float64 rows already in memory. The whole grid would be
  K x n_alphas x 5 fits, so it is estimated: each expert's fit on fold 0's
  training rows is timed at two alphas, and the mean is multiplied by
  K x n_alphas. The estimate is labelled as such in the output.

Both of our fits run on the same LocalCluster of single-threaded workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .harness import (
    ALPHA,
    BIN_NAMES,
    EDGES,
    TARGET,
    PeakRSS,
    describe_machine,
    ensure_store,
    expert_rows,
    load_arrays,
    log,
    started_cluster,
    worker_blas,
)
from .kernel import describe_kernels


def fit_timed(client, store: Path, **params) -> tuple[object, dict]:
    import os

    import psutil

    from snr_moe_dask.model import SNRBinnedRidge

    procs = [psutil.Process(), *(psutil.Process(p) for p in client.run(os.getpid).values())]
    model = SNRBinnedRidge(
        bins=list(EDGES),
        bin_names=list(BIN_NAMES),
        target=TARGET,
        min_spectra=1,
        gate=False,
        **params,
    )
    with PeakRSS(lambda: procs, interval=0.2) as mem:
        t0 = time.perf_counter()
        model.fit(str(store))
        seconds = time.perf_counter() - t0
    return model, {"seconds": seconds, **model.timings_, **mem.as_dict()}


def sklearn_kfold_estimate(store: Path, folds: int, n_alphas: int) -> dict:
    """Time one explicit refit per expert (fold 0, two alphas) and scale to the grid."""
    from sklearn.linear_model import Ridge

    from snr_moe_dask.kernels.cv import assign_folds

    data = load_arrays(store, np.float64)
    fold = assign_folds(np.arange(len(data["y"])), folds, 0)
    per_expert = {}
    for name, rows in expert_rows(data["bins"]):
        rows = np.arange(len(data["y"])) if rows is None else rows
        train = rows[fold[rows] != 0]
        times = []
        for alpha in (ALPHA, 1e2):
            t0 = time.perf_counter()
            Ridge(alpha=alpha).fit(data["x"][train], data["y"][train])
            times.append(time.perf_counter() - t0)
        per_expert[name] = {"rows": int(train.size), "seconds_per_fit": float(np.mean(times))}
        log(f"sklearn Ridge on {train.size:,} rows ({name}): {np.mean(times):.1f} s per fit")
    one_pass = sum(e["seconds_per_fit"] for e in per_expert.values())
    return {
        "per_expert": per_expert,
        "fits": 5 * folds * n_alphas,
        "estimated_seconds": one_pass * folds * n_alphas,
        "measured": "one fit per expert on fold 0's training rows, mean of alpha 1e5 and 1e2",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cv", description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--pixels", type=int, default=4096)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--grid", default="1:1e9:28", help="START:STOP:NUM, log-spaced")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default="data/bench")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from snr_moe_dask.kernels.cv import alpha_grid

    start, stop, num = args.grid.split(":")
    grid = alpha_grid(float(start), float(stop), int(num))
    store, _ = ensure_store(Path(args.data_dir), "train", args.n, args.pixels, args.chunk_size, 42)
    result: dict = {
        "command": "python -m benchmarks.cv " + " ".join(argv or sys.argv[1:]),
        "n": args.n,
        "pixels": args.pixels,
        "folds": args.folds,
        "grid": [float(grid[0]), float(grid[-1]), len(grid)],
        "machine": describe_machine(),
    }
    with started_cluster(args.workers) as (client, _):
        result["machine"]["kernel"] = describe_kernels(
            result["machine"]["blas"], worker_blas(client)
        )
        log("plain fit")
        plain, result["plain"] = fit_timed(client, store, alpha=ALPHA)
        log(f"plain fit: {result['plain']['seconds']:.1f} s; CV fit")
        cv, result["cv"] = fit_timed(client, store, alpha="cv", alphas=grid, cv=args.folds)
        log(f"CV fit: {result['cv']['seconds']:.1f} s")
    result["cv"]["alpha"] = dict(zip(cv.experts_, map(float, cv.alpha_)))
    result["cv_over_plain"] = result["cv"]["seconds"] / result["plain"]["seconds"]
    same = np.max(np.abs(cv.cv_["coef_fixed"] - plain.coef_)) / np.max(np.abs(plain.coef_))
    result["fixed_alpha_agreement"] = float(same)
    if not args.skip_sklearn:
        result["sklearn_kfold"] = sklearn_kfold_estimate(store, args.folds, len(grid))
        result["speedup_over_sklearn_kfold"] = (
            result["sklearn_kfold"]["estimated_seconds"] / result["cv"]["seconds"]
        )
    text = json.dumps(result, indent=1)
    print(text)
    out = Path(args.out or f"benchmarks/results/cv-n{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    from benchmarks.kernel import run_on_native_kernel

    run_on_native_kernel("benchmarks.cv")
    sys.exit(main())
