"""The fit's finalize tasks: choose the cells (the edge search, with ``edges="auto"``) and
solve the global model and every expert from the merged statistics.

They run on the worker that holds the merged accumulator and need only numpy
and scipy, so only coefficients and small records travel to the client.
"""

from __future__ import annotations

import time

import numpy as np

from ..kernels import cells, stats
from ..kernels.cv import summarize_cv, summarize_gcv
from ..kernels.edges import search_edges
from ..kernels.solve import solve_ridge
from .refine import float32_error
from .settings import GLOBAL, FitSettings
from .tasks import COUNTS, cell_to_expert, expert_stats, gather


def choose_cells(acc: dict, settings: FitSettings) -> dict:
    """The coarse cells of an ``edges="auto"`` fit (graph task): the partition of the
    fine bins with the lowest K-fold CV error of the oracle-routed mixture
    (:func:`snr_moe_dask.kernels.edges.search_edges`).

    Returns
    -------
    dict
        ``keys`` (the coarse keys, ``(name, edges)``), ``names`` (their cells),
        ``mapping`` (fine cell -> coarse cell, shape (n_fine_cells,)),
        ``alphas`` (per expert: global, then the cells), ``chosen`` (the CV
        alpha per expert, NaN where the fixed alpha is kept), ``cv`` (the CV
        record with an alpha grid, else None) and ``search`` (the record the
        model keeps as ``edge_search_``).
    """
    s = settings.search
    fine = settings.grid
    shape = tuple(k.n_cells for k in fine)
    result = search_edges(
        acc,
        shape,
        s.bins,
        n_folds=s.folds,
        alpha=s.alpha,
        alphas=s.alphas,
        min_spectra=settings.min_spectra,
        standardize=settings.standardize,
        method=s.method,
    )
    coarse = cells.coarse_keys(fine, result["cuts"])
    alphas = np.array([result["global_alpha"], *result["coarse"]["alpha"]])
    chosen, cv = np.full(alphas.size, np.nan), None
    if s.alphas is not None:
        chosen, cv = _search_cv(result, s)
    return {
        "keys": [(k.name, k.edges) for k in coarse],
        "names": cells.cell_names(coarse),
        "mapping": cells.fine_to_coarse(shape, result["cuts"]),
        "alphas": alphas,
        "chosen": chosen,
        "cv": cv,
        "search": search_record(result, fine, s),
    }


def _search_cv(result: dict, s) -> tuple[np.ndarray, dict]:
    """The CV record of the experts the search chose, from its cached curves."""
    curves = [result["curves"]["global"], *result["curves"]["coarse"]]
    n_grid, n_targets = len(s.alphas), curves[0][0].shape[2]
    sse = np.full((len(curves), s.folds, n_grid, n_targets), np.nan)
    n_valid = np.zeros((len(curves), s.folds))
    for e, found in enumerate(curves):
        if found is not None:  # None: a cell served by the global model
            sse[e], n_valid[e] = found
    return cv_record(
        summarize_cv(sse, n_valid), n_valid, s.alphas, s.folds, s.seed, "kfold", s.alpha
    )


def search_record(result: dict, fine: list[cells.Key], s) -> dict:
    """What the model keeps of the edge search (``edge_search_``): the fine keys, the
    chosen cuts and edges, the CV error of the chosen partition and of the best one
    for every number of bins per key, and the cost of every run of fine bins."""
    keys = [
        {
            "name": k.name,
            "fine_edges": list(k.edges),
            "cuts": list(c),
            "edges": cells.coarse_edges(k.edges, c),
        }
        for k, c in zip(fine, result["cuts"])
    ]
    by_bins = {
        ",".join(map(str, b)): [cells.coarse_edges(k.edges, c) for k, c in zip(fine, cuts)]
        for b, cuts in result["cuts_by_bins"].items()
    }
    return {
        "keys": keys,
        "n_bins": list(result["n_bins"]),
        "error": float(result["error"]),
        "errors_by_bins": np.asarray(result["errors_by_bins"], dtype=np.float64),
        "edges_by_bins": by_bins,
        "coarse": {k: np.asarray(v) for k, v in result["coarse"].items()},
        **{k: np.asarray(result[k]) for k in result if k.startswith("table_")},
        "global_alpha": float(result["global_alpha"]),
        "n_spectra": float(result["n_spectra"]),
        "solves": int(result["solves"]),
        "method": result["method"],
        "folds": int(s.folds),
        "seed": int(s.seed),
        "alpha": float(s.alpha),
        "alphas": None if s.alphas is None else [float(a) for a in s.alphas],
    }


