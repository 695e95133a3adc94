"""The fit's graph tasks: fold a chunk into a chain's statistics (chunk), merge two
chains' statistics (combine), and solve the experts and train the gate from the
merged statistics (finalize).

They run on workers and need only numpy, scipy and zarr, so a worker imports
neither xarray nor scikit-learn for them (:func:`train_gate` needs
scikit-learn's logistic regression, and imports it when it runs).
"""

from __future__ import annotations

import time

import numpy as np

from ..kernels import stats
from ..kernels.binning import assign_bins
from ..kernels.calibration import calibration_table, factor_system, hat_diagonal, loo_residuals
from ..kernels.cv import assign_folds, summarize_cv, summarize_gcv
from ..kernels.mixture import expert_predictions
from ..kernels.quality import quality_features
from ..kernels.selection import select_rows
from ..kernels.snr import check_no_bad_pixels, find_bad_pixels, snr_statistics
from ..kernels.solve import solve_ridge
from .settings import FitSettings

# Per-chunk records an accumulator carries besides its statistics (chunk index -> array).
PER_CHUNK = ("snr", "route_snr", "features", "target", "digest")
_COUNTS = ("bad_pixels", "excluded_bad", "excluded_label", "excluded_no_snr")


def fold(acc, index: int, chunk, settings: FitSettings, last: bool = True, after=None):
    """Read one chunk and fold it into ``acc`` (graph task).

    ``chunk`` is a :class:`~snr_moe_dask.store.rows.StoreRows` or an
    :class:`~snr_moe_dask.store.rows.ArrayChunk`; ``last`` marks the last chunk
    of a fold chain, after which ``acc`` is complete; ``after``, the chain's next
    chunk, is prefetched while this one is folded. Besides the statistics,
    ``acc`` records the chunk's observed SNR, its routing SNR, the gate's
    features and target, and the digest of what was read.
    """
    d = chunk.read()
    if after is not None:
        after.prefetch()
    flux, error, mask, y = d["flux"], d["error"], d.get("mask"), d["y"]
    if settings.strict:
        check_no_bad_pixels(flux, error, mask, chunk.start)
    bad = find_bad_pixels(flux, error, mask)
    snr, snr_mean = snr_statistics(flux, error, bad, mean=settings.gate == "snr")
    oracle = settings.routing == "oracle"
    route = np.asarray(d["snr"], dtype=np.float64) if oracle else snr
    folds = None
    if settings.n_folds > 1:
        folds = assign_folds(chunk.start + np.arange(len(flux)), settings.n_folds, settings.cv_seed)
    y = np.asarray(y, dtype=np.float64).reshape(len(flux), -1)
    acc = stats.fold_chunk(
        acc,
        flux,
        y,
        bad,
        route,
        edges=list(settings.edges),
        max_bad_fraction=settings.max_bad_fraction,
        precision=settings.products,
        folds=folds,
        n_folds=settings.n_folds,
        buffer_rows=stats.buffer_rows(
            settings.buffer_mb,
            settings.n_bins * settings.n_folds,
            flux.shape[1],
            settings.products,
        ),
        flush=last,
    )
    records = {"snr": snr, "route_snr": route if oracle else None, "digest": d["digest"]}
    if settings.gate:
        records["features"] = quality_features(settings.gate, flux, error, bad, snr, snr_mean)
        records["target"] = y[:, 0]
    for key, value in records.items():
        if value is not None:
            acc.setdefault(key, {})[index] = value
    return acc


def merge_partials(a: dict, b: dict) -> dict:
    """Merge accumulator ``b`` into ``a``, with the per-chunk records of both (graph task)."""
    per_chunk = {key: {**a.pop(key, {}), **b.get(key, {})} for key in PER_CHUNK}
    a = stats.merge_stats(a, b)
    a.update((k, v) for k, v in per_chunk.items() if v)
    return a


def gather(acc: dict, key: str) -> np.ndarray:
    """A per-spectrum record, in spectrum order, from a merged accumulator: the
    observed ``"snr"``, the routing ``"route_snr"`` (oracle routing only), the
    gate's ``"features"`` and ``"target"``, or the chunks' ``"digest"``. Empty
    when not recorded."""
    parts = acc.get(key, {})
    return np.concatenate([parts[i] for i in sorted(parts)]) if parts else np.zeros(0)


