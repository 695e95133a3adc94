"""Distributed evaluation: predictions, metrics, bootstrap CIs, figures and the report.

One Dask graph reads each test chunk once and from it derives the routed
predictions (written to ``predictions.zarr``), the per-bin metric sums, the
bootstrap sums and the figure histograms. Only small reductions reach the
client: never the predictions themselves. The model's coefficients enter the
graph as one key, so each worker receives them once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from . import metrics as M
from .binning import bin_ranges
from .cluster import run_graph
from .config import get_setting
from .evaluate_tasks import evaluate_rows, merge_summaries, write_and_summarize
from .io import (
    SPECTRUM,
    chunk_digests,
    content_hash,
    is_checksummed,
    open_spectra,
    store_fingerprint,
    store_row_chunks,
    write_zarr,
)
from .model import SNRBinnedRidge, load_model
from .options import resolve
from .outputs import atomic_path, check_output, write_json, write_manifest
from .predict import evaluate_block
from .reduce import pairwise_tree
from .rows import StoreRows

_PRED_VARS = {
    "y_true": np.float64,
    "y_global": np.float64,
    "y_moe": np.float64,
    "snr": np.float64,
    "snr_observed": np.float64,
    "bin": np.int64,
    "bin_true": np.int64,
    "used": bool,
}


def pred_vars(params: dict) -> dict:
    """The per-spectrum variables of ``predictions.zarr`` for these parameters."""
    out = dict(_PRED_VARS)
    for r in params["routings"]:
        out.update({f"y_{r}": np.float64, f"bin_{r}": np.int64, f"fallback_{r}": bool})
    if params.get("gate") is not None:
        out.update(gate_p_max=np.float64, y_leakage=np.float64)
    if params.get("fixed") is not None:
        out["y_fixed_alpha"] = np.float64
    return out


def check_gate(model: SNRBinnedRidge, routings: list[str]) -> dict | None:
    """The model's gate; an error when a routing needs it and the model has none."""
    gate = getattr(model, "gate_", None)
    needs_gate = [r for r in routings if r in ("learned", "soft")]
    if needs_gate and gate is None:
        raise ValueError(
            f"routing {needs_gate} needs the model's gate, but model "
            f"{getattr(model, 'path_', '')!r} has none; fit it with oracle routing and the "
            "gate enabled (the default)"
        )
    return gate


def model_params(
    model: SNRBinnedRidge,
    routings: list[str],
    target_index: int = 0,
    *,
    gate_threshold: float | None = None,
    error_scale: float = 1.0,
) -> dict:
    """The small dict every evaluation task needs: coefficients, gate and routings."""
    gate = check_gate(model, routings)
    cv = getattr(model, "cv_", None)
    return {
        "coef": model.coef_,
        "intercept": model.intercept_,
        "mean_x": model.mean_x_,
        "edges": list(model.bin_edges_),
        "bin_to_expert": model.bin_to_expert(),
        "routings": list(routings),
        "target_index": target_index,
        "max_bad_fraction": float(model.max_bad_fraction_),
        "gate": gate,
        "gate_threshold": float(get_setting("evaluate.gate-threshold", gate_threshold)),
        "error_scale": float(error_scale),
        "fixed": ({"coef": cv["coef_fixed"], "intercept": cv["intercept_fixed"]} if cv else None),
    }


def _block_tasks(model, arrays: dict, params: dict):
    """One ``evaluate_block`` task per chunk, sharing one key for the parameters."""
    flux = arrays["flux"].rechunk({1: -1})
    rows = flux.chunks[0]
    target_index = params["target_index"]
    params_key = dask.delayed(params, pure=True)

    def blocks(name, two_d=False):
        arr = arrays.get(name)
        if arr is None:
            return [None] * len(rows)
        arr = arr.rechunk((rows, -1) if two_d else (rows,))
        return list(arr.to_delayed().ravel())

    y = arrays.get("y")
    y_blocks = (
        [None] * len(rows)
        if y is None
        else list(y[:, target_index].rechunk((rows,)).to_delayed().ravel())
    )
    token = tokenize(flux, params_key)
    tasks = [
        dask.delayed(evaluate_block, pure=True)(
            f, e, m, yy, s, params_key, dask_key_name=f"evaluate-{token}-{i}"
        )
        for i, (f, e, m, yy, s) in enumerate(
            zip(
                flux.to_delayed().ravel(),
                blocks("error", True),
                blocks("mask", True),
                y_blocks,
                blocks("snr"),
            )
        )
    ]
    return tasks, rows


