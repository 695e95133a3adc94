"""A fitted model's state and its Zarr store, both ways. It knows no estimator class.

The fitted state is a plain mapping from the fitted attribute names of
:class:`snr_moe_dask.model.SNRBinnedRidge` (:data:`FITTED`) to their values. A
freshly fitted model and one loaded from its store have the same attributes
with equal values: everything :data:`FITTED` names is written and read here,
in one place. The store is Zarr format 3 that ``xarray.open_zarr`` reads:
arrays, plain attributes and JSON strings, nothing pickled.

Format version 2 adds the experts' keys (attribute ``keys``), the edge search
(``edge_search`` and its ``search_*`` arrays) and the gate's principal
components (``gate_components``, ``gate_component_mean``); a version-1 store
(SNR bins only) reads as a model keyed by ``snr`` with no search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .kernels.binning import bin_ranges
from .persist_search import SEARCH_ARRAYS, read_search, with_search
from .store.outputs import atomic_path
from .store.rows import StoreError, check_complete
from .store.schema import EXPERT, TARGET, WAVELENGTH, open_zarr_quietly, write_zarr

FORMAT_VERSION = 2

#: Every fitted attribute, in one list: the round trip keeps each of them.
FITTED = (
    "coef_",
    "intercept_",
    "mean_x_",
    "experts_",
    "n_train_",
    "alpha_",
    "fallback_",
    "solver_",
    "excluded_",
    "cv_",
    "gate_",
    "calibration_",
    "keys_",
    "edge_search_",
    "bin_edges_",
    "bin_names_",
    "routing_",
    "precision_",
    "standardize_",
    "min_spectra_",
    "max_bad_fraction_",
    "targets_",
    "n_features_in_",
    "wavelength_",
    "train_store_",
    "train_fingerprint_",
    "train_content_",
    "train_reads_",
    "timings_",
    "accuracy_",
    "train_snr_hist_",
    "path_",
)
_PLAIN = ("routing_", "precision_", "train_store_", "train_fingerprint_", "train_content_")
_JSON = ("fallback_", "solver_", "excluded_", "timings_", "train_reads_", "accuracy_")
_GATE_SCALARS = ("leak_intercept", "n_train", "train_accuracy", "leak_r2_train", "feature_set")
_GATE_ARRAYS = {
    "mean": ("gate_feature",),
    "scale": ("gate_feature",),
    "coef": ("bin", "gate_feature"),
    "intercept": ("bin",),
    "leak_coef": ("gate_feature",),
}
_CALIBRATION_ARRAYS = {
    "snr_edges": (EXPERT, "calibration_edge"),
    "snr_centre": (EXPERT, "calibration_bin"),
    "variance": (EXPERT, "calibration_bin", TARGET),
    "count": (EXPERT, "calibration_bin"),
}
_CALIBRATION_SOFT = {  # the learned (with a gate) and observed (SNR keys) routings' tables,
    **{  # and the soft mixture's factor
        f"{routing}_{key}": dims
        for routing in ("learned", "observed")
        for key, dims in (
            ("snr_edges", (EXPERT, "calibration_edge")),
            ("snr_centre", (EXPERT, "calibration_bin")),
            ("variance", (EXPERT, "calibration_bin", TARGET)),
            ("count", (EXPERT, "calibration_bin")),
        )
    },
    "soft_snr_edges": ("calibration_edge",),
    "soft_snr_centre": ("calibration_bin",),
    "soft_scale": ("calibration_bin", TARGET),
    "soft_count": ("calibration_bin",),
}
_GATE_OPTIONAL = {
    "components": ("gate_component", WAVELENGTH),
    "component_mean": (WAVELENGTH,),
}
_CV_ARRAYS = {
    "mse": (EXPERT, "cv_fold", "alpha_grid"),
    "mean": (EXPERT, "alpha_grid"),
    "se": (EXPERT, "alpha_grid"),
    "n_valid": (EXPERT, "cv_fold"),
    "coef_fixed": (EXPERT, WAVELENGTH, TARGET),
    "intercept_fixed": (EXPERT, TARGET),
}


def to_dataset(state: dict) -> xr.Dataset:
    """The fitted state as an xarray Dataset (what :func:`write_model` writes)."""
    wave = state["wavelength_"]
    ds = xr.Dataset(
        {
            "coef": ((EXPERT, WAVELENGTH, TARGET), state["coef_"]),
            "intercept": ((EXPERT, TARGET), state["intercept_"]),
            "mean_x": ((EXPERT, WAVELENGTH), state["mean_x_"]),
            "n_train": ((EXPERT,), state["n_train_"]),
            "alpha": ((EXPERT,), state["alpha_"]),
            "train_snr_edges": (("snr_hist_edge",), state["train_snr_hist_"][0]),
            "train_snr_hist": (("snr_hist_bin",), state["train_snr_hist_"][1].astype(np.int64)),
        },
        coords={
            EXPERT: (EXPERT, np.array(state["experts_"], dtype=object)),
            WAVELENGTH: (
                WAVELENGTH,
                np.arange(state["n_features_in_"], dtype=np.float64) if wave is None else wave,
            ),
            TARGET: (TARGET, np.array(state["targets_"], dtype=object)),
        },
    )
    from .version import __version__

    ds.attrs.update(
        format_version=FORMAT_VERSION,
        package="snr_moe_dask",
        package_version=__version__,
        bin_edges=list(state["bin_edges_"]),
        bin_names=list(state["bin_names_"]),
        keys=json.dumps([[name, list(edges)] for name, edges in state["keys_"]]),
        bin_ranges=[list(r) for r in bin_ranges(state["bin_edges_"])],
        standardize=bool(state["standardize_"]),
        min_spectra=int(state["min_spectra_"]),
        max_bad_fraction=float(state["max_bad_fraction_"]),
        has_wavelength=wave is not None,
        **{a[:-1]: state[a] for a in _PLAIN},
        **{a[:-1]: json.dumps(state[a]) for a in _JSON},
    )
    if state["gate_"]:
        ds = _with_gate(ds, state["gate_"])
    if state["cv_"]:
        ds = _with_cv(ds, state["cv_"])
    if state["calibration_"]:
        ds = _with_calibration(ds, state["calibration_"])
    if state["edge_search_"]:
        ds = with_search(ds, state["edge_search_"])
    return ds


def _with_calibration(ds: xr.Dataset, calibration: dict) -> xr.Dataset:
    arrays = _CALIBRATION_ARRAYS | _CALIBRATION_SOFT
    for key, dims in arrays.items():
        if key in calibration:
            ds[f"calibration_{key}"] = (dims, np.asarray(calibration[key]))
    scalars = {k: v for k, v in calibration.items() if k not in arrays}
    ds.attrs["calibration"] = json.dumps(scalars)
    return ds


def _read_calibration(ds: xr.Dataset) -> dict:
    out = {key: ds[f"calibration_{key}"].values for key in _CALIBRATION_ARRAYS}
    out.update(
        (key, ds[f"calibration_{key}"].values)
        for key in _CALIBRATION_SOFT
        if f"calibration_{key}" in ds
    )
    out.update(json.loads(ds.attrs.get("calibration", "{}")))
    return out


def _with_gate(ds: xr.Dataset, gate: dict) -> xr.Dataset:
    ds = ds.assign_coords(gate_feature=("gate_feature", np.array(gate["features"], dtype=object)))
    for key, dims in _GATE_ARRAYS.items():
        ds[f"gate_{key}"] = (dims, gate[key])
    for key, dims in _GATE_OPTIONAL.items():
        if gate.get(key) is not None:
            ds[f"gate_{key}"] = (dims, gate[key])
    scalars = {k: gate[k] for k in _GATE_SCALARS}
    ds.attrs["gate"] = json.dumps(scalars | {"classes": [int(c) for c in gate["classes"]]})
    return ds


def _with_cv(ds: xr.Dataset, cv: dict) -> xr.Dataset:
    ds = ds.assign_coords(alpha_grid=("alpha_grid", np.asarray(cv["alphas"])))
    for key, dims in _CV_ARRAYS.items():
        ds[key if key.endswith("fixed") else f"cv_{key}"] = (dims, cv[key])
    ds.attrs.update(
        cv_folds=int(cv["folds"]),
        cv_seed=int(cv["seed"]),
        cv_alpha_fixed=float(cv["alpha_fixed"]),
        cv_method=cv["method"],
    )
    return ds


def write_model(state: dict, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the fitted state to a model store atomically (temporary path, then
    rename); ``overwrite`` replaces only a model store this tool wrote, and never
    the training store."""
    inputs = [state["train_store_"]]
    with atomic_path(path, overwrite=overwrite, kind="model", inputs=inputs) as tmp:
        write_zarr(to_dataset(state), tmp)
    return Path(path)