def solve_experts(acc: dict, settings: FitSettings, cv_results: list | None = None) -> dict:
    """Solve the global model and each expert from the merged statistics (graph task).

    It runs on the worker that holds the merged accumulator, so only the
    coefficients and the per-spectrum records travel to the client. With
    cross-validation (``cv_results`` from
    :func:`snr_moe_dask.fit.graph.cv_graph`), each expert's alpha is the one
    with the lowest mean held-out error, and the fixed-alpha solution is
    solved from the same statistics for comparison.

    Returns
    -------
    dict
        ``coef``, ``intercept``, ``mean_x``, ``experts``, ``n_train``,
        ``alpha``, ``fallback``, ``solver``, ``excluded``, ``cv``, ``snr``,
        ``route_snr``, ``digest`` and ``seconds`` (time spent solving).
    """
    t0 = time.perf_counter()
    alphas, cv, chosen, raw = np.array(settings.alphas, dtype=np.float64), None, None, acc
    if settings.cv:
        chosen, cv = _cv_choice(cv_results, settings)
        alphas = np.where(np.isfinite(chosen), chosen, alphas)
        acc = stats.bin_stats(acc, settings.cv.folds)
    total = stats.total_stats(acc)
    sources = [(total, 0)] + [(acc, k) for k in range(len(settings.names))]
    n_train = np.array([total["n"][0], *acc["n"]])
    if n_train[0] < 1:
        raise ValueError(
            "no training spectrum is usable: every spectrum was excluded "
            f"({_excluded_summary(raw)}); check the store's target and error values, or "
            "raise --max-bad-fraction"
        )
    out = _empty_solution(settings, acc, cv)
    for e, (src, k) in enumerate(sources):
        name = settings.experts[e]
        if e > 0 and n_train[e] < settings.min_spectra:
            out["fallback"][name] = (
                f"{int(n_train[e])} training spectra < min_spectra {settings.min_spectra}; "
                "served by the global model"
            )
            _copy_global(out, cv, e)
            continue
        _solve_expert(out, cv, e, name, src, k, alphas[e], settings)
        if cv and not np.isfinite(chosen[e]):
            reason = out["solver"][name]["reason"]
            out["solver"][name]["reason"] = (reason + "; " if reason else "") + (
                "fewer than 2 spectra for GCV: fixed alpha kept"
                if cv["method"] == "gcv"
                else "fewer than 2 non-empty CV folds: fixed alpha kept"
            )
    names = [*settings.names, "no_snr"]
    out.update(
        alpha=alphas,
        n_train=n_train.astype(np.int64),
        excluded={key: dict(zip(names, raw[key].tolist())) for key in _COUNTS},
        snr=gather(raw, "snr"),
        digest=gather(raw, "digest"),
        route_snr=gather(raw, "route_snr") if "route_snr" in raw else gather(raw, "snr"),
        seconds=time.perf_counter() - t0,
    )
    return out


def _empty_solution(settings: FitSettings, acc: dict, cv: dict | None) -> dict:
    n_experts, n_pixels, n_targets = len(settings.experts), *acc["sxy"].shape[1:]
    out = {
        "coef": np.zeros((n_experts, n_pixels, n_targets)),
        "intercept": np.zeros((n_experts, n_targets)),
        "mean_x": np.zeros((n_experts, n_pixels)),
        "experts": settings.experts,
        "fallback": {},
        "solver": {},
        "estimate": {},
        "cv": cv,
    }
    if cv:
        cv["coef_fixed"], cv["intercept_fixed"] = (
            np.zeros_like(out["coef"]),
            np.zeros_like(out["intercept"]),
        )
    return out


def _copy_global(out: dict, cv: dict | None, e: int) -> None:
    """Serve expert ``e`` by the global model (a fallback expert holds its coefficients)."""
    for key in ("coef", "intercept", "mean_x"):
        out[key][e] = out[key][0]
    if cv:
        cv["coef_fixed"][e], cv["intercept_fixed"][e] = (
            cv["coef_fixed"][0],
            cv["intercept_fixed"][0],
        )