def _dataset_arrays(ds: xr.Dataset, targets: list[str]) -> dict:
    """The dask arrays ``_block_tasks`` takes, from a test Dataset (NaN for a
    target it lacks)."""
    missing = da.full(ds.sizes[SPECTRUM], np.nan, chunks=ds["flux"].data.chunks[0])
    return {
        "flux": ds["flux"].data,
        "error": ds["error"].data,
        "mask": ds["mask"].data if "mask" in ds else None,
        "snr": ds["snr"].data if "snr" in ds else None,
        "y": da.stack([ds[t].data if t in ds else missing for t in targets], axis=1),
    }


def _store_block_tasks(path: str, ds: xr.Dataset, params: dict, target: str):
    """One ``evaluate_rows`` task per stored chunk, each reading its own rows."""
    row_chunks = store_row_chunks(ds)
    params_key = dask.delayed(params, pure=True)
    token = tokenize(ds["flux"].data, params_key, "rows")
    tasks = [
        dask.delayed(evaluate_rows, pure=True)(
            StoreRows(path, a, b, (target,), "snr" in ds, "mask" in ds),
            params_key,
            dask_key_name=f"evaluate-{token}-{i}",
        )
        for i, (a, b) in enumerate(row_chunks)
    ]
    return tasks, tuple(b - a for a, b in row_chunks)


def _check_routings(routings: list[str], arrays_or_ds) -> None:
    if "oracle" in routings and arrays_or_ds.get("snr") is None:
        raise ValueError(
            "oracle routing needs the store's true 'snr'; use routing='observed' "
            "to route by the median flux/error"
        )


def prediction_arrays(model, arrays: dict, routing: str, target_index: int = 0) -> dict:
    """Lazy per-spectrum outputs as dask arrays: the variables of
    ``predictions.zarr`` and ``y_moe_all`` (n, n_targets), every target routed."""
    _check_routings([routing], arrays)
    params = model_params(model, [routing], target_index)
    tasks, rows = _block_tasks(model, arrays, params)
    return _arrays_from_tasks(tasks, rows, model.coef_.shape[2], pred_vars(params))


def _arrays_from_tasks(tasks: list, rows, n_targets: int, variables: dict) -> dict:
    """Dask arrays of the per-chunk outputs of ``evaluate_block`` tasks."""
    out = {
        name: da.concatenate(
            [da.from_delayed(t[name], shape=(m,), dtype=dtype) for t, m in zip(tasks, rows)]
        )
        for name, dtype in variables.items()
    }
    out["y_moe_all"] = da.concatenate(
        [
            da.from_delayed(t["y_moe_all"], shape=(m, n_targets), dtype=np.float64)
            for t, m in zip(tasks, rows)
        ]
    )
    return out


def _create_predictions(path: Path, rows, variables: dict, **attrs) -> None:
    """Write the metadata of ``predictions.zarr``: one array per variable, chunked
    like the test store's spectra; the graph's tasks write the values."""
    n = int(sum(rows))
    template = xr.Dataset(
        {
            name: ((SPECTRUM,), da.empty(n, chunks=(tuple(rows),), dtype=dtype))
            for name, dtype in variables.items()
        },
        attrs=attrs,
    )
    write_zarr(template, path, compute=False)
    write_manifest(path, "predictions")


def evaluate_model(
    model: SNRBinnedRidge | str | os.PathLike,
    test: xr.Dataset | str | os.PathLike,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    **kwargs,
) -> dict:
    """Evaluate a model on a test store and write predictions, metrics and the report.

    The output directory (``predictions.zarr``, ``metrics.json``,
    ``report.md`` and ``figures/``) is written to a temporary directory and
    renamed into place, so it is complete or absent. See
    :func:`evaluate_into` for the parameters.

    Returns
    -------
    dict
        The metrics (as written to metrics.json).
    """
    inputs = [model if not isinstance(model, SNRBinnedRidge) else getattr(model, "path_", None)]
    inputs.append(None if isinstance(test, xr.Dataset) else test)
    check_output(out, overwrite, kind="evaluation", inputs=inputs)
    model, ds, test_name, settings = prepare_evaluation(model, test, **kwargs)
    with atomic_path(out, overwrite=overwrite, kind="evaluation", inputs=inputs) as tmp:
        tmp.mkdir(parents=True)
        return evaluate_into(model, ds, tmp, test_name=test_name, **settings)


