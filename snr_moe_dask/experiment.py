"""A whole experiment from one YAML file: generate missing stores, fit, evaluate, report.

The YAML is shaped like the source study's configuration::

    model:   {type: Ridge, alpha: 100000}   # or alpha: cv (with alpha_grid, cv_folds)
    data:    {train_size: 1000000, test_size: 100000, feature_dim: 4096,
              noise_level: 1.0, seed: 42, train_store: ..., test_store: ...}
    routing: {type: oracle}
    bins:    {edges: [2, 4, 7], names: [X, L, M, H]}   # or by: [{var: teff, edges: [...]}]
    cluster: {kind: local, workers: 2}

Relative paths are taken from the current directory and are never passed
through a shell.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from . import options
from .kernels.binning import check_bins
from .kernels.variables import routed_variable
from .store.outputs import atomic_path, check_output
from .store.schema import open_spectra

# Keys that are the experiment's own (not settings of the option table).
_OWN = {"name": str, "output": str}
_SECTION_EXTRA = {"model": {"type": ("Ridge",)}}
_REQUIRED = {"data": ("train_size", "test_size", "train_store", "test_store")}


class ConfigError(ValueError):
    """An experiment YAML has an unknown key or a bad value."""


def schema() -> dict[str, dict]:
    """Allowed keys per section: each maps to its :class:`~snr_moe_dask.options.Option`
    (or, for ``model.type``, the allowed values). Built from the option table."""
    out: dict[str, dict] = {k: dict(v) for k, v in options.yaml_sections().items()}
    for section, keys in _SECTION_EXTRA.items():
        out.setdefault(section, {}).update(keys)
    return out


def _check_value(where: str, value, rule):
    """Check one value (an Option, or a tuple of allowed values); return it converted."""
    if isinstance(rule, tuple):
        if value not in rule:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected one of {list(rule)}")
        return value
    types = getattr(rule.check, "yaml_types", None)
    if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    try:
        return rule.check(value)
    except options.Invalid as exc:
        if exc.choices:
            raise ConfigError(
                f"{where}: {value!r} is not allowed; expected one of {list(exc.choices)}"
            ) from None
        raise ConfigError(f"{where}: must be {exc.expected}; got {value!r}") from None


def validate_experiment(raw: dict, source: str) -> dict:
    """Check an experiment mapping against :func:`schema` and fill defaults.

    Every value is checked here, before any store is generated or fitted;
    errors name the file and the key's path.
    """
    rules = schema()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level")
    exp: dict = {section: {} for section in rules}
    for key, value in raw.items():
        if key in _OWN:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{source}: {key}: expected a non-empty str, got {value!r}")
            continue
        if key not in rules:
            allowed = sorted([*rules, *_OWN])
            raise ConfigError(f"{source}: unknown key {key!r}; allowed: {allowed}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        for sub, v in value.items():
            if sub not in rules[key]:
                raise ConfigError(
                    f"{source}: unknown key '{key}.{sub}'; allowed: {sorted(rules[key])}"
                )
            if v is not None:
                exp[key][sub] = _check_value(f"{source}: {key}.{sub}", v, rules[key][sub])
    for section, keys in _REQUIRED.items():
        for sub in keys:
            if sub not in exp.get(section, {}):
                raise ConfigError(f"{source}: missing required key '{section}.{sub}'")
    exp["name"] = raw.get("name", Path(source).stem)
    exp["output"] = raw.get("output", f"runs/{exp['name']}")
    if "bins" in raw and not {"by", "search"} & set(exp["bins"]):
        try:
            check_bins(
                exp["bins"].get("edges", [2, 4, 7]), exp["bins"].get("names", ["X", "L", "M", "H"])
            )
        except ValueError as exc:
            raise ConfigError(f"{source}: bins: {exc}") from exc
    _check_routings(exp, source)
    # The cluster section, as get_client's keywords (``kind`` is its ``cluster``).
    exp["cluster"] = {options.BY_YAML[f"cluster.{k}"].name: v for k, v in exp["cluster"].items()}
    exp["source"] = source
    return exp


def _check_routings(exp: dict, source: str) -> None:
    """The evaluation's routings must be possible with the model the run fits."""
    routings = exp["evaluate"].get("routings") or []
    if "observed" in routings:
        for key in exp["bins"].get("by") or ():
            try:
                routed_variable(key[0], "observed")
            except ValueError as exc:
                raise ConfigError(f"{source}: evaluate.routings: {exc}") from None
    gated = [r for r in routings if r in ("learned", "soft")]
    fit_routing = exp["routing"].get("type") or options.resolve("routing")
    if gated and fit_routing != "oracle":
        raise ConfigError(
            f"{source}: evaluate.routings: {gated} need the gate, which is trained only "
            f"with oracle routing, but routing.type is {fit_routing!r}; use routing.type: "
            "oracle or drop them"
        )


