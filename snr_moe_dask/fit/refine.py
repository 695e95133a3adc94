"""Iterative refinement of a float32-product fit (``precision="refined"``).

With precision="refined" the pass's products are float32. One more read of the
chunks gives each expert's exact float64 residual of its normal equations,
g = sum_i d_i (y_i - ybar - d_i^T beta) - alpha beta  (d_i = x_i - xbar),
and one step beta += (S32 + alpha I)^-1 g removes the float32 error (iterative
refinement, as LAPACK's dsposv does for a solve). The tasks need only numpy
and scipy on workers.
"""

from __future__ import annotations

import time

import numpy as np

from ..kernels import stats
from ..kernels.cv import assign_folds
from ..kernels.selection import impute_bad_pixels, select_rows
from ..kernels.snr import find_bad_pixels
from ..kernels.solve import feature_scale, solve_ridge
from .settings import FitSettings


def refine_chunk(chunk, index: int, records: dict, coefs: dict, settings: FitSettings) -> dict:
    """One chunk's float64 residual sums for every expert (graph task).

    Returns ``xr`` (n_experts, n_pixels, n_targets), the sum of x_i r_i over the
    expert's spectra, and ``r`` (n_experts, n_targets), the sum of r_i, with
    r_i = y_i - intercept - x_i^T coef. Spectra are chosen, by the cells the
    pass recorded, and bad pixels imputed (per cell and fold, in float64) as
    the pass did (:func:`snr_moe_dask.kernels.stats.fold_chunk`). A chunk the
    pass found clean is read without its errors and mask: half the bytes.
    """
    t0 = time.perf_counter()
    n_experts, n_pixels, n_targets = coefs["coef"].shape
    out = {"xr": np.zeros((n_experts, n_pixels, n_targets)), "r": np.zeros((n_experts, n_targets))}
    if not coefs["refine"].any():  # every expert is accurate already: nothing to read
        out["seconds"] = np.array(0.0)
        return out
    clean = records[index]["clean"]
    d = chunk.read(flux_only=clean)
    flux, y = d["flux"], np.asarray(d["y"], dtype=np.float64).reshape(len(d["flux"]), -1)
    if clean and "error" not in d:
        bad = np.zeros(flux.shape, dtype=bool)
    else:
        bad = find_bad_pixels(flux, d["error"], d.get("mask"))
    cell = np.asarray(records[index]["cell"], dtype=np.int64)
    use, _ = select_rows(bad, y, cell, settings.n_bins, settings.max_bad_fraction)
    slot = cell * settings.n_folds
    if settings.n_folds > 1:
        slot = slot + assign_folds(
            chunk.start + np.arange(len(flux)), settings.n_folds, settings.cv_seed
        )
    for k in np.unique(slot[use]):
        rows = np.flatnonzero(use & (slot == k))
        xk = flux[rows]
        if bad[rows].any():
            xk = impute_bad_pixels(xk.astype(np.float64), bad[rows])
        for e in (0, int(coefs["cell_map"][k // settings.n_folds]) + 1):
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
    s = stats.slot_gram(src, k)  # the upper triangle
    scale = feature_scale(np.diag(s), n) if settings.standardize else None
    column = stats.column_norms(s, scale)  # ||S e_j|| of the (scaled) Gram matrix
    beta = coef if scale is None else coef * scale[:, None]  # (P, T): what the penalty sees
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
    return {
        "coef": solved["coef"],
        "intercept": solved["intercept"],
        "refine": refine,
        "cell_map": solved["cell_map"],
        "alpha": solved["alpha"],
        "experts": solved["experts"],
        "accuracy": done,
    }


def merge_refine(a: dict, b: dict) -> dict:
    """Merge two chunks' residual sums (graph task)."""
    return {key: a[key] + b[key] for key in a}


def refine_expert(piece: dict | None, coefs: dict, sums: dict, settings: FitSettings, e: int):
    """One step of iterative refinement of expert ``e`` (graph task).

    The step solves with the same float32-product statistics as the solve
    (``piece``, the expert's one slot: :func:`snr_moe_dask.fit.solve.expert_piece`);
    the right-hand side is the exact float64 residual. Returns None for an
    expert this round does not refine (a fallback, one accurate already, or
    none at all beyond the experts); otherwise ``coef``, ``intercept``,
    ``accuracy`` (see :func:`refine_solution`) and ``start`` (wall clock).
    """
    if piece is None or e >= len(coefs["experts"]) or not coefs["refine"][e]:
        return None
    start, name = time.time(), coefs["experts"][e]
    n, mean_x, mean_y = piece["n"][0], piece["mean_x"][0], piece["mean_y"][0]
    sxx = stats.slot_gram(piece, 0)
    coef, alpha = coefs["coef"][e], float(coefs["alpha"][e])
    scale = feature_scale(np.diag(sxx), n) if settings.standardize else np.ones(len(mean_x))
    rhs = sums["xr"][e] - np.outer(mean_x, sums["r"][e]) - alpha * (scale**2)[:, None] * coef
    step, _, _ = solve_ridge(
        n, mean_x, np.zeros_like(mean_y), sxx, rhs, alpha, standardize=settings.standardize
    )
    refined = coef + step
    quad = np.einsum("pt,pt->t", step, stats.gram_times(piece, 0, step))
    return {
        "coef": refined,
        "intercept": mean_y - mean_x @ refined,
        "accuracy": _accuracy(step, coef, quad, n, piece["syy"][0], coefs["accuracy"].get(name)),
        "start": start,
    }


def refine_solution(solved: dict, parts: list, sums: dict) -> dict:
    """The solution after one refinement round: each refined expert's
    :func:`refine_expert` part in place of its coefficients (graph task).

    ``accuracy`` records, per expert, the size of the correction in units of
    the target's spread (what the float32 solution was off by) and the
    estimated error left after it.
    """
    t0 = time.time()
    out = {**solved, "coef": solved["coef"].copy(), "intercept": solved["intercept"].copy()}
    accuracy = dict(solved.get("accuracy", {}))
    done = [(e, part) for e, part in enumerate(parts[: len(solved["experts"])]) if part]
    for e, part in done:
        out["coef"][e], out["intercept"][e] = part["coef"], part["intercept"]
        accuracy[solved["experts"][e]] = part["accuracy"]
    for e, name in enumerate(solved["experts"]):
        if name in solved["fallback"]:
            out["coef"][e], out["intercept"][e] = out["coef"][0], out["intercept"][0]
    out["accuracy"] = accuracy
    before = solved.get("refine_seconds", {"reads": 0.0, "solve": 0.0, "rounds": 0})
    start = min([t0, *(part["start"] for _, part in done)])
    out["refine_seconds"] = {
        "reads": before["reads"] + float(sums["seconds"]),
        "solve": before["solve"] + time.time() - start,
        "rounds": before["rounds"] + int(bool(done)),
    }
    return out


def _accuracy(step, coef, quad, n, syy, before: dict | None) -> dict:
    """How far the float32 solution was off (RMS change of the training predictions
    over the target's spread: the first round's correction), and the estimate of
    what is left: each step shrinks the error by about the factor this one had
    (the step relative to the one before it; for the first, to the solution)."""
    spread = np.sqrt(np.clip(np.diag(syy), 0, None) / n)
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