_REQUIRED_VARS = ("coef", "intercept", "mean_x", "n_train", "alpha", "train_snr_hist")
_REQUIRED_VARS += ("train_snr_edges",)
_REQUIRED_ATTRS = ("bin_edges", "bin_names", "routing", "precision", "standardize")
_REQUIRED_ATTRS += ("min_spectra", "max_bad_fraction", "fallback", "solver", "excluded")


def read_model(path: str | os.PathLike) -> dict:
    """The fitted state of a model store written by :func:`write_model`.

    Raises
    ------
    FileNotFoundError, StoreError, ValueError
        Naming the store and what is wrong: absent, incomplete (a missing
        chunk), damaged (a chunk failing its checksum, a missing variable or
        attribute) or written by a newer version.
    """
    ds = _open_model(str(path))
    a = ds.attrs
    state = {
        "coef_": ds["coef"].values,
        "intercept_": ds["intercept"].values,
        "mean_x_": ds["mean_x"].values,
        "experts_": [str(e) for e in ds[EXPERT].values],
        "n_train_": ds["n_train"].values,
        "alpha_": ds["alpha"].values,
        "bin_edges_": [float(e) for e in a["bin_edges"]],
        "bin_names_": [str(n) for n in a["bin_names"]],
        "standardize_": bool(a["standardize"]),
        "min_spectra_": int(a["min_spectra"]),
        "max_bad_fraction_": float(a["max_bad_fraction"]),
        "targets_": [str(t) for t in ds[TARGET].values],
        "n_features_in_": int(ds.sizes[WAVELENGTH]),
        "wavelength_": ds[WAVELENGTH].values if a.get("has_wavelength", True) else None,
        "train_snr_hist_": (ds["train_snr_edges"].values, ds["train_snr_hist"].values),
        "path_": str(path),
        **{k: a.get(k[:-1], "") for k in _PLAIN},
        **{k: json.loads(a.get(k[:-1], "{}")) for k in _JSON},
        "gate_": _read_gate(ds) if "gate_coef" in ds else None,
        "cv_": _read_cv(ds) if "cv_mse" in ds else None,
        "calibration_": _read_calibration(ds) if "calibration_variance" in ds else None,
        "edge_search_": read_search(ds) if "edge_search" in a else None,
    }
    keys = json.loads(a["keys"]) if "keys" in a else [["snr", state["bin_edges_"]]]
    state["keys_"] = [(str(name), [float(e) for e in edges]) for name, edges in keys]
    return state