def parse_routings(routing, default: str) -> list[str]:
    """``"oracle,soft"`` or a list, to a list of known routings without repeats."""
    from .gate import ROUTINGS

    if routing is None:
        routing = default
    names = routing.split(",") if isinstance(routing, str) else list(routing)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in ROUTINGS]
    if unknown or not names:
        raise ValueError(f"routing must be among {list(ROUTINGS)}; got {routing!r}")
    return names


def prepare_evaluation(
    model,
    test,
    *,
    routing=None,
    target=None,
    bootstrap=None,
    seed=None,
    report=True,
    extra=None,
    gate_threshold=None,
    error_scale=None,
    allow_training_store=False,
):
    """Resolve settings, load the model and open and check the test store (no compute).

    ``routing`` is one routing or several (``"oracle,observed,learned,soft"``);
    the first is the primary one, whose predictions and per-bin metrics are
    the main result, and all are compared side by side. A test store that is
    the model's training store is refused unless ``allow_training_store``
    (the report then says "training set" where it would say held-out).
    """
    if not isinstance(model, SNRBinnedRidge):
        model = load_model(model)
    routings = parse_routings(routing, model.routing_)
    target = target or model.targets_[0]
    if target not in model.targets_:
        raise ValueError(f"target {target!r} is not one the model predicts ({model.targets_})")
    error_scale = 1.0 if error_scale is None else error_scale
    if not (np.isfinite(error_scale) and error_scale > 0):
        raise ValueError(f"error_scale must be a positive number; got {error_scale!r}")
    threshold = float(get_setting("evaluate.gate-threshold", gate_threshold))
    if not 0 <= threshold <= 1:
        raise ValueError(f"gate threshold must be in [0, 1]; got {threshold}")
    check_gate(model, routings)
    require = [target] + (["snr"] if "oracle" in routings else [])
    if isinstance(test, xr.Dataset):
        test_name = test.encoding.get("source", "<in-memory dataset>")
        from .io import validate_spectra

        validate_spectra(test, test_name, require=require)
        ds = test
    else:
        test_name = str(test)
        ds = open_spectra(test, require=require)
    check_compatible(model, ds, test_name)
    settings = {
        "store": None if isinstance(test, xr.Dataset) else test_name,
        "routings": routings,
        "gate_threshold": threshold,
        "error_scale": float(error_scale),
        "target": target,
        "bootstrap": resolve("bootstrap", bootstrap),
        "seed": resolve("seed", seed),
        "report": report,
        "extra": extra,
    }
    source = test.encoding.get("source") if isinstance(test, xr.Dataset) else test_name
    training = bool(source) and is_training_store(model, source)
    if training and not allow_training_store:
        raise ValueError(
            f"test store {test_name!r} is the training store of model "
            f"{getattr(model, 'path_', '')!r} ({model.train_store_!r}, same content): its "
            "results would not be held-out; evaluate on another store, or pass "
            "--allow-training-store (allow_training_store=True) to score the training set"
        )
    settings["training_set"] = training
    return model, ds, test_name, settings


def is_training_store(model: SNRBinnedRidge, path: str) -> bool:
    """Whether the store at ``path`` is (a copy of) the model's training store.

    The same path, or the same fingerprint (metadata, chunk sizes and, for a
    checksummed store, each chunk's checksum). A store without checksums whose
    fingerprint matches is read once to compare its content with what the fit
    read.
    """
    train = getattr(model, "train_store_", "")
    if not train:
        return False
    if Path(train).exists() and Path(path).resolve() == Path(train).resolve():
        return True
    if not model.train_fingerprint_ or store_fingerprint(path) != model.train_fingerprint_:
        return False
    reads = getattr(model, "train_reads_", {})
    if is_checksummed(path) or not getattr(model, "train_content_", "") or not reads:
        return True
    ds = open_spectra(path)
    if any(t not in ds for t in reads["targets"]) or (reads["with_snr"] and "snr" not in ds):
        return False
    digests = chunk_digests(path, store_row_chunks(ds), **reads)
    return content_hash(np.concatenate(digests)) == model.train_content_


