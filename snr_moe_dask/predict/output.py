"""``snr-moe predict``: a model on spectra without labels, to ``predictions.zarr`` and a
one-row-per-spectrum ``catalog.parquet``.

One task per chunk (:func:`snr_moe_dask.predict.tasks.predict_and_write`) reads
its spectra, predicts every target with its calibrated uncertainty, routes by
the gate (soft or learned) or the observed SNR, flags what the user should
know (:data:`~snr_moe_dask.predict.tasks.FLAGS`) and writes its region of
``predictions.zarr``; the tasks' counts merge pairwise. The client then writes
the catalog from ``predictions.zarr``, one Parquet row group per chunk, so
it never holds more than one chunk's rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from .. import inputs
from ..graph import pairwise_tree, run_graph
from ..store.outputs import atomic_path, check_output, write_manifest
from ..store.schema import SPECTRUM, write_zarr
from .graph import check_compatible, check_gate, model_params, needed_reads
from .tasks import FLAGS, predict_and_write

CATALOG = "catalog.parquet"


def choose_routing(model, routing: str | None) -> str:
    """``routing``, or soft with a gate and observed without; oracle is refused."""
    if routing == "oracle":
        raise ValueError(
            "--routing oracle needs each spectrum's true SNR, which observed spectra do not "
            "have (an ingested PFS store's snr is NaN); use soft or learned (the gate) or "
            "observed (the median flux/error)"
        )
    routing = routing or ("soft" if model.gate_ is not None else "observed")
    if routing not in ("soft", "learned", "observed"):
        raise ValueError(f"--routing must be soft, learned or observed; got {routing!r}")
    check_gate(model, [routing])
    return routing


def predict_spectra(
    model,
    spectra,
    out: str | os.PathLike,
    *,
    routing: str | None = None,
    target: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Predict a spectra store (no labels needed) and write ``out/predictions.zarr`` and
    ``out/catalog.parquet``.

    Parameters
    ----------
    model : SNRBinnedRidge or path
    spectra : path or xarray.Dataset
        Spectra on the model's wavelength grid (``snr-moe ingest
        --wavelength-grid MODEL`` puts them there).
    out : path
        The output folder (kind "prediction").
    routing : {"soft", "learned", "observed"}, optional
        Default soft when the model has a gate, observed otherwise.
    target : str, optional
        One of the model's targets; default all of them.
    overwrite : bool

    Returns
    -------
    dict
        ``out``, ``n``, ``routing``, ``targets``, ``flags`` (bit name to
        count), ``experts`` (name to count) and ``seconds``.
    """
    from ..model import SNRBinnedRidge, load_model

    t0 = time.perf_counter()
    model_path = model.path_ if isinstance(model, SNRBinnedRidge) else str(model)
    spectra_path = None if isinstance(spectra, xr.Dataset) else str(spectra)
    check_output(out, overwrite, kind="prediction", inputs=[model_path, spectra_path])  # early
    model = model if isinstance(model, SNRBinnedRidge) else load_model(model)
    routing = choose_routing(model, routing)
    if target is not None and target not in model.targets_:
        raise ValueError(f"--target {target!r} is not one the model predicts ({model.targets_})")
    names = [target] if target else list(model.targets_)
    with_snr, variables = needed_reads(model, [routing])  # the gate's store variables
    if isinstance(spectra, xr.Dataset):
        source = inputs.from_dataset(spectra, with_snr=with_snr, variables=variables)
        ds = spectra
    else:
        source, ds = inputs.from_store(spectra, with_snr=with_snr, variables=variables)
    check_compatible(model, ds, source.name)
    params = model_params(model, [routing])
    params["outputs"] = [(model.targets_.index(n), n) for n in names]
    params["fallback_experts"] = [model.experts_.index(e) for e in model.fallback_]
    with atomic_path(
        out, overwrite=overwrite, kind="prediction", inputs=[model_path, spectra_path]
    ) as tmp:
        tmp.mkdir(parents=True)
        store = tmp / "predictions.zarr"
        attrs = prediction_attrs(model, source.name, routing, names)
        create_predictions(store, source.rows, model, names, ds, attrs)
        (counts,) = run_graph(predict_graph(source, params, store), label="predict")
        summary = summarize_counts(counts, model, routing, names)
        zarr.open_group(str(store), mode="r+").attrs.update(counts=json.dumps(summary))
        write_manifest(store, "predictions")
        t1 = time.perf_counter()
        write_catalog(store, tmp / CATALOG, model)
        summary["catalog_seconds"] = time.perf_counter() - t1
    summary.update(out=str(out), seconds=time.perf_counter() - t0)
    return summary


def prediction_attrs(model, spectra: str, routing: str, names: list[str]) -> dict:
    """``predictions.zarr``'s attributes: what predicted what, and the flag bits."""
    cal = model.calibration_
    return {
        "model": model.path_,
        "spectra": spectra,
        "routing": routing,
        "targets": names,
        "experts": list(model.experts_),
        "bins": list(model.bin_names_),
        "flag_bits": json.dumps(FLAGS),
        "uncertainty": (
            "1-sigma: each expert's exact leave-one-out error at the observed SNR "
            f"({cal['n_spectra']} training spectra); for soft routing the mixture of the "
            "experts' errors over the gate's probabilities, scaled to the mixture's own "
            "held-out errors"
            if cal
            else "none: the model was fitted without calibration"
        ),
    }


