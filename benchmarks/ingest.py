"""Throughput of ``snr-moe ingest`` (each format) and ``snr-moe predict``.

Run as ``python -m benchmarks.ingest --n 20000 --model MODEL.zarr [--pixels 4096]
[--dir DIR] [--out FILE]``. It writes source files of ``n`` spectra with the
test suite's fixture writers (``tests/ingest_fixtures.py``: real HDF5 and FITS
layouts), then times, each through the command on a LocalCluster of two
single-threaded workers:

- ``ingest pfsspec``: shards of 2000 spectra (float32), noise added;
- ``ingest pfs (pfsMerged, own grid)``: one shared grid, no resampling;
- ``ingest pfs (pfsArm, resampled)``: per-fibre grids, linear resampling onto
  the model's grid;
- ``predict``: the model on the resampled pfsArm store (soft routing), with
  the catalog.

Spectra per second are the command's wall time, cluster start included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .harness import describe_machine

CLUSTER = ["--workers", "2", "--threads-per-worker", "1", "--quiet", "--overwrite"]


def write_sources(folder: Path, n: int, pixels: int) -> dict[str, list[str]]:
    """pfsspec shards, pfsMerged and pfsArm files of ``n`` spectra each (made once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from ingest_fixtures import write_pfs_arm, write_pfs_merged, write_pfsspec_shard

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {"pfsspec": [], "merged": [], "arm": []}
    per_file = 2000  # a PFS visit has at most 2394 fibres
    for k, start in enumerate(range(0, n, per_file)):
        m = min(per_file, n - start)
        shard = folder / f"shard-{k}.h5"
        if not shard.exists():
            write_pfsspec_shard(shard, n=m, n_pixels=pixels, seed=k, flux_dtype=np.float32)
        out["pfsspec"].append(str(shard))
        kwargs = {"n_fiber": m, "n_pixels": pixels, "seed": k}
        merged = folder / f"pfsMerged-{100 + k:06d}.fits"
        if not merged.exists():
            write_pfs_merged(folder, visit=100 + k, **kwargs)
        out["merged"].append(str(merged))
        arm = folder / f"pfsArm-{100 + k:06d}-m1.fits"
        if not arm.exists():
            write_pfs_arm(folder, visit=100 + k, **kwargs)
        out["arm"].append(str(arm))
    return out


def timed(argv: list[str]) -> float:
    from snr_moe_dask.cli import main

    t0 = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"benchmark command failed: snr-moe {' '.join(argv)}")
    return time.perf_counter() - t0


def run(n: int, pixels: int, folder: Path, model: str) -> dict:
    sources = write_sources(folder, n, pixels)
    stores = {k: str(folder / f"{k}.zarr") for k in ("pfsspec", "merged", "arm")}
    runs = {
        "ingest pfsspec": ["ingest", "--format", "pfsspec", *sources["pfsspec"]],
        "ingest pfs (pfsMerged, own grid)": ["ingest", "--format", "pfs", *sources["merged"]],
        "ingest pfs (pfsArm, resampled)": [
            "ingest", "--format", "pfs", *sources["arm"], "--wavelength-grid", model,
        ],
    }  # fmt: skip
    outs = {
        "ingest pfsspec": stores["pfsspec"],
        "ingest pfs (pfsMerged, own grid)": stores["merged"],
        "ingest pfs (pfsArm, resampled)": stores["arm"],
    }
    result = {"n": n, "pixels": pixels, "machine": describe_machine(), "runs": {}}
    for name, argv in runs.items():
        seconds = timed([*argv, "--out", outs[name], *CLUSTER])
        result["runs"][name] = {"seconds": seconds, "spectra_per_s": n / seconds}
    seconds = timed(["predict", model, stores["arm"], "--out", str(folder / "pred"), *CLUSTER])
    result["runs"]["predict (soft, with catalog)"] = {
        "seconds": seconds,
        "spectra_per_s": n / seconds,
    }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--pixels", type=int, default=4096)
    parser.add_argument("--model", required=True, help="a model store (its grid for resampling)")
    parser.add_argument("--dir", default="data/bench-ingest")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.n, args.pixels, Path(args.dir), args.model)
    for name, r in result["runs"].items():
        print(f"{name:>36}: {r['seconds']:7.1f} s  {r['spectra_per_s']:8,.0f} spectra/s")
    print("BLAS:", result["machine"]["blas"], "load:", result["machine"]["load_average"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from benchmarks.kernel import run_on_native_kernel

    run_on_native_kernel("benchmarks.ingest")
    sys.exit(main())
