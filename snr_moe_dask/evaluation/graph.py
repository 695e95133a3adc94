"""Distributed evaluation: predictions, metrics, bootstrap CIs, figures and the report.

One Dask graph reads each test chunk once and from it derives the routed
predictions (written to ``predictions.zarr``), the per-bin metric sums, the
bootstrap sums and the figure histograms (chunk), merges the summaries
pairwise (combine), and :mod:`snr_moe_dask.evaluation.summary` turns them into
metrics.json (finalize). Only small reductions reach the client: never the
predictions themselves. The model's coefficients enter the graph as one key,
so each worker receives them once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .. import inputs
from ..fit.solve import no_cell_name
from ..graph import pairwise_tree, run_graph
from ..kernels import metrics as M
from ..kernels.variables import is_derived, routed_variable
from ..model import SNRBinnedRidge, load_model
from ..options import resolve
from ..predict.graph import (
    check_compatible,
    check_gate,
    model_params,
    needed_reads,
    parse_routings,
    pred_vars,
)
from ..store.fingerprint import chunk_digests, content_hash, is_checksummed, store_fingerprint
from ..store.outputs import atomic_path, check_output, write_json, write_manifest
from ..store.schema import SPECTRUM, write_zarr
from .summary import summarize
from .tasks import merge_summaries, write_and_summarize


@dataclass
class Evaluation:
    """A checked evaluation, ready to run (:func:`prepare_evaluation`)."""

    source: inputs.Source
    ds: xr.Dataset
    test_name: str
    routings: list[str]
    target: str
    bootstrap: int
    seed: int
    gate_threshold: float
    error_scale: float = 1.0
    report: bool = True
    training_set: bool = False
    extra: dict = field(default_factory=dict)


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
    renamed into place, so it is complete or absent. ``kwargs`` are
    :func:`prepare_evaluation`'s.

    Returns
    -------
    dict
        The metrics (as written to metrics.json).
    """
    inputs_ = [model if not isinstance(model, SNRBinnedRidge) else model.path_]
    inputs_.append(None if isinstance(test, xr.Dataset) else test)
    check_output(out, overwrite, kind="evaluation", inputs=inputs_)
    model, plan = prepare_evaluation(model, test, **kwargs)
    with atomic_path(out, overwrite=overwrite, kind="evaluation", inputs=inputs_) as tmp:
        tmp.mkdir(parents=True)
        return evaluate_into(model, plan, tmp)


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
) -> tuple[SNRBinnedRidge, Evaluation]:
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
    threshold = resolve("gate_threshold", gate_threshold)
    check_gate(model, routings)
    with_snr, variables = needed_reads(model, routings)
    if isinstance(test, xr.Dataset):
        source = inputs.from_dataset(test, [target], with_snr=with_snr, variables=variables)
        ds, test_name, path = test, source.name, test.encoding.get("source")
    else:
        source, ds = inputs.from_store(test, [target], with_snr=with_snr, variables=variables)
        test_name = path = str(test)
    check_compatible(model, ds, test_name)
    training = bool(path) and is_training_store(model, path)
    if training and not allow_training_store:
        raise ValueError(
            f"test store {test_name!r} is the training store of model {model.path_!r} "
            f"({model.train_store_!r}, same content): its results would not be held-out; "
            "evaluate on another store, or pass --allow-training-store "
            "(allow_training_store=True) to score the training set"
        )
    plan = Evaluation(
        source=source,
        ds=ds,
        test_name=test_name,
        routings=routings,
        target=target,
        bootstrap=resolve("bootstrap", bootstrap),
        seed=resolve("seed", seed),
        gate_threshold=threshold,
        error_scale=float(error_scale),
        report=report,
        training_set=training,
        extra=dict(extra or {}),
    )
    return model, plan


def is_snr_keyed(model: SNRBinnedRidge) -> bool:
    """Whether the experts are keyed by one SNR (true or observed)."""
    return [name for name, _ in model.keys_] in (["snr"], ["observed_snr"])


def knows_true_cells(model: SNRBinnedRidge, ds: xr.Dataset) -> bool:
    """Whether the test store holds every key's true value (its ``snr``, its labels)."""
    names = [routed_variable(name, "oracle") for name, _ in model.keys_]
    return all(is_derived(v) or v in ds for v in names)


def is_training_store(model: SNRBinnedRidge, path: str) -> bool:
    """Whether the store at ``path`` is (a copy of) the model's training store.

    The same path, or the same fingerprint (metadata, chunk sizes and, for a
    checksummed store, each chunk's checksum). A store without checksums whose
    fingerprint matches is read once to compare its content with what the fit
    read.
    """
    train = model.train_store_
    if not train:
        return False
    if Path(train).exists() and Path(path).resolve() == Path(train).resolve():
        return True
    if not model.train_fingerprint_ or store_fingerprint(path) != model.train_fingerprint_:
        return False
    reads = model.train_reads_
    if is_checksummed(path) or not model.train_content_ or not reads:
        return True
    try:
        source, _ = inputs.from_store(
            path,
            reads["targets"],
            with_snr=reads["with_snr"],
            variables=reads.get("variables", ()),
        )
    except ValueError:
        return False  # it lacks what the fit read: not the same store
    digests = chunk_digests(source.chunks)
    return content_hash(np.concatenate(digests)) == model.train_content_