def _open_model(name: str) -> xr.Dataset:
    import zarr

    if not Path(name).exists():
        raise FileNotFoundError(f"model store {name!r} does not exist; fit one with `snr-moe fit`")
    try:
        check_complete(name, zarr.open_group(name, mode="r"))
        ds = open_zarr_quietly(name).load()
    except StoreError as exc:
        raise StoreError(f"model {exc}") from None
    except Exception as exc:  # any zarr failure (a chunk failing its checksum...): name the store
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ValueError(f"cannot read model store {name!r}: {detail}") from exc
    version = ds.attrs.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"model store {name!r} has format_version {version!r}, but this snr_moe_dask "
            f"reads versions up to {FORMAT_VERSION}; upgrade snr_moe_dask to read it"
        )
    _check_complete_model(ds, name)
    return ds


def _check_complete_model(ds: xr.Dataset, name: str) -> None:
    """Name what a damaged or incomplete model store lacks, instead of a KeyError."""
    missing = [v for v in _REQUIRED_VARS if v not in ds.variables]
    if "gate_coef" in ds:
        missing += [f"gate_{v}" for v in _GATE_ARRAYS if f"gate_{v}" not in ds]
        missing += [] if "gate" in ds.attrs else ["attribute 'gate'"]
    if "cv_mse" in ds:
        names = [k if k.endswith("fixed") else f"cv_{k}" for k in _CV_ARRAYS]
        missing += [v for v in names if v not in ds]
    if "calibration_variance" in ds:
        missing += [f"calibration_{k}" for k in _CALIBRATION_ARRAYS if f"calibration_{k}" not in ds]
    if "edge_search" in ds.attrs:
        missing += [v for v in SEARCH_ARRAYS if v not in ds]
    missing += [f"attribute {a!r}" for a in _REQUIRED_ATTRS if a not in ds.attrs]
    if EXPERT not in ds.coords or TARGET not in ds.coords or WAVELENGTH not in ds.coords:
        missing.append("coordinates 'expert', 'target' and 'wavelength'")
    if missing:
        raise StoreError(
            f"model store {name!r} is damaged or incomplete: it lacks {', '.join(missing)}; "
            "fit the model again (`snr-moe fit`) or restore the store from a copy"
        )


def _read_gate(ds: xr.Dataset) -> dict:
    gate = {key: ds[f"gate_{key}"].values for key in _GATE_ARRAYS}
    for key in _GATE_OPTIONAL:
        if f"gate_{key}" in ds:
            gate[key] = ds[f"gate_{key}"].values
    gate["features"] = [str(f) for f in ds["gate_feature"].values]
    gate.update(json.loads(ds.attrs["gate"]))
    gate["classes"] = np.array(gate["classes"])
    return gate


def _read_cv(ds: xr.Dataset) -> dict:
    a = ds.attrs
    cv = {key: ds[key if key.endswith("fixed") else f"cv_{key}"].values for key in _CV_ARRAYS}
    cv.update(
        alphas=ds["alpha_grid"].values,
        folds=int(a["cv_folds"]),
        seed=int(a["cv_seed"]),
        method=a.get("cv_method", "kfold"),
        alpha_fixed=float(a["cv_alpha_fixed"]),
    )
    return cv


def snr_histogram(route_snr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of the SNR that routed the training spectra, for the report:
    ``(edges (121,), counts (120,))`` over 0 to max(12, max SNR + 0.5)."""
    snr = route_snr[np.isfinite(route_snr)]
    edges = np.linspace(0.0, max(12.0, float(snr.max(initial=0)) + 0.5), 121)
    counts, _ = np.histogram(snr, bins=edges)
    return edges, counts.astype(np.int64)