def _solve_expert(out, cv, e, name, src, k, alpha, settings: FitSettings) -> None:
    """Solve expert ``e`` from slot ``k`` of ``src`` (and at the fixed alpha, with CV)."""
    problem = (src["n"][k], src["mean_x"][k], src["mean_y"][k], src["sxx"][k].T, src["sxy"][k])
    out["coef"][e], out["intercept"][e], info = solve_ridge(
        *problem, alpha, standardize=settings.standardize
    )
    if cv:
        cv["coef_fixed"][e], cv["intercept_fixed"][e], _ = solve_ridge(
            *problem, cv["alpha_fixed"], standardize=settings.standardize
        )
    out["mean_x"][e] = src["mean_x"][k]
    out["solver"][name] = info
    if settings.products == "float32":
        out["estimate"][name] = float32_error(src, k, out["coef"][e], alpha, settings)
    if not (np.isfinite(out["coef"][e]).all() and np.isfinite(out["intercept"][e]).all()):
        raise ValueError(
            f"expert {name!r}: the solve gave non-finite coefficients (its statistics hold "
            f"non-finite values: n={src['n'][k]:g}); nothing was saved: check the store's "
            "flux and target values for inf, or refit with --precision float64"
        )


def _cv_choice(cv_results: list, settings: FitSettings) -> tuple[np.ndarray, dict]:
    """The chosen alpha per expert and the CV record (the ``cv_`` attribute)."""
    cv = settings.cv
    if cv.method == "gcv":
        scores = np.array([expert[0][0] for expert in cv_results])
        summary = summarize_gcv(scores, np.array([expert[0][1] for expert in cv_results]))
        n_valid = summary["n_valid"]
    else:
        sse = np.array([[r[0] for r in expert] for expert in cv_results])
        n_valid = np.array([[r[1] for r in expert] for expert in cv_results])
        summary = summarize_cv(sse, n_valid)
    grid = np.array(cv.alphas)
    chosen = np.where(summary["best"] >= 0, grid[np.clip(summary["best"], 0, None)], np.nan)
    record = {
        "alphas": grid,
        "folds": cv.folds,
        "seed": cv.seed,
        "method": cv.method,
        "n_valid": n_valid,
        "alpha_fixed": cv.alpha_fixed,
        **{k: summary[k] for k in ("mse", "mean", "se")},
    }
    return chosen, record


def _excluded_summary(acc: dict) -> str:
    keys = ("excluded_bad", "excluded_label", "excluded_no_snr")
    return ", ".join(f"{key}={int(acc[key].sum())}" for key in keys)


def train_gate(acc: dict, settings: FitSettings) -> dict:
    """Train the gate on the features recorded in the fit pass (graph task)."""
    from ..kernels.gate import fit_gate

    return fit_gate(
        gather(acc, "features"),
        assign_bins(gather(acc, "route_snr"), settings.edges),
        gather(acc, "target"),
        settings.n_bins,
        feature_set=settings.gate,
        max_rows=settings.gate_max_train,
    )


# ---------------------------------------------------------------------- refinement
# With precision="refined" the pass's products are float32. One more read of the
# chunks gives each expert's exact float64 residual of its normal equations,
# g = sum_i d_i (y_i - ybar - d_i^T beta) - alpha beta  (d_i = x_i - xbar),
# and one step beta += (S32 + alpha I)^-1 g removes the float32 error (iterative
# refinement, as LAPACK's dsposv does for a solve).


def chunk_routes(acc: dict, key: str) -> dict:
    """Each chunk's routing SNR, from the merged accumulator (graph task)."""
    return dict(acc.get(key, {}))


