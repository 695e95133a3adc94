"""Tables and the scaling plot for the benchmark JSON.

``python -m benchmarks.report FILE.json`` prints the tables again;
``--plot out.png`` draws fit time and peak memory against N from a
``--scaling`` run (matplotlib's Figure API, no pyplot state).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METHOD_LABELS = {
    "numpy": "X.T @ X in memory, numpy BLAS, all cores (hardware limit)",
    "ours": "SNRBinnedRidge.fit(store), LocalCluster",
    "sklearn-float64": "sklearn Ridge, float64 rows in memory",
    "sklearn-float32": "sklearn Ridge, float32 rows in memory",
    "dask-ml": "dask-ml LinearRegression(l2), centred dask arrays",
}


def _num(value, fmt: str = ".3g", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def _time_cell(info: dict) -> str:
    status = info.get("status")
    if status == "timeout":
        return f"> {info.get('cap_s', info.get('seconds')):g}"
    if status == "skipped":
        return "skipped"
    if status == "error":
        return "error"
    return _num(info.get("seconds"))


def _ratio_cell(value, timeout: bool) -> str:
    if value is None:
        return "-"
    return f"{'> ' if timeout else ''}{value:.3g}x"


def format_table(result: dict) -> str:
    """One row per method: time, ratio to numpy, our speed-up, R2 and peak memory."""
    header = (
        "method",
        "time (s)",
        "/ numpy",
        "ours faster",
        "R2 global",
        "R2 MoE",
        "peak mem (MB)",
        "what",
    )
    rows = [header]
    for key, info in result["methods"].items():
        timeout = info.get("status") == "timeout"
        rows.append(
            (
                key,
                _time_cell(info),
                _ratio_cell(info.get("ratio_to_numpy"), timeout),
                _ratio_cell(info.get("ours_speedup"), timeout),
                _num(info.get("r2_global"), ".6f"),
                _num(info.get("r2_moe"), ".6f"),
                _num(info.get("peak_rss_delta_mb"), ".0f"),
                METHOD_LABELS.get(key, ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i in (0, 7) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_header(result: dict) -> str:
    c = result["config"]
    if result.get("scaling"):
        what = (
            f"scaling of our fit: N = {', '.join(f'{n:,}' for n in c['scaling'])} at "
            f"{c['pixels']} pixels, chunks of {c['chunk_size']}, {c['precision']}"
        )
    else:
        what = (
            f"{c['n']:,} spectra x {c['pixels']} pixels, chunks of {c['chunk_size']}, "
            f"{c['precision']}, alpha={c['alpha']:g}; test {c['n_test']:,} spectra"
        )
    return f"$ {result['command']}\n{what}"


def format_machine(machine: dict) -> str:
    blas = (
        ", ".join(
            f"{b['internal_api']} {b['version']} ({b['num_threads']} threads"
            f"{', ' + b['threading_layer'] if b.get('threading_layer') else ''})"
            for b in machine["blas"]
        )
        or "none found"
    )
    v = machine["versions"]
    versions = ", ".join(
        f"{k} {v[k]}"
        for k in ("numpy", "scipy", "dask", "distributed", "scikit-learn", "dask-ml")
        if k in v
    )
    load = machine["load_average"]
    return "\n".join(
        [
            f"machine: {machine['cpu_model']}; {machine['logical_cores']} logical / "
            f"{machine['physical_cores']} physical cores; {machine['memory_gb']:.1f} GB",
            f"BLAS (driver): {blas}",
            *_kernel_line(machine),
            f"versions: python {v['python']}, {versions}",
            f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        ]
    )


def _kernel_line(machine: dict) -> list[str]:
    kernel = machine.get("kernel")
    if not kernel:
        return []
    unset = f"; unset for this run: {kernel['unset']}" if kernel.get("unset") else ""
    forced = f"; FORCED by {kernel['forced']}" if kernel.get("forced") else ""
    return [f"BLAS kernel: {kernel['driver']} (driver and every worker){unset}{forced}"]


def format_notes(result: dict) -> str:
    lines = []
    cluster = result.get("cluster")
    if cluster:
        threads = sorted(
            {b["num_threads"] for libs in cluster["worker_blas"].values() for b in libs}
        )
        ev = cluster["evaluation"]
        lines += [
            f"ours: LocalCluster of {cluster['workers']} workers x "
            f"{cluster['threads_per_worker']} thread (worker BLAS threads {threads}); "
            f"start-up {cluster['startup_s']:.2f} s, not in the fit time",
            f"ours: fit = {result['methods']['ours']['pass_s']:.3g} s pass + "
            f"{result['methods']['ours']['solve_s']:.3g} s solve; evaluation: "
            f"{ev['n']:,} spectra in {ev['seconds']:.3g} s = "
            f"{ev['spectra_per_second']:,.0f} spectra/s",
        ]
    numpy_info = result["methods"].get("numpy", {})
    if numpy_info.get("status") == "ok":
        lines.append(
            f"numpy: best of {len(numpy_info['repeats'])}, "
            f"{numpy_info['gflops']:.1f} GFLOP/s ({numpy_info['dtype']})"
        )
    dml = result["methods"].get("dask-ml", {})
    if dml.get("status") in ("ok", "timeout", "error"):
        lines.append(
            f"dask-ml: solver {dml['solver']}, {dml['status']}, experts done "
            f"{dml['completed']}, cluster start-up "
            f"{_num(dml.get('cluster_startup_s'), '.2f')} s, not in its time"
        )
    for key, info in result["methods"].items():
        if info.get("status") == "skipped":
            lines.append(f"{key}: skipped ({info['reason']})")
    agreement = result.get("agreement") or {}
    for key, gaps in agreement.get("max_abs_pred_diff_over_std_y", {}).items():
        cells = ", ".join(f"{e} {g:.1e}" for e, g in gaps.items())
        lines.append(f"max |pred - sklearn-float64| / std(y), {key}: {cells}")
    if "ours_within_1e-6" in agreement:
        d = agreement["ours_r2_diff"]
        lines.append(
            f"ours vs sklearn-float64: |dR2| global {d['global']:.1e}, MoE "
            f"{d['moe']:.1e}; within 1e-6: {agreement['ours_within_1e-6']}"
        )
    lines.append(
        "peak mem: RSS above the baseline just before each measurement (ours and "
        "dask-ml: driver + workers; numpy and sklearn: rows already in memory)"
    )
    return "\n".join(lines)


def format_scaling(result: dict) -> str:
    header = (
        "N",
        "fit (s)",
        "pass (s)",
        "solve (s)",
        "us/spectrum",
        "peak mem (MB)",
        "peak RSS (MB)",
    )
    rows = [header] + [
        (
            f"{p['n']:,}",
            f"{p['seconds']:.3g}",
            f"{p['pass_s']:.3g}",
            f"{p['solve_s']:.3g}",
            f"{p['seconds_per_spectrum'] * 1e6:.3g}",
            f"{p['peak_rss_delta_mb']:.0f}",
            f"{p['peak_rss_mb']:.0f}",
        )
        for p in result["scaling"]["points"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """Everything printed at the end of a run."""
    parts = [format_header(result)]
    if result.get("scaling"):
        parts.append(format_scaling(result))
    else:
        parts += [format_table(result), format_notes(result)]
    parts.append(format_machine(result["machine"]))
    return "\n\n".join(parts)


def plot_scaling(result: dict, path: str | Path):
    """Fit time and peak memory against N, on log-log axes; returns the Figure."""
    from matplotlib.figure import Figure

    if not result.get("scaling"):
        raise ValueError(
            "this JSON has no 'scaling' section; produce one with "
            "`python -m benchmarks --scaling 10000,30000,100000 --out FILE.json`"
        )
    points = sorted(result["scaling"]["points"], key=lambda p: p["n"])
    n = [p["n"] for p in points]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_t, ax_m = fig.subplots(1, 2)
    seconds = [p["seconds"] for p in points]
    ax_t.loglog(n, seconds, "o-", label="fit")
    ax_t.loglog(n, [seconds[-1] * k / n[-1] for k in n], ":", color="grey", label="linear in N")
    ax_t.set(xlabel="training spectra N", ylabel="fit time (s)", title="fit time")
    ax_m.loglog(n, [p["peak_rss_mb"] for p in points], "o-", label="peak RSS")
    ax_m.loglog(
        n, [max(p["peak_rss_delta_mb"], 1e-3) for p in points], "s--", label="above baseline"
    )
    ax_m.set(xlabel="training spectra N", ylabel="MB", title="peak memory, driver + workers")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    s = result["scaling"]
    fig.suptitle(
        f"SNRBinnedRidge.fit: {s['pixels']} pixels, {s['precision']}, "
        f"{s['workers']} single-threaded workers"
    )
    fig.savefig(path, dpi=120)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Print a benchmark JSON; plot a scaling run.",
    )
    parser.add_argument("json", type=Path, help="output of python -m benchmarks --out")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of time and memory vs N")
    args = parser.parse_args(argv)
    result = json.loads(args.json.read_text())
    print(format_report(result))
    if args.plot:
        try:
            plot_scaling(result, args.plot)
        except ValueError as exc:
            parser.error(f"{args.json}: {exc}")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
