"""The graph of predictions: one task per chunk of spectra, each predicting with
every expert and routing the way asked.

It gives the lazy per-spectrum predictions of
:meth:`snr_moe_dask.model.SNRBinnedRidge.predict`, and the parameters every
prediction and evaluation task shares (:func:`model_params`): the model's
coefficients and gate enter the graph as one key, so each worker receives them
once.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from ..checks import ROUTINGS
from ..inputs import Source
from ..kernels.gate_features import base_names, parse_features
from ..kernels.variables import routed_variable, store_variables
from ..options import resolve
from ..store.schema import WAVELENGTH
from .tasks import KEY_ROUTINGS, predict_chunk

#: The per-spectrum outputs of a prediction task, and their dtypes.
PREDICT_VARS = {
    "y_global": np.float64,
    "y_moe": np.float64,
    "snr": np.float64,
    "snr_observed": np.float64,
    "bin": np.int64,
    "bin_true": np.int64,
}


def pred_vars(params: dict, *, evaluation: bool = True) -> dict:
    """The per-spectrum variables for these parameters (``predictions.zarr``'s, with
    ``evaluation``: then also ``y_true`` and ``used``)."""
    out = {"y_true": np.float64, **PREDICT_VARS, "used": bool} if evaluation else dict(PREDICT_VARS)
    for r in params["routings"]:
        out.update({f"y_{r}": np.float64, f"bin_{r}": np.int64, f"fallback_{r}": bool})
    if params.get("gate") is not None:
        out.update(gate_p_max=np.float64, y_leakage=np.float64)
    if params.get("fixed") is not None:
        out["y_fixed_alpha"] = np.float64
    if params.get("calibration") is not None:
        out.update({f"err_{r}": np.float64 for r in params["routings"]})
    return out


def parse_routings(routing, default: str) -> list[str]:
    """``"oracle,soft"`` or a list, to a list of known routings without repeats."""
    names = routing.split(",") if isinstance(routing, str) else list(routing or [default])
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in ROUTINGS]
    if unknown or not names:
        raise ValueError(f"routing must be among {list(ROUTINGS)}; got {routing!r}")
    return names


def check_gate(model, routings: list[str]) -> dict | None:
    """The model's gate; an error when a routing needs it and the model has none."""
    needs_gate = [r for r in routings if r in ("learned", "soft")]
    if needs_gate and model.gate_ is None:
        raise ValueError(
            f"routing {needs_gate} needs the model's gate, but model {model.path_!r} has "
            "none; fit it with oracle routing and the gate enabled (the default)"
        )
    return model.gate_


def needed_reads(model, routings: list[str]) -> tuple[bool, list[str]]:
    """What a prediction with these routings reads besides flux and error: whether
    the true ``snr``, and the other store variables (the keys' true values for
    oracle routing, the gate's variables for learned and soft routing).

    Raises
    ------
    ValueError
        Before any compute, for observed routing of a key without an observed
        version (a label such as ``teff``).
    """
    names = []
    for routing in KEY_ROUTINGS:
        if routing in routings:
            names += [routed_variable(name, routing) for name, _ in model.keys_]
    if model.gate_ is not None and {"learned", "soft"} & set(routings):
        names += base_names(parse_features(model.gate_["feature_set"]))
    stored = store_variables(names)
    return "snr" in stored, [v for v in stored if v != "snr"]


def model_params(
    model,
    routings: list[str],
    target_index: int = 0,
    *,
    gate_threshold: float | None = None,
    error_scale: float = 1.0,
) -> dict:
    """The small dict every prediction task needs: coefficients, gate and routings."""
    cv = model.cv_
    return {
        "coef": model.coef_,
        "intercept": model.intercept_,
        "mean_x": model.mean_x_,
        "keys": [(name, list(edges)) for name, edges in model.keys_],
        "n_cells": len(model.bin_names_),
        "routings": list(routings),
        "target_index": target_index,
        "max_bad_fraction": float(model.max_bad_fraction_),
        "gate": check_gate(model, routings),
        "gate_threshold": resolve("gate_threshold", gate_threshold),
        "error_scale": float(error_scale),
        "fixed": ({"coef": cv["coef_fixed"], "intercept": cv["intercept_fixed"]} if cv else None),
        "calibration": model.calibration_,
    }


def prediction_arrays(model, source: Source, routing: str, target_index: int = 0) -> dict:
    """Lazy per-spectrum predictions as dask arrays: :func:`pred_vars`'s variables
    and ``y_moe_all`` (n, n_targets), every target routed."""
    params = dask.delayed(model_params(model, [routing], target_index), pure=True)
    token = tokenize(source.token(), params)
    tasks = [
        dask.delayed(predict_chunk, pure=True)(chunk, params, dask_key_name=f"predict-{token}-{i}")
        for i, chunk in enumerate(source.chunks)
    ]
    n_targets = model.coef_.shape[2]
    variables = pred_vars(model_params(model, [routing], target_index), evaluation=False)
    out = {name: _concat(tasks, source.rows, name, (), dtype) for name, dtype in variables.items()}
    out["y_moe_all"] = _concat(tasks, source.rows, "y_moe_all", (n_targets,), np.float64)
    return out


def _concat(tasks, rows, name: str, tail: tuple, dtype) -> da.Array:
    return da.concatenate(
        [da.from_delayed(t[name], shape=(m, *tail), dtype=dtype) for t, m in zip(tasks, rows)]
    )


def check_compatible(model, ds, store_name: str) -> None:
    """Refuse spectra whose pixels or wavelength grid differ from the model's, naming
    both grids and the fix (``snr-moe ingest ... --wavelength-grid MODEL``)."""
    model_name = model.path_ or "the model"
    n = ds.sizes.get(WAVELENGTH)
    wave = model.wavelength_
    grid = ds[WAVELENGTH].values
    fix = (
        f"resample the spectra onto the model's grid: snr-moe ingest ... --wavelength-grid "
        f"{model.path_ or 'MODEL.zarr'} (or write_spectra after resampling)"
    )
    if n != model.n_features_in_:
        model_grid = f"{wave[0]:.2f}-{wave[-1]:.2f} A" if wave is not None else "no grid"
        raise ValueError(
            f"model {model_name!r} has {model.n_features_in_} pixels but store {store_name!r} "
            f"has {n} (model grid {model_grid}, store grid {grid[0]:.2f}-{grid[-1]:.2f} A); {fix}"
        )
    if wave is not None and not np.allclose(grid, wave, rtol=0, atol=1e-6):
        i = int(np.argmax(np.abs(grid - wave)))
        raise ValueError(
            f"wavelength grid of store {store_name!r} differs from model {model_name!r}'s "
            f"training grid (store {n} pixels, {grid[0]:.2f}-{grid[-1]:.2f} A; model "
            f"{wave[0]:.2f}-{wave[-1]:.2f} A; pixel {i}: {float(grid[i]):.4f} vs "
            f"{float(wave[i]):.4f} A); {fix}"
        )