def solve_experts(
    acc: dict,
    settings: FitSettings,
    cv_results: list | None = None,
    choice: dict | None = None,
    pooled: dict | None = None,
) -> dict:
    """Solve the global model and each expert from the merged statistics (graph task).

    It runs on the worker that holds the merged accumulator, so only the
    coefficients and the per-spectrum records travel to the client. With
    cross-validation (``cv_results`` from
    :func:`snr_moe_dask.fit.graph.cv_graph`), each expert's alpha is the one
    with the lowest mean held-out error, and the fixed-alpha solution is
    solved from the same statistics for comparison. With a search
    (``choice`` from :func:`choose_cells`), the experts are its coarse cells,
    each pooling its fine cells' statistics, with the alphas it chose.
    ``pooled``: the statistics already pooled one slot per expert
    (:func:`snr_moe_dask.fit.tasks.pool_experts`), so the solve does not pool
    them again.

    Returns
    -------
    dict
        ``coef``, ``intercept``, ``mean_x``, ``experts``, ``keys``, ``n_train``,
        ``alpha``, ``fallback``, ``solver``, ``excluded``, ``cv``, ``snr``,
        ``route_snr``, ``digest``, ``search`` and ``seconds`` (time spent solving).
    """
    t0 = time.perf_counter()
    raw, names, keys = acc, list(settings.names), list(settings.keys)
    alphas, cv, chosen = np.array(settings.alphas, dtype=np.float64), None, None
    if choice is not None:
        names, keys, cv, chosen = choice["names"], choice["keys"], choice["cv"], choice["chosen"]
        alphas = np.where(np.isfinite(chosen), chosen, choice["alphas"])
    elif settings.cv:
        chosen, cv = _cv_choice(cv_results, settings)
        alphas = np.where(np.isfinite(chosen), chosen, alphas)
    cell_map = cell_to_expert(settings, choice)
    acc = pooled if pooled is not None else expert_stats(acc, settings, cell_map)
    total = stats.total_stats(acc)
    n_train = np.array([total["n"][0], *acc["n"]])
    if n_train[0] < 1:
        raise ValueError(
            "no training spectrum is usable: every spectrum was excluded "
            f"({_excluded_summary(raw)}); check the store's target and error values, or "
            "raise --max-bad-fraction"
        )
    experts = [GLOBAL, *names]
    out = _empty_solution(experts, acc, cv)
    sources = [(total, 0)] + [(acc, k) for k in range(len(names))]
    for e, (src, k) in enumerate(sources):
        if e > 0 and n_train[e] < settings.min_spectra:
            out["fallback"][experts[e]] = (
                f"{int(n_train[e])} training spectra < min_spectra {settings.min_spectra}; "
                "served by the global model"
            )
            _copy_global(out, cv, e)
            continue
        _solve_expert(out, cv, e, experts[e], src, k, alphas[e], settings)
        if cv and not np.isfinite(chosen[e]):
            _note_fixed_alpha(out["solver"][experts[e]], cv["method"])
    out.update(
        alpha=alphas,
        keys=[(name, tuple(edges)) for name, edges in keys],
        n_train=n_train.astype(np.int64),
        excluded=_excluded(raw, names, choice, keys),
        snr=gather(raw, "snr"),
        digest=gather(raw, "digest"),
        route_snr=gather(raw, "route_snr") if "route_snr" in raw else gather(raw, "snr"),
        search=None if choice is None else choice["search"],
        cell_map=cell_map,
        seconds=time.perf_counter() - t0,
    )
    return out


def no_cell_name(keys) -> str:
    """The count label of spectra with no cell: ``no_snr`` for an SNR key."""
    return "no_snr" if [k[0] for k in keys] in (["snr"], ["observed_snr"]) else "no_cell"


def _excluded(raw: dict, names: list[str], choice: dict | None, keys) -> dict:
    """Counts per expert cell (and one for spectra with no cell) of each kind."""
    labels = [*names, no_cell_name(keys)]
    out = {}
    for key in COUNTS:
        counts = np.asarray(raw[key])
        if choice is not None:  # fine cells into their coarse cells
            coarse = np.bincount(choice["mapping"], counts[:-1], minlength=len(names))
            counts = np.append(coarse, counts[-1]).astype(np.int64)
        out[key] = dict(zip(labels, counts.tolist()))
    return out


def _note_fixed_alpha(info: dict, method: str) -> None:
    reason = info["reason"]
    info["reason"] = (reason + "; " if reason else "") + (
        "fewer than 2 spectra for GCV: fixed alpha kept"
        if method == "gcv"
        else "fewer than 2 non-empty CV folds: fixed alpha kept"
    )


def _empty_solution(experts: list[str], acc: dict, cv: dict | None) -> dict:
    n_experts, n_pixels, n_targets = len(experts), *acc["sxy"].shape[1:]
    out = {
        "coef": np.zeros((n_experts, n_pixels, n_targets)),
        "intercept": np.zeros((n_experts, n_targets)),
        "mean_x": np.zeros((n_experts, n_pixels)),
        "experts": experts,
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
    gram = stats.slot_gram(src, k)
    problem = (src["n"][k], src["mean_x"][k], src["mean_y"][k], gram, src["sxy"][k])
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
    return cv_record(summary, n_valid, cv.alphas, cv.folds, cv.seed, cv.method, cv.alpha_fixed)


def cv_record(summary: dict, n_valid, alphas, folds, seed, method, alpha_fixed):
    """The chosen alpha per expert (NaN where none was valid) and the CV record
    (the ``cv_`` attribute) from a CV summary over the grid ``alphas``."""
    grid = np.array(alphas)
    chosen = np.where(summary["best"] >= 0, grid[np.clip(summary["best"], 0, None)], np.nan)
    record = {
        "alphas": grid,
        "folds": folds,
        "seed": seed,
        "method": method,
        "n_valid": n_valid,
        "alpha_fixed": alpha_fixed,
        **{k: summary[k] for k in ("mse", "mean", "se")},
    }
    return chosen, record


def _excluded_summary(acc: dict) -> str:
    keys = ("excluded_bad", "excluded_label", "excluded_no_snr")
    return ", ".join(f"{key}={int(acc[key].sum())}" for key in keys)
