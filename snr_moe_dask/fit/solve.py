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
from .tasks import COUNTS, cell_to_expert, expert_stats, gather, slot_piece


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
    """Solve the global model and each expert from the merged statistics, one after
    another in one process.

    The fit's graph runs the same steps as tasks, the experts in parallel:
    :func:`solve_plan`, then per expert :func:`expert_piece` and
    :func:`solve_expert`, then :func:`assemble_solution` on the worker that
    holds the merged accumulator, so only the coefficients and the
    per-spectrum records travel to the client. With
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
        ``route_snr``, ``digest``, ``search`` and ``seconds`` (the solve's wall
        time).
    """
    t0 = time.time()
    if pooled is None:
        pooled = expert_stats(acc, settings, cell_to_expert(settings, choice))
    plan = solve_plan(acc, settings, cv_results, choice, pooled)
    parts = [
        solve_expert(expert_piece(pooled, e), e, plan, settings)
        for e in range(len(plan["experts"]))
    ]
    return assemble_solution(acc, plan, parts, choice, t0)


def assemble_solution(
    acc: dict, plan: dict, parts: list, choice: dict | None = None, t0: float | None = None
) -> dict:
    """The solution of every expert from their :func:`solve_expert` parts (graph
    task; see :func:`solve_experts` for what it holds). ``seconds`` is the solve's
    wall time, from the first part's start (or ``t0``)."""
    parts = parts[: len(plan["experts"])]
    experts, cv = plan["experts"], None if plan["cv"] is None else dict(plan["cv"])
    solved = parts[0]  # the global model is always solved
    out = _empty_solution(experts, *solved["coef"].shape, cv)
    for e, part in enumerate(parts):
        if "fallback" in part:
            out["fallback"][experts[e]] = part["fallback"]
            _copy_global(out, cv, e)
            continue
        for key in ("coef", "intercept", "mean_x"):
            out[key][e] = part[key]
        if cv:
            cv["coef_fixed"][e] = part["coef_fixed"]
            cv["intercept_fixed"][e] = part["intercept_fixed"]
        out["solver"][experts[e]] = part["info"]
        if part["estimate"] is not None:
            out["estimate"][experts[e]] = part["estimate"]
    start = min(p["start"] for p in parts) if t0 is None else t0
    out.update(
        alpha=plan["alphas"],
        keys=plan["keys"],
        n_train=plan["n_train"].astype(np.int64),
        excluded=_excluded(acc, plan["names"], choice, plan["keys"]),
        snr=gather(acc, "snr"),
        digest=gather(acc, "digest"),
        route_snr=gather(acc, "route_snr") if "route_snr" in acc else gather(acc, "snr"),
        search=None if choice is None else choice["search"],
        cell_map=plan["cell_map"],
        seconds=time.time() - start,
    )
    return out


def solve_plan(
    acc: dict,
    settings: FitSettings,
    cv_results: list | None,
    choice: dict | None,
    pooled: dict,
) -> dict:
    """What every expert's solve needs besides its own statistics (graph task): the
    experts' ``names`` and ``keys`` (``experts`` with the global model first),
    their ``alphas`` (chosen by CV or the search where they were), the CV
    record ``cv`` and ``chosen`` alphas, the ``cell_map`` and ``n_train``.

    Raises ValueError when no training spectrum is usable.
    """
    names, keys = list(settings.names), list(settings.keys)
    alphas, cv, chosen = np.array(settings.alphas, dtype=np.float64), None, None
    if choice is not None:
        names, keys, cv, chosen = choice["names"], choice["keys"], choice["cv"], choice["chosen"]
        alphas = np.where(np.isfinite(chosen), chosen, choice["alphas"])
    elif settings.cv:
        chosen, cv = _cv_choice(cv_results, settings)
        alphas = np.where(np.isfinite(chosen), chosen, alphas)
    cell_map = cell_to_expert(settings, choice)
    n_train = np.array([pooled["n"].sum(), *pooled["n"]])
    if n_train[0] < 1:
        raise ValueError(
            "no training spectrum is usable: every spectrum was excluded "
            f"({_excluded_summary(acc)}); check the store's target and error values, or "
            "raise --max-bad-fraction"
        )
    return {
        "experts": [GLOBAL, *names],
        "names": list(names),
        "keys": [(name, tuple(edges)) for name, edges in keys],
        "alphas": alphas,
        "chosen": chosen,
        "cv": cv,
        "cell_map": cell_map,
        "n_train": n_train,
    }


def expert_piece(pooled: dict, e: int) -> dict | None:
    """Expert ``e``'s statistics as a one-slot accumulator (graph task): for the
    global model (``e`` 0) every slot of ``pooled`` merged, for expert ``e`` slot
    ``e - 1`` (views); None beyond the experts (a search may choose fewer cells).

    One small task per expert, so each expert's solve moves only its own
    statistics to the worker that runs it.
    """
    if e == 0:
        return stats.total_stats(pooled)
    if e > pooled["n"].size:
        return None
    return slot_piece(pooled, e - 1, e, first=False)


def solve_expert(piece: dict | None, e: int, plan: dict, settings: FitSettings) -> dict | None:
    """Solve expert ``e`` from its :func:`expert_piece` (graph task).

    Returns
    -------
    dict or None
        ``coef``, ``intercept``, ``mean_x``, ``info`` (the solver's record),
        ``estimate`` (the float32 error estimate, None without float32
        products), with CV ``coef_fixed`` and ``intercept_fixed``, and
        ``start`` (wall clock); or ``fallback`` (why the global model serves it)
        and ``start``. None beyond the experts.
    """
    if piece is None or e >= len(plan["experts"]):
        return None
    start, name, n = time.time(), plan["experts"][e], plan["n_train"][e]
    if e > 0 and n < settings.min_spectra:
        reason = (
            f"{int(n)} training spectra < min_spectra {settings.min_spectra}; "
            "served by the global model"
        )
        return {"fallback": reason, "start": start}
    alpha, cv = plan["alphas"][e], plan["cv"]
    gram = stats.slot_gram(piece, 0)
    problem = (piece["n"][0], piece["mean_x"][0], piece["mean_y"][0], gram, piece["sxy"][0])
    coef, intercept, info = solve_ridge(*problem, alpha, standardize=settings.standardize)
    out = {"coef": coef, "intercept": intercept, "mean_x": piece["mean_x"][0], "start": start}
    if cv:
        out["coef_fixed"], out["intercept_fixed"], _ = solve_ridge(
            *problem, cv["alpha_fixed"], standardize=settings.standardize
        )
        if not np.isfinite(plan["chosen"][e]):
            _note_fixed_alpha(info, cv["method"])
    out["info"] = info
    out["estimate"] = None
    if settings.products == "float32":
        out["estimate"] = float32_error(piece, 0, coef, alpha, settings)
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError(
            f"expert {name!r}: the solve gave non-finite coefficients (its statistics hold "
            f"non-finite values: n={piece['n'][0]:g}); nothing was saved: check the store's "
            "flux and target values for inf, or refit with --precision float64"
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


def _empty_solution(experts: list[str], n_pixels: int, n_targets: int, cv: dict | None) -> dict:
    n_experts = len(experts)
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