def refine_chunk(chunk, index: int, routes: dict, coefs: dict, settings: FitSettings) -> dict:
    """One chunk's float64 residual sums for every expert (graph task).

    Returns ``xr`` (n_experts, n_pixels, n_targets), the sum of x_i r_i over the
    expert's spectra, and ``r`` (n_experts, n_targets), the sum of r_i, with
    r_i = y_i - intercept - x_i^T coef. Spectra are chosen and bad pixels
    imputed as the pass did (:func:`snr_moe_dask.kernels.stats.fold_chunk`),
    the imputed values in float64.
    """
    from ..kernels.selection import impute_bad_pixels, select_rows

    t0 = time.perf_counter()
    n_experts, n_pixels, n_targets = coefs["coef"].shape
    out = {"xr": np.zeros((n_experts, n_pixels, n_targets)), "r": np.zeros((n_experts, n_targets))}
    if not coefs["refine"].any():  # every expert is accurate already: nothing to read
        out["seconds"] = np.array(0.0)
        return out
    d = chunk.read()
    flux, y = d["flux"], np.asarray(d["y"], dtype=np.float64).reshape(len(d["flux"]), -1)
    bad = find_bad_pixels(flux, d["error"], d.get("mask"))
    bins = assign_bins(routes[index], settings.edges)
    use, _ = select_rows(bad, y, bins, settings.n_bins, settings.max_bad_fraction)
    slot = bins * settings.n_folds
    if settings.n_folds > 1:
        slot = slot + assign_folds(
            chunk.start + np.arange(len(flux)), settings.n_folds, settings.cv_seed
        )
    for k in range(settings.n_bins * settings.n_folds):
        rows = np.flatnonzero(use & (slot == k))
        if rows.size == 0:
            continue
        xk = flux[rows]
        if bad[rows].any():
            xk = impute_bad_pixels(xk.astype(np.float64), bad[rows])
        for e in (0, k // settings.n_folds + 1):
            if coefs["refine"][e]:
                _add_residuals(out, e, xk, y[rows], coefs)
    out["seconds"] = np.array(time.perf_counter() - t0)
    return out


def _add_residuals(out: dict, e: int, xk: np.ndarray, yk: np.ndarray, coefs, block=256) -> None:
    """out += expert ``e``'s residual sums over rows ``xk``, widened ``block`` rows at a
    time into a buffer that stays in cache."""
    coef, intercept = coefs["coef"][e], coefs["intercept"][e]
    buf = np.empty((min(block, len(xk)), xk.shape[1]))
    for start in range(0, len(xk), block):
        rows = slice(start, min(start + block, len(xk)))
        part = buf[: rows.stop - rows.start]
        part[...] = xk[rows]
        r = yk[rows] - intercept - part @ coef
        out["xr"][e] += part.T @ r
        out["r"][e] += r.sum(axis=0)


REFINE_THRESHOLD = 1e-6  # a priori estimate of the float32 error above which to refine
REFINE_TOLERANCE = 1e-8  # estimated error left after a round: no further round
PRODUCT_ROWS = 4096  # at most, summed in float32 by one product (stats.MAX_BUFFER_ROWS)


def float32_error(src: dict, k: int, coef, alpha: float, settings: FitSettings) -> float:
    """A conservative estimate of how far float32 products put the expert's training
    predictions off (the largest target's RMS error over its spread).

    The rounding error E of a Gram matrix summed in float32 over k rows has
    entries of about eps_32 sqrt(k / 3) |S_ij| (random-walk partial sums of
    correlated products); the prediction error X A^-1 E beta has an RMS over
    the n spectra of at most ||E beta|| / (2 sqrt(alpha n)), since
    lambda / (lambda + alpha)^2 <= 1 / (4 alpha). Over 16 test problems
    (condition numbers 1e2-1e8, badly centred flux, the mock) it was 10 to
    1000 times the actual error, never below it (tests/fit/test_precision.py).
    """
    n = float(src["n"][k])
    if alpha <= 0 or n < 1:
        return float("inf")
    s = stats.full_gram(src["sxx"][k])
    scale = np.ones(len(s))
    if settings.standardize:
        from ..kernels.solve import feature_scale

        scale = feature_scale(np.diag(s), n)
        s /= np.outer(scale, scale)
    column = np.sqrt(np.einsum("ij,ij->j", s, s))  # ||S e_j||
    beta = coef * scale[:, None]  # (P, T), the coefficients the penalty sees
    rows = min(n, PRODUCT_ROWS)
    eps = float(np.finfo(np.float32).eps) / 2
    bound = eps * np.sqrt(rows / 3) * np.sqrt(np.einsum("pt,p->t", beta**2, column**2))
    spread = np.sqrt(np.clip(np.diag(src["syy"][k]), 0, None) / n)
    return float((bound / (2 * np.sqrt(alpha * n)) / np.where(spread > 0, spread, 1.0)).max())


def refine_inputs(solved: dict) -> dict:
    """What each refinement task needs from the solve: the coefficients, and which
    experts to refine: those the solve fitted (not the fallbacks) whose error
    estimate after the previous round, if any, is above the tolerance (graph task)."""
    done, estimate = solved.get("accuracy", {}), solved.get("estimate", {})
    refine = np.array(
        [
            name not in solved["fallback"]
            and (
                done[name]["remaining"] > REFINE_TOLERANCE
                if name in done
                else estimate.get(name, np.inf) > REFINE_THRESHOLD
            )
            for name in solved["experts"]
        ]
    )
    return {"coef": solved["coef"], "intercept": solved["intercept"], "refine": refine}


def merge_refine(a: dict, b: dict) -> dict:
    """Merge two chunks' residual sums (graph task)."""
    return {key: a[key] + b[key] for key in a}


def refine_solution(acc: dict, solved: dict, sums: dict, settings: FitSettings) -> dict:
    """One step of iterative refinement for every expert the solve fitted (graph task).

    Each step solves with the same float32-product statistics as the solve; the
    right-hand side is the exact float64 residual. ``accuracy`` records, per
    expert, the size of the correction in units of the target's spread (what
    the float32 solution was off by) and the estimated error left after it.
    """
    t0 = time.perf_counter()
    if settings.cv:
        acc = stats.bin_stats(acc, settings.cv.folds)
    sources = [(stats.total_stats(acc), 0)] + [(acc, k) for k in range(len(settings.names))]
    out = {**solved, "coef": solved["coef"].copy(), "intercept": solved["intercept"].copy()}
    accuracy = dict(solved.get("accuracy", {}))
    todo = refine_inputs(solved)["refine"]
    for e, (src, k) in enumerate(sources):
        name = settings.experts[e]
        if not todo[e]:
            continue
        n, mean_x, mean_y, sxx = src["n"][k], src["mean_x"][k], src["mean_y"][k], src["sxx"][k].T
        coef, alpha = out["coef"][e], float(solved["alpha"][e])
        scale = _feature_scale(sxx, n) if settings.standardize else np.ones(len(mean_x))
        rhs = sums["xr"][e] - np.outer(mean_x, sums["r"][e]) - alpha * (scale**2)[:, None] * coef
        step, _, _ = solve_ridge(
            n, mean_x, np.zeros_like(mean_y), sxx, rhs, alpha, standardize=settings.standardize
        )
        out["coef"][e] = coef + step
        out["intercept"][e] = mean_y - mean_x @ out["coef"][e]
        accuracy[name] = _accuracy(step, coef, sxx, n, src["syy"][k], accuracy.get(name))
    for e, name in enumerate(settings.experts):
        if name in solved["fallback"]:
            out["coef"][e], out["intercept"][e] = out["coef"][0], out["intercept"][0]
    out["accuracy"] = accuracy
    before = solved.get("refine_seconds", {"reads": 0.0, "solve": 0.0, "rounds": 0})
    out["refine_seconds"] = {
        "reads": before["reads"] + float(sums["seconds"]),
        "solve": before["solve"] + time.perf_counter() - t0,
        "rounds": before["rounds"] + int(todo.any()),
    }
    return out


def _feature_scale(sxx, n):
    from ..kernels.solve import feature_scale

    return feature_scale(np.diag(sxx), n)


def _accuracy(step, coef, sxx, n, syy, before: dict | None) -> dict:
    """How far the float32 solution was off (RMS change of the training predictions
    over the target's spread: the first round's correction), and the estimate of
    what is left: each step shrinks the error by about the factor this one had
    (the step relative to the one before it; for the first, to the solution)."""
    spread = np.sqrt(np.clip(np.diag(syy), 0, None) / n)
    quad = np.einsum("pt,pt->t", step, stats.full_gram(sxx.T) @ step)
    change = float((np.sqrt(np.clip(quad, 0, None) / n) / np.where(spread > 0, spread, 1.0)).max())
    if before is None:
        shrink = np.linalg.norm(step) / max(np.linalg.norm(coef), np.finfo(float).tiny)
        return {
            "correction": change,
            "remaining": change * float(shrink),
            "rounds": 1,
            "last": change,
        }
    shrink = change / max(before["last"], np.finfo(float).tiny)
    return {
        "correction": before["correction"],
        "remaining": change * min(float(shrink), 1.0),
        "rounds": before["rounds"] + 1,
        "last": change,
    }


# --------------------------------------------------------------------------- calibration


def expert_system(solved: dict) -> dict:
    """What the calibration tasks need of the solution (graph task: a small key)."""
    keys = ("coef", "intercept", "mean_x", "alpha", "n_train", "experts", "fallback")
    return {key: solved[key] for key in keys}


def factor_expert(acc: dict, system: dict, settings: FitSettings, e: int) -> dict | None:
    """Expert ``e``'s factor for its hat-matrix diagonal (graph task); None for an
    expert served by the global model (it shares the global model's errors)."""
    if system["experts"][e] in system["fallback"]:
        return None
    t0 = time.perf_counter()
    src, k = (
        (stats.total_stats(acc), 0) if e == 0 else (stats.bin_stats(acc, settings.n_folds), e - 1)
    )
    factor = factor_system(
        src["sxx"][k].T, src["n"][k], float(system["alpha"][e]), standardize=settings.standardize
    )
    factor["seconds"] = time.perf_counter() - t0
    return factor


def calibration_chunk(chunk, system: dict, factors: list, settings: FitSettings) -> dict:
    """Every expert's held-out error on one training chunk (graph task).

    A spectrum in an expert's training set (the global model's: every used
    spectrum; a bin expert's: its bin's) gets its exact leave-one-out residual
    ``r / (1 - h)`` (:mod:`snr_moe_dask.kernels.calibration`); for the other
    experts its plain residual is already held out. Spectra the fit excluded
    (a NaN target or SNR, too many bad pixels) are left out.

    Returns
    -------
    dict
        ``snr`` (m,) observed SNR, ``error`` (m, n_experts, n_targets),
        ``members`` (m, n_experts) which experts trained on each, and ``seconds``.
    """
    t0 = time.perf_counter()
    d = chunk.read()
    flux, y = d["flux"], np.asarray(d["y"], dtype=np.float64).reshape(len(d["flux"]), -1)
    bad = find_bad_pixels(flux, d["error"], d.get("mask"))
    snr, _ = snr_statistics(flux, d["error"], bad)
    route = np.asarray(d["snr"], dtype=np.float64) if settings.routing == "oracle" else snr
    bins = assign_bins(route, settings.edges)
    use, _ = select_rows(bad, y, bins, settings.n_bins, settings.max_bad_fraction)
    pred = expert_predictions(flux, bad, system["coef"], system["intercept"], system["mean_x"])
    error = y[:, None, :] - pred
    members = np.zeros((len(flux), len(factors)), dtype=bool)
    for e, factor in enumerate(factors):
        if factor is None:  # served by the global model: its errors and training set
            error[:, e], members[:, e] = error[:, 0], members[:, 0]
            continue
        members[:, e] = use & ((bins == e - 1) if e else True)
        rows = np.flatnonzero(members[:, e])
        xc = np.where(bad[rows], 0.0, flux[rows] - system["mean_x"][e])
        error[rows, e] = loo_residuals(error[rows, e], hat_diagonal(xc, factor))
    keep = use & np.isfinite(snr)
    return {
        "snr": snr[keep],
        "error": error[keep],
        "members": members[keep],
        "seconds": time.perf_counter() - t0,
    }


def fit_calibration(parts: list, factors: list, settings: FitSettings, chunks: list) -> dict | None:
    """The error model from the sampled chunks' held-out errors (graph task)."""
    snr = np.concatenate([p["snr"] for p in parts])
    error = np.concatenate([p["error"] for p in parts])
    members = np.concatenate([p["members"] for p in parts])
    table = calibration_table(snr, error**2, settings.calibration_bins, members)
    if table is None:
        return None
    seconds = sum(p["seconds"] for p in parts) + sum(f["seconds"] for f in factors if f)
    table.update(
        method="exact leave-one-out residuals in each expert's observed-SNR quantile bins",
        n_spectra=int(snr.size),
        chunks=[int(c) for c in chunks],
        task_seconds=float(seconds),
    )
    return table
