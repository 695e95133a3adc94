"""Regression metrics as mergeable per-bin sums, and a paired bootstrap (numpy kernels).

R^2, MAE and RMSE mean what scikit-learn's ``r2_score``,
``mean_absolute_error`` and the square root of ``mean_squared_error``
compute. Each chunk reduces to per-bin sums that merge exactly (the target's
spread with the Chan et al. update), so the metrics never need the
predictions gathered in one place.

Slots: bins 0..n_bins-1, then one slot for spectra with no bin (NaN SNR).
"""

from __future__ import annotations

import numpy as np

_MOMENT_KEYS = ("n", "mean", "m2")


def metric_sums(
    y: np.ndarray, preds: dict[str, np.ndarray], slots: np.ndarray, n_slots: int
) -> dict[str, np.ndarray]:
    """Reduce one chunk to per-slot sums.

    Parameters
    ----------
    y : ndarray of shape (m,)
        Truth; rows that are excluded have ``slots == -1``.
    preds : dict of str to ndarray of shape (m,)
        Named predictions, e.g. ``{"global": ..., "moe": ...}``.
    slots : ndarray of int, shape (m,)
    n_slots : int

    Returns
    -------
    dict of str to ndarray of shape (n_slots,)
        ``n``, ``mean`` and ``m2`` of y (sum of squared deviations), and
        ``sse_<name>`` and ``sae_<name>``, the sums of squared and absolute
        errors of each prediction.
    """
    keep = slots >= 0
    s, y = slots[keep], y[keep]
    n = np.bincount(s, minlength=n_slots).astype(np.float64)
    total = np.bincount(s, weights=y, minlength=n_slots)
    mean = np.divide(total, n, out=np.zeros(n_slots), where=n > 0)
    out = {
        "n": n,
        "mean": mean,
        "m2": np.bincount(s, weights=(y - mean[s]) ** 2, minlength=n_slots),
    }
    for name, pred in preds.items():
        err = y - pred[keep]
        out[f"sse_{name}"] = np.bincount(s, weights=err**2, minlength=n_slots)
        out[f"sae_{name}"] = np.bincount(s, weights=np.abs(err), minlength=n_slots)
    return out


def model_names(sums: dict) -> list[str]:
    """The names of the predictions in a set of sums, in order."""
    return [k[4:] for k in sums if k.startswith("sse_")]


def merge_metric_sums(a: dict, b: dict) -> dict:
    """Merge two sets of per-slot sums (returns a new dict)."""
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    frac = np.divide(b["n"], n, out=np.zeros_like(n), where=n > 0)
    out = {
        "n": n,
        "mean": a["mean"] + delta * frac,
        "m2": a["m2"] + b["m2"] + delta**2 * a["n"] * frac,
    }
    out.update({k: a[k] + b[k] for k in a if k not in _MOMENT_KEYS})
    return out


def pool_slots(sums: dict, slots: list[int]) -> dict:
    """Merge several slots into one (e.g. every bin, for the overall metrics)."""
    pooled = {k: v[slots[:1]] for k, v in sums.items()}
    for s in slots[1:]:
        pooled = merge_metric_sums(pooled, {k: v[[s]] for k, v in sums.items()})
    return {k: float(v[0]) for k, v in pooled.items()}


def finalize(sums: dict) -> dict:
    """Return R^2, MAE and RMSE of each prediction from one slot's sums
    (``r2_<name>``, ``mae_<name>``, ``rmse_<name>``).

    R^2 follows ``sklearn.metrics.r2_score``: 1 - SSE / SS_tot, with 1.0 for
    a perfect fit of constant truth and 0.0 for an imperfect one; NaN when
    fewer than two spectra.
    """
    n = sums["n"]
    out = {"n": int(n)}
    for model in model_names(sums):
        sse, sae = sums[f"sse_{model}"], sums[f"sae_{model}"]
        out[f"r2_{model}"] = _r2(sse, sums["m2"], n)
        out[f"mae_{model}"] = sae / n if n > 0 else float("nan")
        out[f"rmse_{model}"] = float(np.sqrt(sse / n)) if n > 0 else float("nan")
    return out