def evaluate_into(model: SNRBinnedRidge, plan: Evaluation, directory: Path) -> dict:
    """Run the evaluation graph and write its outputs into an existing directory:
    ``predictions.zarr``, ``metrics.json`` and (with ``plan.report``) the report."""
    t0 = time.perf_counter()
    params = model_params(
        model,
        plan.routings,
        model.targets_.index(plan.target),
        gate_threshold=plan.gate_threshold,
        error_scale=plan.error_scale,
    )
    params["by_true"] = knows_true_cells(model, plan.ds)  # compare within true cells if known
    edges = _histogram_edges(model, plan)
    predictions = directory / "predictions.zarr"
    _create_predictions(
        predictions,
        plan.source.rows,
        pred_vars(params),
        target=plan.target,
        routing=plan.routings[0],
        routings=plan.routings,
        model=model.path_,
        test_store=plan.test_name,
    )
    total = _summary_graph(plan, params, predictions, edges)
    (summary,) = run_graph(total, label="evaluate: predictions and metrics")
    if not summary["sums"]["n"].sum():
        labels = [*model.bin_names_, no_cell_name(model.keys_)]
        excluded = dict(zip(labels, summary["excluded"].tolist()))
        raise ValueError(
            f"no spectrum of test store {plan.test_name!r} is usable for the metrics: all "
            f"{int(sum(plan.source.rows)):,} lack a finite {plan.target!r} or have more "
            f"than {model.max_bad_fraction_:g} bad pixels (excluded per bin: {excluded}); "
            "nothing was written: evaluate a store with labels"
        )
    result = summarize(
        model, summary, params, target=plan.target, n_resamples=plan.bootstrap, seed=plan.seed
    )
    result.update(
        test_store=plan.test_name,
        model=model.path_,
        train_store=model.train_store_,
        test_is_training_set=plan.training_set,
    )
    extra = dict(plan.extra)
    timings = {**extra.pop("timings", {}), "evaluate": time.perf_counter() - t0}
    result.update(extra, timings=timings)
    if plan.report:
        from ..report.markdown import write_report

        t1 = time.perf_counter()
        write_report(result, _figdata(model, summary, edges), directory)
        timings["report"] = time.perf_counter() - t1
    write_json(directory / "metrics.json", result)
    return result


def _histogram_edges(model: SNRBinnedRidge, plan: Evaluation) -> dict:
    """Bins of the report's histograms: the target's range (read from the store),
    the predictions' (padded), and the training SNR histogram's."""
    values = plan.ds[plan.target].data
    y_lo, y_hi = (float(v) for v in dask.compute(da.nanmin(values), da.nanmax(values)))
    pad = 0.15 * (y_hi - y_lo) or 1.0
    n_hist = resolve("hist_bins")
    return {
        "true": np.linspace(y_lo, y_hi, n_hist + 1),
        "pred": np.linspace(y_lo - pad, y_hi + pad, n_hist + 1),
        "snr": model.train_snr_hist_[0],
    }


def _summary_graph(plan: Evaluation, params: dict, predictions: Path, edges: dict):
    """One task per chunk (evaluate, write, summarize), merged pairwise."""
    rows = plan.source.rows
    counts = M.draw_chunk_counts(list(rows), plan.bootstrap, plan.seed) if plan.bootstrap else None
    names = list(pred_vars(params))
    params_key = dask.delayed(params, pure=True)
    token = tokenize(plan.source.token(), params_key, plan.bootstrap, plan.seed, str(predictions))
    summaries = [
        dask.delayed(write_and_summarize, pure=True)(
            chunk,
            str(predictions),
            start,
            names,
            params_key,
            None if counts is None else counts[:, i],
            i,
            plan.seed,
            edges["true"],
            edges["pred"],
            edges["snr"],
            dask_key_name=f"summary-{token}-{i}",
        )
        for i, (chunk, start) in enumerate(zip(plan.source.chunks, plan.source.starts))
    ]
    return pairwise_tree(summaries, merge_summaries, f"merge-summary-{token}")


def _figdata(model: SNRBinnedRidge, summary: dict, edges: dict) -> dict:
    """What the figures need from the merged summary (histograms only)."""
    keys = ("count_global", "count_moe", "snr_sum_global", "snr_sum_moe")
    return {
        "pred_hist": {
            "true_edges": edges["true"],
            "pred_edges": edges["pred"],
            **{k: summary[k] for k in keys},
        },
        "snr_hist": {
            "edges": edges["snr"],
            "count_test": summary["snr_hist"],
            "count_train": model.train_snr_hist_[1],
        },
        # the SNR figure marks the bins of an SNR key only
        "bin_edges": list(model.bin_edges_) if is_snr_keyed(model) else [],
        "bin_names": list(model.bin_names_) if is_snr_keyed(model) else [],
    }


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
