"""The evaluation's finalize step: merged chunk summaries to the metrics.json structure.

Everything here works from small per-bin sums (see
:mod:`snr_moe_dask.kernels.metrics`), never from per-spectrum predictions.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..fit.solve import no_cell_name
from ..kernels import metrics as M
from ..kernels.binning import bin_ranges

LEAKAGE_LIMIT = 0.05


def summarize(
    model, summary: dict, params: dict, *, target: str, n_resamples: int, seed: int
) -> dict:
    """Turn the merged chunk summaries into the metrics.json structure."""
    names = list(model.bin_names_)
    n_bins = len(names)
    sums = summary["sums"]
    compared = _compared_metrics(summary["route_sums"], n_bins)
    overall = M.finalize(M.pool_slots(sums, list(range(n_bins + 1))))
    overall["delta_r2"] = overall["r2_moe"] - overall["r2_global"]
    overall["n_train"] = int(model.n_train_[0])
    ci, gains = _bootstrap_cis(summary, names, n_resamples)
    bins = _bin_entries(model, sums, ci)
    served = sum(b["n_test"] for b in bins if not b["fallback"])
    slots = [*names, no_cell_name(model.keys_)]
    return {
        "target": target,
        "routing": params["routings"][0],
        "precision": model.precision_,
        "alpha": {e: float(a) for e, a in zip(model.experts_, model.alpha_)},
        "coverage": served / overall["n"] if overall["n"] else float("nan"),
        "overall": overall,
        "delta_r2_ci95": ci,
        "bins": bins,
        "hypothesis": {"threshold": 0.02},
        "bootstrap": {"n_resamples": n_resamples, "seed": seed},
        "excluded": {
            "train": model.excluded_,
            "test": {
                "excluded": dict(zip(slots, summary["excluded"].tolist())),
                "no_snr_served_by_global": int(sums["n"][n_bins]),
                "bad_pixels": dict(zip(slots, summary["bad_pixels"].tolist())),
            },
        },
        "solvers": model.solver_,
        "fallback": model.fallback_,
        "routings": routing_comparison(model, summary, compared, params, gains),
        **({"alpha_cv": alpha_comparison(model, compared, params)} if params.get("fixed") else {}),
        "keys": [{"name": name, "edges": list(edges)} for name, edges in model.keys_],
        "grid_shape": [len(edges) + 1 for _, edges in model.keys_],
        **({"edge_search": search_summary(model.edge_search_)} if model.edge_search_ else {}),
        **(
            {"calibration": calibration_section(model, summary, params)}
            if "calibration" in summary
            else {}
        ),
    }


def _bootstrap_cis(summary: dict, names: list[str], n_resamples: int):
    """The ΔR² CIs, overall and per bin, and every resample's gains (None without)."""
    if not n_resamples:
        return {}, None
    boot = summary["boot"]
    n_bins = len(names)
    groups = np.concatenate([boot.sum(axis=1, keepdims=True), boot[:, :n_bins]], axis=1)
    gains = M.bootstrap_delta_r2(groups)  # (resamples, groups, routings)
    deltas = gains[..., 0]
    ci = {"overall": M.percentile_ci(deltas[:, 0])}
    for k, name in enumerate(names):
        ci[name] = M.percentile_ci(deltas[:, k + 1])
    return ci, gains


def cell_ranges(keys) -> list[dict[str, list]]:
    """Each cell's range per key, ``{name: [low, high]}`` (None for an open end), in
    cell order (C order over the keys)."""
    per_key = [[(name, list(r)) for r in bin_ranges(edges)] for name, edges in keys]
    return [dict(combo) for combo in itertools.product(*per_key)]