def _r2(sse: float, ss_tot: float, n: float) -> float:
    if n < 2:
        return float("nan")
    if ss_tot == 0:
        return 1.0 if sse == 0 else 0.0
    return float(1.0 - sse / ss_tot)


# ---------------------------------------------------------------------- bootstrap


def draw_chunk_counts(n_per_chunk: list[int], n_resamples: int, seed: int) -> np.ndarray:
    """How many of each resample's draws fall in each chunk (first stage).

    A multinomial resample of N spectra is drawn in two stages: first the
    count per chunk, ``Multinomial(N, sizes / N)``, then within each chunk
    (:func:`bootstrap_sums`). Together they are exactly the usual bootstrap.

    Returns
    -------
    ndarray of int, shape (n_resamples, n_chunks)
    """
    sizes = np.asarray(n_per_chunk, dtype=np.float64)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    return rng.multinomial(int(sizes.sum()), sizes / sizes.sum(), size=n_resamples)


def bootstrap_sums(
    counts: np.ndarray,
    y: np.ndarray,
    preds: list[np.ndarray],
    slots: np.ndarray,
    n_slots: int,
    *,
    seed: int,
    chunk_index: int,
) -> np.ndarray:
    """Weighted per-slot sums of one chunk for every resample (second stage).

    Parameters
    ----------
    counts : ndarray of int, shape (n_resamples,)
        Draws falling in this chunk per resample.
    y : ndarray of shape (m,)
    preds : list of ndarray of shape (m,)
        The predictions compared (the first is the reference, e.g. global).

    Returns
    -------
    ndarray of shape (n_resamples, n_slots, 3 + len(preds))
        Sums of w, w*y, w*y^2, and w*(y - pred)^2 for each prediction.
    """
    m = y.size
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk_index)))
    weights = rng.multinomial(counts, np.full(m, 1.0 / m)) if m else np.zeros((counts.size, 0))
    keep = slots >= 0
    values = np.zeros((m, 3 + len(preds)))
    values[keep] = np.column_stack(
        [np.ones(keep.sum()), y[keep], y[keep] ** 2, *((y[keep] - p[keep]) ** 2 for p in preds)]
    )
    out = np.zeros((counts.size, n_slots, values.shape[1]))
    for s in range(n_slots):
        rows = np.flatnonzero(slots == s)
        if rows.size:
            out[:, s, :] = weights[:, rows].astype(np.float64) @ values[rows]
    return out


def bootstrap_delta_r2(sums: np.ndarray) -> np.ndarray:
    """R^2 gain of each prediction over the first, per resample, from summed weighted sums.

    Parameters
    ----------
    sums : ndarray of shape (n_resamples, n_groups, 3 + n_preds)
        From :func:`bootstrap_sums`.

    Returns
    -------
    ndarray of shape (n_resamples, n_groups, n_preds - 1)
        R^2 of prediction j + 1 minus R^2 of prediction 0; NaN where undefined.
    """
    w, wy, wy2 = sums[..., 0], sums[..., 1], sums[..., 2]
    sse = sums[..., 3:]
    with np.errstate(invalid="ignore", divide="ignore"):
        ss_tot = wy2 - wy**2 / w
        delta = (sse[..., :1] - sse[..., 1:]) / ss_tot[..., None]
    delta[((w < 2) | ~(ss_tot > 0))] = np.nan
    return delta


def percentile_ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval over resamples, ignoring NaN; [NaN, NaN] if none."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def hist2d_sums(
    y: np.ndarray, pred: np.ndarray, snr: np.ndarray, keep: np.ndarray, true_edges, pred_edges
) -> tuple[np.ndarray, np.ndarray]:
    """2-D histogram of (truth, prediction): counts and sums of SNR per cell.

    Values outside the edges are clipped into the outer cells.
    """
    yt = np.clip(y[keep], true_edges[0], true_edges[-1])
    yp = np.clip(pred[keep], pred_edges[0], pred_edges[-1])
    counts, _, _ = np.histogram2d(yt, yp, bins=[true_edges, pred_edges])
    snr_sum, _, _ = np.histogram2d(
        yt, yp, bins=[true_edges, pred_edges], weights=np.nan_to_num(snr[keep])
    )
    return counts, snr_sum