def create_predictions(path: Path, rows, model, names, ds: xr.Dataset, attrs: dict) -> None:
    """Write the template of ``predictions.zarr``: every variable chunked like the
    spectra; ``object_id`` (when the spectra have it) copied now, the rest by the tasks."""
    n = int(sum(rows))
    chunks = (tuple(rows),)

    def empty(dtype, *tail):
        return da.empty((n, *tail), chunks=chunks + tuple((t,) for t in tail), dtype=dtype)

    data_vars = {}
    for name in names:
        data_vars[name] = ((SPECTRUM,), empty(np.float64))
        data_vars[f"{name}_err"] = ((SPECTRUM,), empty(np.float64))
    data_vars.update(
        expert=((SPECTRUM,), empty(np.int16)),
        snr_observed=((SPECTRUM,), empty(np.float64)),
        n_bad_pixels=((SPECTRUM,), empty(np.int32)),
        flag=((SPECTRUM,), empty(np.int32)),
    )
    coords = {}
    if model.gate_ is not None:
        data_vars["gate_p"] = ((SPECTRUM, "bin"), empty(np.float64, len(model.bin_names_)))
        coords["bin"] = ("bin", np.array(model.bin_names_, dtype=object))
    if "object_id" in ds:
        data_vars["object_id"] = ((SPECTRUM,), np.asarray(ds["object_id"].values, dtype=object))
    template = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    template["expert"].attrs["names"] = list(model.experts_)
    template["flag"].attrs["bits"] = json.dumps(FLAGS)
    encoding = {"object_id": {"chunks": (rows[0],)}} if "object_id" in ds else None
    write_zarr(template, path, encoding=encoding, compute=False)


def predict_graph(source: inputs.Source, params: dict, path: Path):
    """One :func:`predict_and_write` per chunk, counts merged pairwise (a delayed dict)."""
    params_key = dask.delayed(params, pure=True)
    token = tokenize(source.token(), params_key, str(path))
    tasks = [
        dask.delayed(predict_and_write, pure=True)(
            chunk, str(path), start, params_key, dask_key_name=f"predict-{token}-{i}"
        )
        for i, (chunk, start) in enumerate(zip(source.chunks, source.starts))
    ]
    return pairwise_tree(tasks, _add_counts, f"merge-predict-{token}")


def _add_counts(a: dict, b: dict) -> dict:
    return {key: a[key] + b[key] for key in a}


def summarize_counts(counts: dict, model, routing: str, names: list[str]) -> dict:
    """The merged counts by name."""
    return {
        "n": int(counts["n"][0]),
        "routing": routing,
        "targets": names,
        "flags": {name: int(c) for name, c in zip(FLAGS, counts["flags"])},
        "experts": {name: int(c) for name, c in zip(model.experts_, counts["experts"])},
    }


def write_catalog(store: Path, path: Path, model) -> None:
    """``catalog.parquet`` from ``predictions.zarr``: one row per spectrum, one row group
    per chunk (pyarrow; read with pandas, pyarrow, dask or astropy's Table.read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    group = zarr.open_group(str(store), mode="r")
    names = list(group.attrs["targets"])
    bins = list(model.bin_names_)
    experts = np.array(model.experts_, dtype=object)
    chunk = group["flag"].chunks[0]
    n = group["flag"].shape[0]
    meta = {"flag_bits": json.dumps(FLAGS), "model": model.path_ or ""}
    writer = None
    try:
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            cols = {"spectrum": np.arange(rows.start, rows.stop, dtype=np.int64)}
            if "object_id" in group:
                cols["object_id"] = np.asarray(group["object_id"][rows], dtype=object)
            for name in names:
                cols[name] = group[name][rows]
                cols[f"{name}_err"] = group[f"{name}_err"][rows]
            cols["expert"] = experts[group["expert"][rows]]
            if "gate_p" in group:
                p = group["gate_p"][rows]
                cols.update({f"p_{b}": p[:, k] for k, b in enumerate(bins)})
            for name in ("snr_observed", "n_bad_pixels", "flag"):
                cols[name] = group[name][rows]
            table = pa.table(cols)
            if writer is None:
                schema = table.schema.with_metadata({k: v.encode() for k, v in meta.items()})
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def predict_summary(result: dict) -> str:
    """What a prediction did, for the terminal."""
    n = result["n"]
    rate = n / result["seconds"] if result["seconds"] else float("nan")
    flags = ", ".join(f"{k} {v:,}" for k, v in result["flags"].items() if v) or "none"
    experts = ", ".join(f"{k} {v:,}" for k, v in result["experts"].items())
    return (
        f"predicted {', '.join(result['targets'])} for {n:,} spectra ({result['routing']} "
        f"routing) in {result['seconds']:.1f} s ({rate:,.0f} spectra/s) -> {result['out']}\n"
        f"  served by: {experts}\n  flagged: {flags}\n"
        f"wrote {result['out']}/predictions.zarr, {CATALOG}"
    )
