"""``snr-moe fit`` as a user runs it, on our store and on one plain xarray wrote, beside
numpy's ``X.T @ X`` of the same rows, in one run.

``python -m benchmarks.cli [--store PATH] [--out FILE]`` measures, in order:

1. numpy's float32 ``X.T @ X`` of the store's flux, in memory, on all cores
   (the limit; :func:`benchmarks.harness.measure_numpy`);
2. the wall time of ``snr-moe fit STORE --model M --overwrite --workers 2
   --threads-per-worker 1`` in a child process, with the package's defaults
   (the gate and the uncertainties included): process start, imports and
   cluster start-up are in it, as a user waits for them;
3. the same on a copy of the store written by plain ``xarray.Dataset.to_zarr``
   with no encoding given, so with zarr's default compression (zstd): what a
   user's own store often is. The copy is made once, next to the store
   (``...-xarray-zstd.zarr``), and reused.

It runs on the native BLAS kernel (:mod:`benchmarks.kernel`); the children
inherit its environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .full import run_snr_moe
from .harness import blas_summary, describe_machine, measure_numpy
from .kernel import describe_kernels

DEFAULT_STORE = "data/bench/train-n100000-p4096-c4096-s42.zarr"


def xarray_copy(store: Path) -> Path:
    """The store rewritten by plain ``to_zarr`` with zarr's default codecs (made once)."""
    import xarray as xr

    copy = store.with_name(store.stem + "-xarray-zstd.zarr")
    if (copy / "zarr.json").is_file():
        return copy
    ds = xr.open_zarr(store, consolidated=False)
    for var in ds.variables.values():
        var.encoding = {}  # as if the user built the Dataset: zarr's defaults apply
    ds.attrs = dict(ds.attrs)
    with tempfile.TemporaryDirectory(dir=store.parent) as tmp:
        staged = Path(tmp) / copy.name
        ds.to_zarr(staged, zarr_format=3, consolidated=False)
        staged.rename(copy)
    return copy


def codecs(store: Path) -> list[str]:
    meta = json.loads((store / "flux" / "zarr.json").read_text())
    return [c["name"] for c in meta.get("codecs", [])]


def time_fit(store: Path, work: Path) -> dict:
    """Wall time and summed peak RSS of ``snr-moe fit`` on ``store``, in a child."""
    from snr_moe_dask.model import load_model

    model = work / (store.stem + "-model.zarr")
    child = run_snr_moe(
        "fit", str(store), "--model", str(model), "--overwrite",
        "--workers", "2", "--threads-per-worker", "1", "--quiet",
    )  # fmt: skip
    return {
        "command": child["command"],
        "store": str(store),
        "codecs": codecs(store),
        "wall_s": child["wall_s"],
        "fit_timings": load_model(model).timings_,
        "peak_rss_mb": child["peak_rss_mb"],
    }


def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_info

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__)
    parser.add_argument("--store", default=DEFAULT_STORE)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    store = Path(args.store)
    if not (store / "flux").is_dir():
        parser.error(f"no store {store}: generate it with `python -m benchmarks --n 100000`")
    copy = xarray_copy(store)
    import zarr

    x = np.ascontiguousarray(zarr.open_group(store, mode="r")["flux"][:], dtype=np.float32)
    limit = measure_numpy(x)
    del x
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir=store.parent) as tmp:
        runs = [time_fit(s, Path(tmp)) for s in (store, copy)]
    for run in runs:
        run["over_numpy"] = run["wall_s"] / limit["seconds"]
    result = {
        "command": "python -m benchmarks.cli " + " ".join(argv or sys.argv[1:]),
        "machine": describe_machine(),
        "kernel": describe_kernels(blas_summary(threadpool_info()), {}),
        "numpy": limit,
        "fits": runs,
        "load_average_end": list(os.getloadavg()),
    }
    print(f"numpy X.T @ X of the same rows: {limit['seconds']:.2f} s")
    for run in runs:
        print(
            f"snr-moe fit on {run['store']} ({'+'.join(run['codecs'])}): {run['wall_s']:.1f} s "
            f"wall = {run['over_numpy']:.2f}x numpy (fit {run['fit_timings']['total']:.1f} s); "
            f"peak {run['peak_rss_mb'] / 1e3:.2f} GB"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from benchmarks.kernel import run_on_native_kernel

    run_on_native_kernel("benchmarks.cli")
    raise SystemExit(main())
