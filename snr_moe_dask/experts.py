"""The fit's last graph tasks: solve the global model and the experts from the
merged statistics, and train the gate on the recorded features.

:func:`solve_experts` runs on the worker that holds the merged accumulator
and needs only numpy and scipy, so that worker imports neither xarray nor
scikit-learn for it (:func:`train_gate` needs scikit-learn's logistic
regression, and imports it when it runs).
"""

from __future__ import annotations

import time

import numpy as np

from . import stats
from .reduce import gather
from .solve import solve_ridge

GLOBAL = "global"


def _cv_choice(cv_results: list, settings: dict) -> tuple[np.ndarray, dict]:
    """The chosen alpha per expert and the CV record (``cv_`` attribute)."""
    from .cv import summarize_cv, summarize_gcv

    cv = settings["cv"]
    if cv["method"] == "gcv":
        scores = np.array([expert[0][0] for expert in cv_results])
        summary = summarize_gcv(scores, np.array([expert[0][1] for expert in cv_results]))
        n_valid = summary["n_valid"]
    else:
        sse = np.array([[r[0] for r in expert] for expert in cv_results])
        n_valid = np.array([[r[1] for r in expert] for expert in cv_results])
        summary = summarize_cv(sse, n_valid)
    grid = cv["alphas"]
    chosen = np.where(summary["best"] >= 0, grid[np.clip(summary["best"], 0, None)], np.nan)
    record = {
        "alphas": grid,
        "folds": cv["folds"],
        "seed": cv["seed"],
        "method": cv["method"],
        "n_valid": n_valid,
        "alpha_fixed": cv["alpha_fixed"],
        **{k: summary[k] for k in ("mse", "mean", "se")},
    }
    return chosen, record


def solve_experts(acc: dict, settings: dict, cv_results: list | None = None) -> dict:
    """Solve the global model and each expert from the merged statistics (graph task).

    It runs on the worker that holds the merged accumulator, so only the
    coefficients and the SNRs travel to the client.

    With cross-validation (``cv_results`` from :func:`cv_graph`), each
    expert's alpha is the one with the lowest mean held-out error, and the
    fixed-alpha solution is solved from the same statistics for comparison.

    Returns
    -------
    dict
        ``coef``, ``intercept``, ``mean_x``, ``experts``, ``n_train``,
        ``alpha``, ``fallback``, ``solver``, ``excluded``, ``cv``, ``snr``,
        ``route_snr`` and ``seconds`` (time spent solving).
    """
    t0 = time.perf_counter()
    names = settings["names"]
    experts = [GLOBAL, *names]
    alphas = np.array(settings["alphas"], dtype=np.float64)
    cv, raw = None, acc
    if settings["cv"]:
        chosen, cv = _cv_choice(cv_results, settings)
        alphas = np.where(np.isfinite(chosen), chosen, alphas)
        acc = stats.bin_stats(acc, settings["cv"]["folds"])
    total = stats.total_stats(acc)
    per_expert = [(total, 0)] + [(acc, k) for k in range(len(names))]
    n_pixels = acc["mean_x"].shape[1]
    n_targets = acc["mean_y"].shape[1]
    coef = np.zeros((len(experts), n_pixels, n_targets))
    intercept = np.zeros((len(experts), n_targets))
    mean_x = np.zeros((len(experts), n_pixels))
    n_train = np.array([total["n"][0], *acc["n"]])
    fallback, solver = {}, {}
    fixed = (np.zeros_like(coef), np.zeros_like(intercept)) if cv else None
    if n_train[0] < 1:
        raise ValueError(
            "no training spectrum is usable: every spectrum was excluded "
            f"({_excluded_summary(raw, names)}); check the store's target and "
            "error values, or raise --max-bad-fraction"
        )
    for e, (src, k) in enumerate(per_expert):
        name = experts[e]
        if e > 0 and n_train[e] < max(settings["min_spectra"], 1):
            fallback[name] = (
                f"{int(n_train[e])} training spectra < min_spectra "
                f"{settings['min_spectra']}; served by the global model"
            )
            coef[e], intercept[e], mean_x[e] = coef[0], intercept[0], mean_x[0]
            if fixed:
                fixed[0][e], fixed[1][e] = fixed[0][0], fixed[1][0]
            continue
        problem = (
            src["n"][k],
            src["mean_x"][k],
            src["mean_y"][k],
            stats.gram_upper(src["sxx"][k]),
            src["sxy"][k],
        )
        coef[e], intercept[e], info = solve_ridge(
            *problem, alphas[e], standardize=settings["standardize"]
        )
        if cv and not np.isfinite(chosen[e]):
            info["reason"] = (info["reason"] + "; " if info["reason"] else "") + (
                "fewer than 2 spectra for GCV: fixed alpha kept"
                if cv["method"] == "gcv"
                else "fewer than 2 non-empty CV folds: fixed alpha kept"
            )
        if fixed:
            fixed[0][e], fixed[1][e], _ = solve_ridge(
                *problem, cv["alpha_fixed"], standardize=settings["standardize"]
            )
        mean_x[e] = src["mean_x"][k]
        solver[name] = info
        if not (np.isfinite(coef[e]).all() and np.isfinite(intercept[e]).all()):
            raise ValueError(
                f"expert {name!r}: the solve gave non-finite coefficients (its statistics "
                f"hold non-finite values: n={src['n'][k]:g}); nothing was saved: check the "
                "store's flux and target values for inf, or refit with --precision float64"
            )
    if cv:
        cv["coef_fixed"], cv["intercept_fixed"] = fixed
    return {
        "alpha": alphas,
        "cv": cv,
        "coef": coef,
        "intercept": intercept,
        "mean_x": mean_x,
        "experts": experts,
        "n_train": n_train.astype(np.int64),
        "fallback": fallback,
        "solver": solver,
        "excluded": {
            key: dict(zip([*names, "no_snr"], raw[key].tolist()))
            for key in ("bad_pixels", "excluded_bad", "excluded_label", "excluded_no_snr")
        },
        "snr": gather(raw, "snr"),
        "digest": gather(raw, "digest"),
        "route_snr": gather(raw, "route_snr") if "route_snr" in raw else gather(raw, "snr"),
        "seconds": time.perf_counter() - t0,
    }


def _excluded_summary(acc: dict, names: list[str]) -> str:
    keys = ("excluded_bad", "excluded_label", "excluded_no_snr")
    return ", ".join(f"{key}={int(acc[key].sum())}" for key in keys)


def train_gate(acc: dict, settings: dict) -> dict:
    """Train the gate on the features recorded in the fit pass (graph task)."""
    from .binning import assign_bins
    from .gate import fit_gate

    return fit_gate(
        gather(acc, "features"),
        assign_bins(gather(acc, "route_snr"), settings["edges"]),
        gather(acc, "target"),
        len(settings["names"]),
        feature_set=settings["gate"],
        max_rows=int(settings["gate_max_train"]),
    )