def load_experiment(path: str | os.PathLike) -> dict:
    """Read and validate an experiment YAML."""
    if not Path(path).is_file():
        what = "is a directory" if Path(path).is_dir() else "does not exist"
        raise ConfigError(
            f"experiment config {str(path)!r} {what}; expected an experiment YAML file "
            "such as configs/demo.yaml"
        )
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read experiment config {str(path)!r}: {exc}") from exc
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
        "by": bins.get("by"),
        "fine_bins": bins.get("fine_bins"),
        "edges": bins.get("search"),
        "gate": fit.get("gate_features"),
        "routing": exp["routing"].get("type"),
        "target": fit.get("target"),
        "precision": fit.get("precision"),
        "standardize": fit.get("standardize"),
        "min_spectra": fit.get("min_spectra"),
        "max_bad_fraction": fit.get("max_bad_fraction"),
        "partitions": fit.get("partitions"),
        "strict": fit.get("strict"),
        "calibration": fit.get("calibration_spectra"),
    }


def _ensure_store(path: str, n: int, seed: int, data: dict) -> float:
    """Generate a store if it is missing (returns the seconds it took); check that an
    existing one matches the config."""
    from .survey.generate import generate_survey

    if Path(path).exists():
        ds = open_spectra(path)
        pixels = data.get("feature_dim", ds.sizes["wavelength"])
        if ds.sizes["spectrum"] != n or ds.sizes["wavelength"] != pixels:
            raise ConfigError(
                f"store {path!r} has {ds.sizes['spectrum']} spectra x "
                f"{ds.sizes['wavelength']} pixels but the config asks for {n} x {pixels}; "
                "delete the store to regenerate it, or fix the config"
            )
        return 0.0
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
    return time.perf_counter() - t0


def run_experiment(
    exp: dict, out: str | os.PathLike, *, overwrite: bool = False, quiet: bool = False
) -> dict:
    """Generate missing stores, fit, evaluate and write the report into ``out``.

    ``out`` receives ``model.zarr``, ``predictions.zarr``, ``metrics.json``,
    ``report.md`` and ``figures/``, all at once (temporary directory, then
    rename).
    """
    from .evaluation.graph import evaluate_into, prepare_evaluation
    from .model import SNRBinnedRidge
    from .report.console import fit_summary

    data, inputs = exp["data"], experiment_inputs(exp)
    check_output(out, overwrite, kind="experiment", inputs=inputs)
    model = SNRBinnedRidge(**model_params(exp))
    _check_gate_routings(exp, model._resolved())  # bad settings fail before any store is made
    seed = data.get("seed", 42)
    timings = {
        "generate": _ensure_store(data["train_store"], data["train_size"], seed, data)
        + _ensure_store(
            data["test_store"], data["test_size"], data.get("test_seed", seed + 1), data
        )
    }
    with atomic_path(out, overwrite=overwrite, kind="experiment", inputs=inputs) as tmp:
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        model.fit(data["train_store"])
        model.save(tmp / "model.zarr")
        model.path_ = str(Path(out) / "model.zarr")  # where it will be once the run is done
        timings["fit"] = time.perf_counter() - t0
        if not quiet:
            print(fit_summary(model, model.path_, timings["fit"]), flush=True)
        evaluate = exp["evaluate"]
        model, plan = prepare_evaluation(
            model,
            data["test_store"],
            bootstrap=evaluate.get("bootstrap"),
            seed=evaluate.get("seed"),
            routing=evaluate.get("routings"),
            gate_threshold=evaluate.get("gate_threshold"),
            error_scale=evaluate.get("error_scale"),
            extra={"timings": timings, "config": _public(exp), "experiment": exp["name"]},
        )
        return evaluate_into(model, plan, tmp)


def _check_gate_routings(exp: dict, settings) -> None:
    gated = [r for r in exp["evaluate"].get("routings") or [] if r in ("learned", "soft")]
    if gated and not settings.gate:
        raise ConfigError(
            f"{exp['source']}: evaluate.routings: {gated} need the gate, but this fit trains "
            "none (snr-moe.fit.gate.enabled is false); enable it or drop them"
        )


def experiment_inputs(exp: dict) -> list[str]:
    """What a run reads: its YAML and both stores (those it generates included: a
    store kept inside the output folder would go when the folder is replaced)."""
    return [exp.get("source"), exp["data"]["train_store"], exp["data"]["test_store"]]


def _public(exp: dict) -> dict:
    return {k: v for k, v in exp.items() if k != "source"}
