"""A whole experiment from one YAML file: generate missing stores, fit, evaluate, report.

The YAML is shaped like the source study's configuration::

    model:   {type: Ridge, alpha: 100000}   # or alpha: cv (with alpha_grid, cv_folds)
    data:    {train_size: 1000000, test_size: 100000, feature_dim: 4096,
              noise_level: 1.0, seed: 42, train_store: ..., test_store: ...}
    routing: {type: oracle}
    bins:    {edges: [2, 4, 7], names: [X, L, M, H]}
    cluster: {kind: local, workers: 2}

Relative paths are taken from the current directory and are never passed
through a shell.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from .binning import check_bins
from .io import atomic_path, check_output, open_spectra

# Allowed keys per section, with a check for each value.
_NUM = (int, float)
SCHEMA: dict[str, dict[str, object]] = {
    "name": str,
    "output": str,
    "model": {
        "type": ("Ridge",),
        "alpha": (*_NUM, dict, str),
        "alpha_grid": list,
        "cv_folds": int,
    },
    "data": {
        "train_size": int,
        "test_size": int,
        "feature_dim": int,
        "noise_level": _NUM,
        "seed": int,
        "test_seed": int,
        "chunk_size": int,
        "codec": ("none", "zstd", "lz4"),
        "train_store": str,
        "test_store": str,
    },
    "routing": {"type": ("oracle", "observed")},
    "bins": {"edges": list, "names": list},
    "fit": {
        "target": (str, list),
        "precision": ("float32", "float64"),
        "standardize": bool,
        "min_spectra": int,
        "max_bad_fraction": _NUM,
        "partitions": int,
        "strict": bool,
    },
    "evaluate": {
        "bootstrap": int,
        "seed": int,
        "routings": (str, list),
        "gate_threshold": _NUM,
    },
    "cluster": {
        "kind": str,
        "workers": int,
        "threads_per_worker": int,
        "memory_limit": (str, int),
        "jobs": int,
        "jobqueue_config": str,
        "cores": int,
        "memory": str,
        "walltime": str,
        "queue": str,
        "account": str,
        "processes": int,
        "log_directory": str,
    },
}
_REQUIRED = {"data": ("train_size", "test_size", "train_store", "test_store")}


class ConfigError(ValueError):
    """An experiment YAML has an unknown key or a bad value."""


def _check_value(where: str, value, rule) -> None:
    if isinstance(rule, tuple) and all(isinstance(r, str) for r in rule):
        if value not in rule:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected one of {list(rule)}")
        return
    types = rule if isinstance(rule, tuple) else (rule,)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{where}: expected {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: expected {_type_names(types)}, got {value!r}")


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in types)


def validate_experiment(raw: dict, source: str) -> dict:
    """Check an experiment mapping against :data:`SCHEMA` and fill defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level")
    for key, value in raw.items():
        if key not in SCHEMA:
            raise ConfigError(f"{source}: unknown key {key!r}; allowed: {sorted(SCHEMA)}")
        rule = SCHEMA[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
            for sub, v in value.items():
                if sub not in rule:
                    raise ConfigError(
                        f"{source}: unknown key '{key}.{sub}'; allowed: {sorted(rule)}"
                    )
                if v is not None:
                    _check_value(f"{source}: {key}.{sub}", v, rule[sub])
        else:
            _check_value(f"{source}: {key}", value, rule)
    for section, keys in _REQUIRED.items():
        for sub in keys:
            if sub not in raw.get(section, {}):
                raise ConfigError(f"{source}: missing required key '{section}.{sub}'")
    exp = {k: dict(raw.get(k) or {}) for k in SCHEMA if isinstance(SCHEMA[k], dict)}
    exp["name"] = raw.get("name", Path(source).stem)
    exp["output"] = raw.get("output", f"results/{exp['name']}")
    data = exp["data"]
    for key in ("train_size", "test_size"):
        if data[key] < 1:
            raise ConfigError(f"{source}: data.{key}: must be >= 1, got {data[key]}")
    alpha = exp["model"].get("alpha")
    if isinstance(alpha, str) and alpha not in ("cv", "gcv"):
        raise ConfigError(
            f"{source}: model.alpha: expected a number, a mapping, 'cv' or 'gcv', got {alpha!r}"
        )
    if "bins" in raw:
        try:
            check_bins(
                exp["bins"].get("edges", [2, 4, 7]), exp["bins"].get("names", ["X", "L", "M", "H"])
            )
        except ValueError as exc:
            raise ConfigError(f"{source}: bins: {exc}") from exc
    exp["source"] = source
    return exp


def load_experiment(path: str | os.PathLike) -> dict:
    """Read and validate an experiment YAML."""
    text = Path(path).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_experiment(raw, str(path))


def model_params(exp: dict) -> dict:
    fit, bins = exp["fit"], exp["bins"]
    return {
        "alpha": exp["model"].get("alpha"),
        "alphas": exp["model"].get("alpha_grid"),
        "cv": exp["model"].get("cv_folds"),
        "bins": bins.get("edges"),
        "bin_names": bins.get("names"),
        "routing": exp["routing"].get("type"),
        "target": fit.get("target"),
        "precision": fit.get("precision"),
        "standardize": fit.get("standardize"),
        "min_spectra": fit.get("min_spectra"),
        "max_bad_fraction": fit.get("max_bad_fraction"),
        "partitions": fit.get("partitions"),
        "strict": fit.get("strict"),
    }


def _ensure_store(path: str, n: int, seed: int, data: dict, quiet: bool) -> dict:
    """Generate a store if it is missing; check an existing one matches the config."""
    from .generate import generate_survey

    if Path(path).exists():
        ds = open_spectra(path)
        pixels = data.get("feature_dim", ds.sizes["wavelength"])
        if ds.sizes["spectrum"] != n or ds.sizes["wavelength"] != pixels:
            raise ConfigError(
                f"store {path!r} has {ds.sizes['spectrum']} spectra x "
                f"{ds.sizes['wavelength']} pixels but the config asks for {n} x {pixels}; "
                "delete the store to regenerate it, or fix the config"
            )
        return {"generated": False, "seconds": 0.0}
    t0 = time.perf_counter()
    generate_survey(
        path,
        n,
        seed=seed,
        noise_level=data.get("noise_level"),
        pixels=data.get("feature_dim"),
        chunk_size=data.get("chunk_size"),
        codec=data.get("codec"),
    )
    return {"generated": True, "seconds": time.perf_counter() - t0}


def run_experiment(
    exp: dict, out: str | os.PathLike, *, overwrite: bool = False, quiet: bool = False
) -> dict:
    """Generate missing stores, fit, evaluate and write the report into ``out``.

    ``out`` receives ``model.zarr``, ``predictions.zarr``, ``metrics.json``,
    ``report.md`` and ``figures/``, all at once (temporary directory, then
    rename).
    """
    from .evaluate import evaluate_into, prepare_evaluation
    from .model import SNRBinnedRidge

    check_output(out, overwrite)
    data = exp["data"]
    params = model_params(exp)
    model = SNRBinnedRidge(**params)
    model._resolved()  # bad settings fail before any store is generated
    seed = data.get("seed", 42)
    timings = {}
    gen_train = _ensure_store(data["train_store"], data["train_size"], seed, data, quiet)
    gen_test = _ensure_store(
        data["test_store"], data["test_size"], data.get("test_seed", seed + 1), data, quiet
    )
    timings["generate"] = gen_train["seconds"] + gen_test["seconds"]
    model.open_training_store(data["train_store"])
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        model.fit(data["train_store"])
        model.save(tmp / "model.zarr")
        timings["fit"] = time.perf_counter() - t0
        if not quiet:
            from .cli import fit_summary

            print(fit_summary(model, str(Path(out) / "model.zarr"), timings["fit"]), flush=True)
        model.path_ = str(Path(out) / "model.zarr")
        from .model import load_model

        model = load_model(tmp / "model.zarr")
        model.path_ = str(Path(out) / "model.zarr")
        evaluate = exp["evaluate"]
        model, ds, test_name, eval_settings = prepare_evaluation(
            model,
            data["test_store"],
            bootstrap=evaluate.get("bootstrap"),
            seed=evaluate.get("seed"),
            routing=evaluate.get("routings"),
            gate_threshold=evaluate.get("gate_threshold"),
            extra={"timings": timings, "config": _public(exp), "experiment": exp["name"]},
        )
        result = evaluate_into(model, ds, tmp, test_name=test_name, **eval_settings)
    return result


def _public(exp: dict) -> dict:
    return {k: v for k, v in exp.items() if k != "source"}