def evaluate_into(
    model: SNRBinnedRidge,
    ds: xr.Dataset,
    directory: Path,
    *,
    test_name: str,
    routings: list[str],
    target: str,
    bootstrap: int,
    seed: int,
    report: bool = True,
    extra: dict | None = None,
    gate_threshold: float | None = None,
    error_scale: float = 1.0,
    store: str | None = None,
    training_set: bool = False,
) -> dict:
    """Run the evaluation graph and write its outputs into an existing directory.

    Parameters
    ----------
    model : SNRBinnedRidge
    ds : xarray.Dataset
        A validated test store.
    directory : Path
    test_name : str
    routings : list of {"oracle", "observed", "learned", "soft"}
        The first is the primary routing.
    target : str
        Which of the model's targets to score.
    bootstrap : int
        Paired bootstrap resamples for the delta R^2 CIs (0 disables).
    seed : int
        Bootstrap seed.
    report : bool
        Write figures and ``report.md``.
    extra : dict, optional
        Merged into metrics.json (``timings`` are merged with the evaluation's).
    gate_threshold : float, optional
        Soft routing falls back to the global model below this max probability.
    error_scale : float
        Multiply the test errors by this (the gate's robustness study).
    store : str, optional
        The path ``ds`` was opened from: each evaluation task then reads its
        own chunk from the store (as the fit's fold tasks do) instead of
        taking it from separate read tasks.
    training_set : bool
        The test store is the model's training store (allowed by the caller):
        metrics.json and the report say so.
    """
    t0 = time.perf_counter()
    target_index = model.targets_.index(target)
    params = model_params(
        model, routings, target_index, gate_threshold=gate_threshold, error_scale=error_scale
    )
    params["by_true"] = "snr" in ds  # compare routings within true bins when known
    variables = pred_vars(params)
    if store is not None:
        tasks, rows = _store_block_tasks(store, ds, params, target)
    else:
        tasks, rows = _block_tasks(model, _dataset_arrays(ds, model.targets_), params)
    y_lo, y_hi = (
        float(v) for v in dask.compute(da.nanmin(ds[target].data), da.nanmax(ds[target].data))
    )
    pad = 0.15 * (y_hi - y_lo) or 1.0
    n_hist = int(get_setting("evaluate.hist-bins"))
    true_edges = np.linspace(y_lo, y_hi, n_hist + 1)
    pred_edges = np.linspace(y_lo - pad, y_hi + pad, n_hist + 1)
    snr_edges = getattr(model, "train_snr_hist_", (np.linspace(0, 12, 121), None))[0]
    counts = M.draw_chunk_counts(list(rows), bootstrap, seed) if bootstrap else None
    predictions = directory / "predictions.zarr"
    _create_predictions(
        predictions,
        rows,
        variables,
        target=target,
        routing=routings[0],
        routings=routings,
        model=str(getattr(model, "path_", "")),
        test_store=str(test_name),
    )
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).tolist()
    token = tokenize(tasks, bootstrap, seed, str(predictions))
    summaries = [
        dask.delayed(write_and_summarize, pure=True)(
            t,
            str(predictions),
            starts[i],
            list(variables),
            params,
            None if counts is None else counts[:, i],
            i,
            seed,
            true_edges,
            pred_edges,
            snr_edges,
            dask_key_name=f"summary-{token}-{i}",
        )
        for i, t in enumerate(tasks)
    ]
    total = pairwise_tree(summaries, merge_summaries, f"merge-summary-{token}")
    (summary,) = run_graph(total, label="evaluate: predictions and metrics")
    if not summary["sums"]["n"].sum():
        excluded = dict(zip([*model.bin_names_, "no_snr"], summary["excluded"].tolist()))
        raise ValueError(
            f"no spectrum of test store {test_name!r} is usable for the metrics: all "
            f"{int(sum(rows)):,} lack a finite {target!r} or have more than "
            f"{model.max_bad_fraction_:g} bad pixels (excluded per bin: {excluded}); "
            "nothing was written: evaluate a store with labels"
        )
    result = summarize(model, summary, params, target=target, n_resamples=bootstrap, seed=seed)
    result.update(
        test_store=str(test_name),
        model=str(getattr(model, "path_", "")),
        train_store=model.train_store_,
        test_is_training_set=bool(training_set),
    )
    extra = dict(extra or {})
    timings = {**extra.pop("timings", {}), "evaluate": time.perf_counter() - t0}
    result.update(extra)
    result["timings"] = timings
    if report:
        from .report import write_report

        t1 = time.perf_counter()
        figdata = {
            "pred_hist": {
                "true_edges": true_edges,
                "pred_edges": pred_edges,
                **{
                    k: summary[k]
                    for k in ("count_global", "count_moe", "snr_sum_global", "snr_sum_moe")
                },
            },
            "snr_hist": {
                "edges": snr_edges,
                "count_test": summary["snr_hist"],
                "count_train": getattr(model, "train_snr_hist_", (None, None))[1],
            },
            "bin_edges": list(model.bin_edges_),
            "bin_names": list(model.bin_names_),
        }
        write_report(result, figdata, directory)
        timings["report"] = time.perf_counter() - t1
    write_json(directory / "metrics.json", result)
    return result


