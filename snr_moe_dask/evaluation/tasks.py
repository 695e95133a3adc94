"""The evaluation's graph tasks: evaluate one chunk and write its predictions
(chunk), merge two chunks' summaries (combine).

:mod:`snr_moe_dask.evaluation.graph` builds the graph from these. They need
only numpy and zarr (and the numpy kernels), so a worker running them imports
neither xarray nor scikit-learn.
"""

from __future__ import annotations

import numpy as np

from ..kernels import metrics as M
from ..predict.tasks import predict_block
from ..store.blocks import write_rows


def evaluate_chunk(chunk, params: dict) -> dict[str, np.ndarray]:
    """Read one chunk and evaluate it (see :func:`evaluate_block`)."""
    d = chunk.read()
    y = d["y"][:, 0] if d["y"].shape[1] else None
    stored = {**d.get("variables", {}), "snr": d.get("snr")}
    return evaluate_block(d["flux"], d["error"], d.get("mask"), y, stored, params)


def evaluate_block(flux, error, mask, y, stored, params: dict) -> dict[str, np.ndarray]:
    """:func:`~snr_moe_dask.predict.tasks.predict_block`'s outputs (``stored``: the
    store variables read with the block), and the truth: ``y_true`` (m,) (NaN
    where unknown) and ``used`` (m,) bool (False for spectra the metrics
    exclude: a NaN target or more than ``max_bad_fraction`` bad pixels)."""
    out = predict_block(flux, error, mask, stored, params)
    y_true = np.full(len(flux), np.nan) if y is None else np.asarray(y, np.float64)
    limit = params["max_bad_fraction"] * flux.shape[1]
    out.update(y_true=y_true, used=np.isfinite(y_true) & (out["bad_pixels"] <= limit))
    return out


def _slots(block: dict, n_bins: int, key: str = "bin") -> np.ndarray:
    """Metric slot of each spectrum: its bin (``n_bins`` for none), -1 if excluded."""
    return np.where(block["used"], np.where(block[key] < 0, n_bins, block[key]), -1)


def _compared(block: dict, params: dict) -> dict[str, np.ndarray]:
    """The predictions of the routing comparison, by name."""
    preds = {"global": block["y_global"]}
    preds.update((r, block[f"y_{r}"]) for r in params["routings"])
    for name in ("fixed_alpha", "leakage"):
        if f"y_{name}" in block:
            preds[name] = block[f"y_{name}"]
    return preds


def chunk_summary(
    block: dict,
    params: dict,
    counts: np.ndarray | None,
    chunk: int,
    seed: int,
    true_edges,
    pred_edges,
    snr_edges,
) -> dict:
    """Everything the client needs from one evaluated chunk (graph task)."""
    n_bins = params["n_cells"]
    slots = _slots(block, n_bins)
    y, yg, ym = block["y_true"], block["y_global"], block["y_moe"]
    keep = slots >= 0
    no_bin = np.where(block["bin"] < 0, n_bins, block["bin"])
    out = {
        "sums": M.metric_sums(y, {"global": yg, "moe": ym}, slots, n_bins + 1),
        "excluded": np.bincount(no_bin[~block["used"]], minlength=n_bins + 1),
        "bad_pixels": np.bincount(no_bin, weights=block["bad_pixels"], minlength=n_bins + 1).astype(
            np.int64
        ),
        "snr_hist": np.histogram(
            np.clip(block["snr"][np.isfinite(block["snr"])], snr_edges[0], snr_edges[-1]),
            bins=snr_edges,
        )[0],
    }
    for name, pred in (("global", yg), ("moe", ym)):
        out[f"count_{name}"], out[f"snr_sum_{name}"] = M.hist2d_sums(
            y, pred, block["snr"], keep, true_edges, pred_edges
        )
    # The routing comparison: every routing scored on the same spectra, grouped by
    # their true bin when the store knows it.
    ref_slots = _slots(block, n_bins, "bin_true") if params["by_true"] else slots
    compared = _compared(block, params)
    out["route_sums"] = M.metric_sums(y, compared, ref_slots, n_bins + 1)
    known = block["used"] & (block["bin_true"] >= 0)
    out["confusion"] = {}
    out["fallback"] = {}
    for r in params["routings"]:
        routed = np.where(block[f"bin_{r}"] < 0, n_bins, block[f"bin_{r}"])
        cells = block["bin_true"][known] * (n_bins + 1) + routed[known]
        out["confusion"][r] = np.bincount(cells, minlength=n_bins * (n_bins + 1)).reshape(
            n_bins, n_bins + 1
        )
        out["fallback"][r] = np.array([(block[f"fallback_{r}"] & block["used"]).sum()])
    if params.get("calibration") is not None:
        out["calibration"] = {
            r: z_sums(block[f"y_{r}"], y, block[f"err_{r}"], ref_slots, n_bins + 1)
            for r in params["routings"]
        }
    if counts is not None:
        boot_preds = [yg] + [block[f"y_{r}"] for r in params["routings"]]
        out["boot"] = M.bootstrap_sums(
            counts, y, boot_preds, slots, n_bins + 1, seed=seed, chunk_index=chunk
        )
    return out


def z_sums(pred, y, sigma, slots, n_slots: int) -> np.ndarray:
    """Per-slot sums of the standardized errors ``z = (pred - y) / sigma``: count, sum
    of z, sum of z^2, and how many have |z| <= 1 and <= 2; shape (n_slots, 5)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (pred - y) / sigma
    ok = (slots >= 0) & np.isfinite(z)
    s, z = slots[ok], z[ok]
    columns = [np.ones_like(z), z, z**2, np.abs(z) <= 1, np.abs(z) <= 2]
    return np.stack([np.bincount(s, weights=c, minlength=n_slots) for c in columns], axis=1)


def write_and_summarize(
    chunk, path: str, start: int, names: list[str], params: dict, *summary_args
) -> dict:
    """Evaluate one chunk, write it into ``predictions.zarr`` and return its summary
    (graph task: the predictions never leave the worker)."""
    block = evaluate_chunk(chunk, params)
    write_rows(path, start, {name: block[name] for name in names})
    return chunk_summary(block, params, *summary_args)


def merge_summaries(a: dict, b: dict) -> dict:
    """Merge two chunk summaries (graph task; returns a new dict)."""
    out = {}
    for key, value in a.items():
        if key in ("sums", "route_sums"):
            out[key] = M.merge_metric_sums(value, b[key])
        elif isinstance(value, dict):
            out[key] = {k: v + b[key][k] for k, v in value.items()}
        else:
            out[key] = value + b[key]
    return out
