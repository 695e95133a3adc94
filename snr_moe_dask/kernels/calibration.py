"""Calibrated uncertainties: each expert's exact leave-one-out error as a function of
observed SNR, and the uncertainty of a routed prediction (numpy and scipy kernels).

The error model
---------------
For ridge regression with a fixed penalty, leaving spectrum i out of the fit
changes its residual exactly to

    e_i = r_i / (1 - h_ii),    h_ii = x_c,i^T (S_xx + alpha I)^-1 x_c,i + 1/n,

with r_i the in-sample residual, x_c,i the spectrum centred on the expert's
training mean, S_xx the expert's centred Gram matrix and n its training
spectra (the 1/n is the unpenalized intercept's share; with ``standardize``
the features are scaled first). No refit is needed: one Cholesky factor per
expert, and one triangular solve per spectrum. A spectrum outside an expert's
training set (another bin's, for a bin expert) is already held out from it:
its plain residual is its held-out error.

Each expert's squared held-out errors are averaged, over the sampled training
spectra it serves, in quantile bins of their observed SNR (median
flux/error): for hard routing by the keys (oracle, observed) the spectra of
its cells, for the learned gate the spectra the gate routes to it, for the
global model all of them. So an expert keyed by Teff is judged on the stars
of its Teff range only, however many others share their SNR, and a small
expert (the high-SNR bin's) gets all its bins over the SNRs it serves. The
variance at any SNR is interpolated linearly between the bins' median SNRs
and held constant beyond the first and last.

A routed prediction's uncertainty
---------------------------------
Hard routing (oracle, observed, learned, or the global model where it falls
back) takes the serving expert's variance at the spectrum's observed SNR.
Soft routing, ``y = sum_k p_k y_k``, is a mixture. Its variance if the experts
erred independently would be the bound ``B = sum_k p_k (sigma_k^2 + (y_k -
y)^2)``, each expert's own error plus the spread of the experts around the
mixed prediction; they do not (their errors are correlated), so the bound is
calibrated against the mixture's own held-out errors: on a training spectrum
that error is ``sum_k p_k e_k``, the gate's mixture of the experts' held-out
errors, and ``(sum_k p_k e_k)^2 / B`` is averaged in quantile bins of observed
SNR in which every expert's training spectra weigh the same (so a small
expert's SNRs get as many bins as a large one's). The soft uncertainty is
``sqrt(s(SNR) B)`` with ``s`` that factor, interpolated (``soft_*`` in the
table; a model fitted without it uses ``B``).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .binning import NO_BIN
from .solve import _EIGH_RCOND, feature_scale


def factor_system(
    sxx: np.ndarray, n: float, alpha: float, *, standardize: bool = False
) -> dict[str, np.ndarray | float]:
    """Factor an expert's penalized system for its hat-matrix diagonal.

    Parameters
    ----------
    sxx : ndarray of shape (n_pixels, n_pixels)
        Centred X^T X; only its upper triangle is read (as in
        :func:`snr_moe_dask.kernels.solve.solve_ridge`).
    n : float
        The expert's training spectra.
    alpha : float
    standardize : bool
        The expert penalized standardized coefficients.

    Returns
    -------
    dict
        ``whiten`` (n_pixels, n_pixels): a matrix W with ``W W^T = (S + alpha
        I)^-1`` (``kind`` "cholesky": the lower Cholesky factor L, applied as
        L^-1; "eigh": V diag(w)^-1/2 over the kept eigenvectors, a
        pseudo-inverse when the system is singular), ``scale`` (n_pixels,)
        and ``n``.
    """
    scale = feature_scale(np.diag(sxx), n) if standardize else np.ones(sxx.shape[0])
    a = np.triu(np.asarray(sxx, dtype=np.float64))
    a = a + np.triu(a, 1).T
    if standardize:
        a /= np.outer(scale, scale)
    a[np.diag_indices_from(a)] += alpha
    try:
        whiten = scipy.linalg.cholesky(a, lower=True, check_finite=False)
        kind = "cholesky"
    except np.linalg.LinAlgError:
        w, v = scipy.linalg.eigh(a, check_finite=False)
        keep = w > max(w.max(initial=0.0), 0.0) * _EIGH_RCOND
        whiten, kind = v[:, keep] / np.sqrt(w[keep]), "eigh"
    return {"whiten": whiten, "kind": kind, "scale": scale, "n": float(n)}


def hat_diagonal(xc: np.ndarray, factor: dict) -> np.ndarray:
    """``h_ii = x_c,i^T (S + alpha I)^-1 x_c,i + 1/n`` for each row of ``xc``.

    Parameters
    ----------
    xc : ndarray of shape (m, n_pixels)
        Spectra centred on the expert's training mean (bad pixels 0).
    factor : dict
        :func:`factor_system`'s.

    Returns
    -------
    ndarray of shape (m,)
    """
    z = np.asarray(xc, dtype=np.float64) / factor["scale"]
    if factor["kind"] == "cholesky":
        w = scipy.linalg.solve_triangular(factor["whiten"], z.T, lower=True, check_finite=False)
    else:
        w = factor["whiten"].T @ z.T
    return np.einsum("ij,ij->j", w, w) + 1.0 / factor["n"]


def loo_residuals(residual: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals ``r_i / (1 - h_ii)`` from in-sample residuals.

    Parameters
    ----------
    residual : ndarray of shape (m,) or (m, n_targets)
    h : ndarray of shape (m,)

    Returns
    -------
    ndarray, the shape of ``residual``
        Non-finite where ``h_ii = 1`` (a spectrum the fit interpolates, such
        as the only one of its expert): :func:`calibration_table` leaves those out.
    """
    h = np.asarray(h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # h = 1: undefined, left out later
        return residual / (1.0 - h).reshape((-1,) + (1,) * (np.ndim(residual) - 1))


def cell_weights(cell: np.ndarray) -> np.ndarray:
    """Weights under which every cell (``cell``: one per spectrum, -1 for none)
    weighs the same, however many spectra it has; spectra of no cell weigh 0."""
    cell = np.asarray(cell, dtype=np.int64)
    ok = cell >= 0
    counts = np.bincount(cell[ok]) if ok.any() else np.zeros(0)
    out = np.zeros(cell.size)
    out[ok] = 1.0 / counts[cell[ok]]
    return out


def weighted_edges(snr: np.ndarray, weight: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges of ``snr`` under ``weight`` (non-negative, not all zero): the
    points below which fractions 0, 1/n_bins, ..., 1 of the weight lie; the first and
    last are min(snr) and max(snr)."""
    q = np.linspace(0.0, 1.0, n_bins + 1)
    order = np.argsort(snr, kind="stable")
    w = np.asarray(weight, dtype=np.float64)[order]
    position = (np.cumsum(w) - 0.5 * w) / w.sum()
    edges = np.interp(q, position, snr[order])
    edges[0], edges[-1] = snr.min(), snr.max()
    return edges


MIN_PER_BIN = 100  # served spectra per bin at least: their mean square is within ~15 %


def non_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-increasing fit to ``values`` (pool adjacent
    violators); NaN values (and zero weights) are skipped and stay NaN."""
    out = np.array(values, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(out) & (np.asarray(weights) > 0))
    blocks: list[list[float]] = []  # [mean, weight, count] per pooled run
    for i in ok:
        blocks.append([out[i], float(weights[i]), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    fitted = np.concatenate([np.full(c, m) for m, _, c in blocks]) if blocks else np.zeros(0)
    out[ok] = fitted
    return out


def calibration_table(
    snr: np.ndarray,
    sq_error: np.ndarray,
    n_bins: int,
    served: np.ndarray | None = None,
    weight: np.ndarray | None = None,
) -> dict | None:
    """Each expert's mean squared held-out error in quantile bins of observed SNR.

    Parameters
    ----------
    snr : ndarray of shape (m,)
        Observed SNR of each sampled spectrum (finite).
    sq_error : ndarray of shape (m, n_experts, n_targets)
        Squared held-out (leave-one-out) errors; non-finite ones are left out.
    n_bins : int
        Bins per expert.
    served : ndarray of bool, shape (m, n_experts), optional
        The spectra each expert serves: its bins are quantiles of their SNR,
        and its errors are averaged over them; an expert serving fewer than
        ``n_bins *`` :data:`MIN_PER_BIN` sampled spectra gets fewer bins (at
        least one; the rest are empty, between repeated last edges), and its
        bins' mean squares are made non-increasing in SNR
        (:func:`non_increasing`: an expert's error does not grow with the
        signal; the fit pools the bins where sampling noise says otherwise).
        None: every spectrum, for every expert, as measured.
    weight : ndarray of shape (m,), optional
        With ``served`` None: the bins are quantiles under these weights
        (:func:`weighted_edges`) instead of plain ones.

    Returns
    -------
    dict or None
        None without a sample. Otherwise ``snr_edges`` (n_experts, n_bins +
        1), ``snr_centre`` (n_experts, n_bins) each bin's median SNR,
        ``variance`` (n_experts, n_bins, n_targets) and ``count``
        (n_experts, n_bins); an empty bin (between repeated edges, or of an
        expert that serves no sampled spectrum) has NaN centre and variance
        and count 0.
    """
    snr = np.asarray(snr, dtype=np.float64)
    if snr.size == 0:
        return None
    _, n_experts, n_targets = sq_error.shape
    edges = np.full((n_experts, n_bins + 1), np.nan)
    centre = np.full((n_experts, n_bins), np.nan)
    variance = np.full((n_experts, n_bins, n_targets), np.nan)
    count = np.zeros((n_experts, n_bins), dtype=np.int64)
    for e in range(n_experts):
        rows = np.arange(snr.size) if served is None else np.flatnonzero(served[:, e])
        if not rows.size:
            continue
        x = snr[rows]
        used = n_bins if served is None else int(np.clip(rows.size // MIN_PER_BIN, 1, n_bins))
        if weight is not None and served is None and weight.sum() > 0:
            edges[e] = weighted_edges(x, weight, n_bins)
        else:
            edges[e, : used + 1] = np.quantile(x, np.linspace(0.0, 1.0, used + 1))
            edges[e, used + 1 :] = edges[e, used]
        k = np.clip(np.searchsorted(edges[e], x, side="right") - 1, 0, used - 1)
        count[e] = np.bincount(k, minlength=n_bins)
        for b in np.flatnonzero(count[e]):
            centre[e, b] = np.median(x[k == b])
        for t in range(n_targets):
            err = sq_error[rows, e, t]
            finite = np.isfinite(err)
            total = np.bincount(k[finite], weights=err[finite], minlength=n_bins)
            n = np.bincount(k[finite], minlength=n_bins)
            variance[e, :, t] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
            if served is not None:
                variance[e, :, t] = non_increasing(variance[e, :, t], n)
    return {"snr_edges": edges, "snr_centre": centre, "variance": variance, "count": count}


def expert_variance(table: dict, snr: np.ndarray) -> np.ndarray:
    """Every expert's error variance at each observed SNR.

    Parameters
    ----------
    table : dict
        :func:`calibration_table`'s.
    snr : ndarray of shape (m,)

    Returns
    -------
    ndarray of shape (m, n_experts, n_targets)
        Interpolated linearly between the expert's bins' median SNRs (those
        with a finite variance), constant beyond them; NaN where the SNR is NaN.
    """
    snr = np.asarray(snr, dtype=np.float64)
    centre, variance = table["snr_centre"], table["variance"]
    n_experts, _, n_targets = variance.shape
    out = np.full((snr.size, n_experts, n_targets), np.nan)
    for e in range(n_experts):
        for t in range(n_targets):
            ok = np.isfinite(variance[e, :, t]) & np.isfinite(centre[e])
            if ok.any():
                out[:, e, t] = np.interp(snr, centre[e, ok], variance[e, ok, t])
    out[np.isnan(snr)] = np.nan
    return out


def mixture_bound(
    p: np.ndarray, expert_pred: np.ndarray, y: np.ndarray, expert_var: np.ndarray
) -> np.ndarray:
    """``sum_k p_k (sigma_k^2 + (y_k - y)^2)``, the variance of a mixture whose
    experts err independently, shape (m, n_targets).

    Parameters
    ----------
    p : ndarray of shape (m, n_bins)
        The gate's probabilities (NaN read as 0).
    expert_pred, expert_var : ndarray of shape (m, n_bins, n_targets)
        The bins' experts' predictions and error variances.
    y : ndarray of shape (m, n_targets)
        The mixed prediction.
    """
    spread = (expert_pred - y[:, None, :]) ** 2
    return np.einsum("mk,mkt->mt", np.nan_to_num(p), expert_var + spread)


def routed_variance(table: dict, routing: str, snr: np.ndarray) -> np.ndarray:
    """Every expert's error variance at each observed SNR for a hard routing, shape
    (m, n_experts, n_targets): over the spectra ``routing`` sends to it where the
    table has that routing's part (learned, observed) and the routing sent the
    expert a sampled spectrum; the keys' (:func:`expert_variance`) otherwise."""
    variance = expert_variance(table, snr)
    if f"{routing}_variance" not in table:
        return variance
    own = table[f"{routing}_variance"]
    part = {"snr_centre": table[f"{routing}_snr_centre"], "variance": own}
    empty = ~np.isfinite(own).any(axis=1)  # (n_experts, n_targets): sent no sampled spectrum
    return np.where(empty[None], variance, expert_variance(part, snr))


def soft_scale(table: dict, snr: np.ndarray) -> np.ndarray | None:
    """The soft mixture's calibration factor at each observed SNR, shape (m,
    n_targets), interpolated as :func:`expert_variance`; None when the table has
    no soft part."""
    if "soft_scale" not in table:
        return None
    part = {"snr_centre": table["soft_snr_centre"][None], "variance": table["soft_scale"][None]}
    return expert_variance(part, snr)[:, 0]


def routed_sigma(
    routing: str,
    routed: dict,
    pred: np.ndarray,
    variance: np.ndarray,
    probabilities: np.ndarray | None,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """The uncertainty (1 sigma) of one routing's predictions.

    Parameters
    ----------
    routing : {"oracle", "observed", "learned", "soft"}
    routed : dict
        :func:`snr_moe_dask.kernels.mixture.routed_predictions`' result
        (``y``, ``bin``, ``fallback``).
    pred : ndarray of shape (m, n_experts, n_targets)
        Every expert's prediction (expert 0 the global model).
    variance : ndarray of shape (m, n_experts, n_targets)
        :func:`expert_variance`'s.
    probabilities : ndarray of shape (m, n_bins) or None
        The gate's, for soft routing.
    scale : ndarray of shape (m, n_targets), optional
        :func:`soft_scale`'s, for soft routing: the factor on the mixture bound
        (without it, the bound itself).

    Returns
    -------
    ndarray of shape (m, n_targets)
    """
    if routing == "soft":
        k = probabilities.shape[1]
        soft = mixture_bound(probabilities, pred[:, 1 : 1 + k], routed["y"], variance[:, 1 : 1 + k])
        if scale is not None:
            soft = soft * scale
        var = np.where(routed["fallback"][:, None], variance[:, 0], soft)
    else:
        expert = np.where(routed["bin"] == NO_BIN, 0, routed["bin"] + 1)
        var = variance[np.arange(len(pred)), expert]
    return np.sqrt(var)


def sample_chunks(rows: list[int], max_spectra: int) -> list[int]:
    """Whole chunks, evenly spread, holding about ``max_spectra`` spectra (at least one).

    Parameters
    ----------
    rows : list of int
        Spectra per chunk.
    max_spectra : int

    Returns
    -------
    list of int
        Chunk indices, increasing; empty when ``max_spectra`` is 0.
    """
    if max_spectra <= 0 or not rows:
        return []
    k = int(np.clip(round(max_spectra / np.mean(rows)), 1, len(rows)))
    return sorted({int(i) for i in np.linspace(0, len(rows) - 1, k).round()})