def check_compatible(model: SNRBinnedRidge, ds: xr.Dataset, test_name: str) -> None:
    """Refuse a test store whose pixels do not match the model's, naming both."""
    model_name = getattr(model, "path_", "the model")
    n = ds.sizes.get("wavelength")
    if n != model.n_features_in_:
        raise ValueError(
            f"model {model_name!r} has {model.n_features_in_} pixels but store "
            f"{test_name!r} has {n}; evaluate on a store with the training grid"
        )
    wave = getattr(model, "wavelength_", None)
    if wave is not None and not np.allclose(ds["wavelength"].values, wave, rtol=0, atol=1e-6):
        diff = np.abs(ds["wavelength"].values - wave)
        i = int(np.argmax(diff))
        raise ValueError(
            f"wavelength grid of store {test_name!r} differs from model {model_name!r}'s "
            f"training grid (pixel {i}: {ds['wavelength'].values[i]!r} vs {wave[i]!r}); "
            "resample the spectra onto the training grid"
        )


def summarize(
    model, summary: dict, params: dict, *, target: str, n_resamples: int, seed: int
) -> dict:
    """Turn the merged chunk summaries into the metrics.json structure."""
    routings = params["routings"]
    names = list(model.bin_names_)
    n_bins = len(names)
    sums = summary["sums"]
    compared = _compared_metrics(summary["route_sums"], n_bins)
    overall = M.finalize(M.pool_slots(sums, list(range(n_bins + 1))))
    overall["delta_r2"] = overall["r2_moe"] - overall["r2_global"]
    overall["n_train"] = int(model.n_train_[0])
    ci: dict[str, list[float]] = {}
    if n_resamples:
        boot = summary["boot"]
        groups = np.concatenate([boot.sum(axis=1, keepdims=True), boot[:, :n_bins]], axis=1)
        gains = M.bootstrap_delta_r2(groups)  # (resamples, groups, routings)
        deltas = gains[..., 0]
        ci["overall"] = M.percentile_ci(deltas[:, 0])
        for k, name in enumerate(names):
            ci[name] = M.percentile_ci(deltas[:, k + 1])
    bins = []
    n_served_by_expert = 0
    for k, (name, (lo, hi)) in enumerate(zip(names, bin_ranges(model.bin_edges_))):
        m = M.finalize({key: float(v[k]) for key, v in sums.items()})
        fallback = name in model.fallback_
        if not fallback:
            n_served_by_expert += m["n"]
        bins.append(
            {
                "name": name,
                "snr_low": lo,
                "snr_high": hi,
                "n_train": int(model.n_train_[k + 1]),
                "n_test": m["n"],
                "r2_expert": m["r2_moe"],
                "r2_global": m["r2_global"],
                "delta_r2": m["r2_moe"] - m["r2_global"],
                "mae_expert": m["mae_moe"],
                "mae_global": m["mae_global"],
                "rmse_expert": m["rmse_moe"],
                "rmse_global": m["rmse_global"],
                "fallback": fallback,
                "fallback_reason": model.fallback_.get(name, ""),
                "delta_r2_ci95": ci.get(name, [float("nan")] * 2),
            }
        )
    n_no_bin = int(sums["n"][n_bins])
    alpha = {e: float(a) for e, a in zip(model.experts_, model.alpha_)}
    return {
        "target": target,
        "routing": routings[0],
        "precision": model.precision_,
        "alpha": alpha,
        "coverage": n_served_by_expert / overall["n"] if overall["n"] else float("nan"),
        "overall": overall,
        "delta_r2_ci95": ci,
        "bins": bins,
        "hypothesis": {"threshold": 0.02},
        "bootstrap": {"n_resamples": n_resamples, "seed": seed},
        "excluded": {
            "train": model.excluded_,
            "test": {
                "excluded": dict(zip([*names, "no_snr"], summary["excluded"].tolist())),
                "no_snr_served_by_global": n_no_bin,
                "bad_pixels": dict(zip([*names, "no_snr"], summary["bad_pixels"].tolist())),
            },
        },
        "solvers": model.solver_,
        "fallback": model.fallback_,
        "routings": routing_comparison(
            model, summary, compared, params, gains if n_resamples else None
        ),
        **({"alpha_cv": alpha_comparison(model, compared, params)} if params.get("fixed") else {}),
    }


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
    gate = params.get("gate")
    if gate is not None:
        leak = overall["r2_leakage"]
        out["gate"] = {
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
    out["error_scale"] = params["error_scale"]
    return out


LEAKAGE_LIMIT = 0.05


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
