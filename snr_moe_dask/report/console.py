"""What the commands print to the terminal: a fit's and an evaluation's summaries."""

from __future__ import annotations


def fit_summary(model, path: str, seconds: float) -> str:
    """What a fit did, for the terminal: the experts, their sizes and alphas, the gate,
    the alpha selection and what was excluded."""
    lines = [f"fitted {len(model.experts_)} models in {seconds:.1f} s -> {path}"]
    record = model.fit_record
    if record is not None and record.restored:
        lines.append(
            f"  resumed from {record.checkpoint}: {record.restored} of {record.chunks} chunks "
            f"restored from checkpoints, {record.folded} read and folded"
        )
    width = max(8, *(len(name) for name in model.experts_))
    for name, n, alpha in zip(model.experts_, model.n_train_, model.alpha_):
        note = model.fallback_.get(name) or model.solver_.get(name, {}).get("reason", "")
        lines.append(f"  {name:>{width}}: n_train={int(n):>10,}  alpha={alpha:.3g}  {note}")
    gate = model.gate_
    if gate:
        lines.append(
            f"  gate: logistic regression on {gate['feature_set']} features of "
            f"{gate['n_train']:,} spectra, training accuracy {gate['train_accuracy']:.4f}, "
            f"leakage R2 {gate['leak_r2_train']:.4f}"
        )
    if model.cv_:
        cv = model.cv_
        how = "GCV" if cv.get("method") == "gcv" else f"{cv['folds']}-fold CV"
        lines.append(
            f"  alpha by {how} over {len(cv['alphas'])} values "
            f"{cv['alphas'][0]:.3g}..{cv['alphas'][-1]:.3g} (fixed alpha "
            f"{cv['alpha_fixed']:.3g} also solved, for comparison)"
        )
    cal = model.calibration_
    if cal:
        lines.append(
            f"  uncertainties: exact leave-one-out errors of {cal['n_spectra']:,} training "
            f"spectra (chunks {cal['chunks']} read again), {cal['variance'].shape[1]} "
            f"observed-SNR bins per expert; {cal['task_seconds']:.1f} s of task time"
        )
    search = model.edge_search_
    if search:
        chosen = "; ".join(
            f"{k['name']} {', '.join(f'{e:.4g}' for e in k['edges'])}" for k in search["keys"]
        )
        lines.append(
            f"  edges by {search['folds']}-fold CV over merges of fine bins: {chosen} "
            f"(CV error {search['error']:.5g}, {search['solves']:,} factorizations)"
        )
    exc = model.excluded_
    lines.append(
        "  excluded spectra: "
        + ", ".join(f"{k}={sum(v.values()):,}" for k, v in exc.items() if k != "bad_pixels")
        + f"; bad pixels in used spectra: {sum(exc['bad_pixels'].values()):,}"
    )
    return "\n".join(lines)


def evaluate_summary(result: dict, out: str) -> str:
    """What an evaluation found, for the terminal: R², ΔR² and its CI, and each routing."""
    o = result["overall"]
    ci = result["delta_r2_ci95"].get("overall", [float("nan")] * 2)
    return (
        f"R2 global {o['r2_global']:.4f}, MoE ({result['routing']}) {o['r2_moe']:.4f}, "
        f"delta {o['delta_r2']:+.4f} [95% CI {ci[0]:+.4f}, {ci[1]:+.4f}] on {o['n']:,} spectra"
        + "".join(
            f"\n  {r:>8}: R2 {e['r2']:.4f}  gate accuracy {e['accuracy']:.3f}"
            + (f"  rho {e['rho']:.2f}" if e.get("rho") is not None else "")
            + (f"  fallback {e['fallback_rate']:.3f}" if r == "soft" else "")
            for r, e in result["routings"]["by_routing"].items()
            if len(result["routings"]["by_routing"]) > 1
        )
        + "".join(
            f"\n  {r:>8}: uncertainty std(z) {e['overall']['z_std']:.3f}, "
            f"|z| <= 1 for {e['overall']['coverage_1sigma']:.1%}"
            + ("" if e["meets_targets"] else " (not within the targets in every bin)")
            for r, e in (result.get("calibration") or {}).get("by_routing", {}).items()
        )
        + f"\nwrote {out}/report.md, metrics.json, predictions.zarr, figures/"
    )