def _bin_entries(model, sums: dict, ci: dict) -> list[dict]:
    """The ``bins`` section of metrics.json: one entry per cell. An SNR key's cells
    carry ``snr_low`` and ``snr_high``; every cell its ``ranges`` per key."""
    bins = []
    snr_keyed = [name for name, _ in model.keys_] in (["snr"], ["observed_snr"])
    for k, (name, ranges) in enumerate(zip(model.bin_names_, cell_ranges(model.keys_))):
        m = M.finalize({key: float(v[k]) for key, v in sums.items()})
        bounds = next(iter(ranges.values()))
        bins.append(
            {
                "name": name,
                **({"snr_low": bounds[0], "snr_high": bounds[1]} if snr_keyed else {}),
                "ranges": ranges,
                "n_train": int(model.n_train_[k + 1]),
                "n_test": m["n"],
                "r2_expert": m["r2_moe"],
                "r2_global": m["r2_global"],
                "delta_r2": m["r2_moe"] - m["r2_global"],
                "mae_expert": m["mae_moe"],
                "mae_global": m["mae_global"],
                "rmse_expert": m["rmse_moe"],
                "rmse_global": m["rmse_global"],
                "fallback": name in model.fallback_,
                "fallback_reason": model.fallback_.get(name, ""),
                "delta_r2_ci95": ci.get(name, [float("nan")] * 2),
            }
        )
    return bins


def _compared_metrics(sums: dict, n_bins: int) -> tuple[dict, list[dict]]:
    """Metrics of every compared prediction: over all slots, and per bin."""
    overall = M.finalize(M.pool_slots(sums, list(range(n_bins + 1))))
    per_bin = [M.finalize(M.pool_slots(sums, [b])) for b in range(n_bins)]
    return overall, per_bin


def routing_comparison(model, summary: dict, compared, params: dict, gains) -> dict:
    """The ``routings`` section of metrics.json: every routing on the same spectra.

    R^2 overall and per true bin, gate accuracy and the confusion matrix of
    true vs routed bin (rows: true bin; columns: routed bin, then "none"),
    fallback rate, rho = (R^2 - R^2_global) / (R^2_oracle - R^2_global)
    with its bootstrap CI, and the gate features' leakage R^2.
    """
    names = list(model.bin_names_)
    n_bins = len(names)
    overall, per_bin = compared
    routings = params["routings"]
    r2_global = overall["r2_global"]
    r2_oracle = overall.get("r2_oracle")
    out: dict = {
        "grouped_by": "true bin" if params.get("by_true") else f"{routings[0]} bin",
        "n": overall["n"],
        "r2_global": r2_global,
        "r2_global_bins": {nm: m["r2_global"] for nm, m in zip(names, per_bin)},
        "by_routing": {},
    }
    for j, r in enumerate(routings):
        conf = summary["confusion"][r]
        known = int(conf.sum())
        entry = {
            "r2": overall[f"r2_{r}"],
            "delta_r2": overall[f"r2_{r}"] - r2_global,
            "r2_bins": {nm: m[f"r2_{r}"] for nm, m in zip(names, per_bin)},
            "mae": overall[f"mae_{r}"],
            "rmse": overall[f"rmse_{r}"],
            "accuracy": float(np.trace(conf[:, :n_bins]) / known) if known else float("nan"),
            "confusion": conf.tolist(),
            "confusion_columns": [*names, "none"],
            "fallback_rate": float(summary["fallback"][r][0] / overall["n"])
            if overall["n"]
            else float("nan"),
        }
        if r2_oracle is not None:
            gain_oracle = r2_oracle - r2_global
            entry["rho"] = (overall[f"r2_{r}"] - r2_global) / gain_oracle if gain_oracle else None
            if gains is not None:
                o = routings.index("oracle")
                with np.errstate(invalid="ignore", divide="ignore"):
                    rho = gains[:, 0, j] / gains[:, 0, o]
                entry["rho_ci95"] = M.percentile_ci(rho)
        out["by_routing"][r] = entry
    if params.get("gate") is not None:
        out["gate"] = _gate_section(params, overall["r2_leakage"])
    out["error_scale"] = params["error_scale"]
    return out


def _gate_section(params: dict, leak: float) -> dict:
    """The gate's part of the routing comparison, with the leakage check."""
    gate = params["gate"]
    return {
        "feature_set": gate["feature_set"],
        "features": list(gate["features"]),
        "threshold": params["gate_threshold"],
        "train_accuracy": gate["train_accuracy"],
        "n_train": gate["n_train"],
        "leakage_r2_test": leak,
        "leakage_r2_train": gate["leak_r2_train"],
        "leakage_flag": bool(leak > LEAKAGE_LIMIT),
        "leakage_limit": LEAKAGE_LIMIT,
    }


def alpha_comparison(model, compared, params: dict) -> dict:
    """The CV-chosen alphas against the fixed alpha on the test set, both routed by
    the primary routing, overall and per bin (the ``alpha_cv`` section)."""
    names = list(model.bin_names_)
    primary = params["routings"][0]
    overall, per_bin = compared
    cv = model.cv_
    best = {e: float(a) for e, a in zip(model.experts_, model.alpha_)}
    return {
        "alpha_fixed": cv["alpha_fixed"],
        "alpha_cv": best,
        "folds": cv["folds"],
        "method": cv.get("method", "kfold"),
        "grid": [float(a) for a in cv["alphas"]],
        "curves": {
            e: {"mean_mse": cv["mean"][i].tolist(), "se": cv["se"][i].tolist()}
            for i, e in enumerate(model.experts_)
        },
        "r2_fixed": overall["r2_fixed_alpha"],
        "r2_cv": overall[f"r2_{primary}"],
        "bins": {
            nm: {"r2_fixed": m["r2_fixed_alpha"], "r2_cv": m[f"r2_{primary}"]}
            for nm, m in zip(names, per_bin)
        },
    }


def search_summary(search: dict) -> dict:
    """The ``edge_search`` section of metrics.json: what the search chose and the CV
    error of the alternatives (the best partition for every number of bins)."""
    return {
        "keys": search["keys"],
        "n_bins": search["n_bins"],
        "cv_error": search["error"],
        "folds": search["folds"],
        "method": search["method"],
        "alpha": search["alpha"] if search.get("alphas") is None else "cv",
        "solves": search["solves"],
        "alternatives": [
            {
                "bins": [int(b) for b in counts.split(",")],
                "edges": edges,
                "cv_error": float(
                    search["errors_by_bins"][tuple(int(b) - 1 for b in counts.split(","))]
                ),
            }
            for counts, edges in search["edges_by_bins"].items()
        ],
    }


#: The issue's targets for calibrated uncertainties, per SNR bin.
Z_STD_RANGE = (0.9, 1.1)
COVERAGE_RANGE = (0.63, 0.73)


def z_statistics(sums: np.ndarray) -> dict:
    """Mean, standard deviation and RMS of z, and the shares with |z| <= 1 and <= 2,
    from :func:`snr_moe_dask.evaluation.tasks.z_sums` of one slot (or pooled)."""
    n, s1, s2, c1, c2 = (float(v) for v in sums)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "z_mean": nan, "z_std": nan, "z_rms": nan, "coverage_1sigma": nan,
                "coverage_2sigma": nan}  # fmt: skip
    mean = s1 / n
    return {
        "n": int(n),
        "z_mean": mean,
        "z_std": float(np.sqrt(max(s2 / n - mean * mean, 0.0))),
        "z_rms": float(np.sqrt(s2 / n)),
        "coverage_1sigma": c1 / n,
        "coverage_2sigma": c2 / n,
    }


def _meets(stats: dict) -> bool:
    return bool(
        Z_STD_RANGE[0] <= stats["z_std"] <= Z_STD_RANGE[1]
        and COVERAGE_RANGE[0] <= stats["coverage_1sigma"] <= COVERAGE_RANGE[1]
    )


def calibration_section(model, summary: dict, params: dict) -> dict:
    """The ``calibration`` section of metrics.json: per routing, z = (pred - truth) / sigma
    overall and per bin (true bins when the store knows the true SNR), against the
    targets std(z) in [0.9, 1.1] and 63-73 % with |z| <= 1."""
    names = list(model.bin_names_)
    cal = model.calibration_
    out = {
        "method": cal.get("method", ""),
        "n_calibration_spectra": cal.get("n_spectra"),
        "grouped_by": "true bin" if params.get("by_true") else f"{params['routings'][0]} bin",
        "targets": {"z_std": list(Z_STD_RANGE), "coverage_1sigma": list(COVERAGE_RANGE)},
        "by_routing": {},
    }
    for r, sums in summary["calibration"].items():
        bins = {name: z_statistics(sums[k]) for k, name in enumerate(names)}
        overall = z_statistics(sums.sum(axis=0))
        populated = [b for b in bins.values() if b["n"]]
        out["by_routing"][r] = {
            "overall": overall,
            "bins": bins,
            "meets_targets": bool(populated) and all(_meets(b) for b in populated),
        }
    return out
