"""Every setting of the tool, in one table.

Each :class:`Option` row says what a setting is called as a keyword, as a
``dask.config`` key (below ``snr-moe``), as a command-line flag and as an
experiment-YAML key, what values it takes and what it means. The CLI's flags
(:mod:`snr_moe_dask.cli`), the experiment schema
(:mod:`snr_moe_dask.experiment`) and the estimator's validation
(:mod:`snr_moe_dask.model`) are all built from :data:`OPTIONS`, so a value is
checked the same way wherever it comes from, before any compute, and a bad
one is named the way its source names it::

    snr-moe fit: error: argument --min-spectra: expected an integer >= 1, got '-5'
    exp.yaml: fit.min_spectra: expected an integer >= 1, got -5
    min_spectra must be an integer >= 1; got min_spectra=-5

Adding a setting is one row here plus its use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.config


class Invalid(ValueError):
    """A value outside what an option takes; ``expected`` says what it takes."""

    def __init__(self, expected: str, choices: tuple | None = None):
        super().__init__(expected)
        self.expected = expected
        self.choices = choices


# ---------------------------------------------------------------------- checks
# Each takes a value (from Python, YAML or, through ``text``, the command line)
# and returns it converted, or raises Invalid.


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    bound = (
        f" in [{low}, {high}]"
        if low is not None and high is not None
        else f" >= {low}"
        if low is not None
        else ""
    )
    expected = f"an integer{bound}"

    def check(value) -> int:
        if isinstance(value, bool):
            raise Invalid(expected)
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise Invalid(expected) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or (low is not None and value < low):
            raise Invalid(expected)
        if high is not None and value > high:
            raise Invalid(expected)
        return int(value)

    check.expected = expected
    check.yaml_types = (int,)
    return check


def number(
    low: float | None = None, high: float | None = None, *, above: bool = False
) -> Callable[[Any], float]:
    """A finite float; ``low`` <= value (< with ``above``) <= ``high``."""
    if low is not None and high is not None:
        expected = f"in [{low:g}, {high:g}]"
    elif low is not None:
        expected = f"a finite number {'>' if above else '>='} {low:g}"
    else:
        expected = "a finite number"

    def check(value) -> float:
        if isinstance(value, bool):
            raise Invalid(expected)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise Invalid(expected) from None
        ok = math.isfinite(value)
        ok = ok and (low is None or (value > low if above else value >= low))
        ok = ok and (high is None or value <= high)
        if not ok:
            raise Invalid(expected)
        return value

    check.expected = expected
    check.yaml_types = (int, float)
    return check


def choice(*values: str) -> Callable[[Any], str]:
    expected = f"one of {values}"

    def check(value) -> str:
        if value not in values:
            raise Invalid(expected, choices=values)
        return value

    check.expected = expected
    check.choices = values
    check.yaml_types = (str,)
    return check


def boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise Invalid("true or false")


boolean.expected = "true or false"
boolean.yaml_types = (bool,)


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("a non-empty string")
    return value


text.expected = "a non-empty string"
text.yaml_types = (str,)


def optional(check: Callable) -> Callable:
    """``check``, or None."""

    def wrapped(value):
        return None if value is None else check(value)

    wrapped.expected = f"{check.expected} (or null)"
    wrapped.yaml_types = getattr(check, "yaml_types", None)
    return wrapped


def _items(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    try:
        return list(value)  # numpy arrays and other sequences
    except TypeError:
        raise Invalid("a list") from None


def number_list(value) -> list[float]:
    expected = "finite numbers, e.g. 2,4,7"
    try:
        out = [float(v) for v in _items(value)]
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not all(math.isfinite(v) for v in out):
        raise Invalid(expected)
    return out


number_list.expected = "finite numbers, e.g. 2,4,7"
number_list.yaml_types = (list,)


def name_list(value) -> list[str]:
    out = [str(v) for v in _items(value)]
    if not out or not all(out):
        raise Invalid("names, e.g. X,L,M,H")
    return out


name_list.expected = "names, e.g. X,L,M,H"
name_list.yaml_types = (list,)


def targets(value) -> list[str]:
    """One label or several: ``logg``, ``[logg, teff]`` or ``logg,teff``."""
    names = [value] if isinstance(value, str) and "," not in value else _items(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise Invalid("a label name or a list of them, e.g. logg")
    if len(set(names)) != len(names):
        raise Invalid("label names without repeats")
    return list(names)


targets.expected = "a label name or a list of them, e.g. logg"
targets.yaml_types = (str, list)

ALPHA_METHODS = ("cv", "gcv")


def alpha(value):
    """A penalty: a number >= 0, ``{expert: number}``, ``"cv"`` or ``"gcv"``, or on the
    command line ``1e5``, ``cv``, ``gcv`` or ``global=1e5,X=1e6``."""
    expected = 'a finite number >= 0, a mapping of expert names to such numbers, "cv" or "gcv"'
    if isinstance(value, str):
        value = value.strip()
        if value in ALPHA_METHODS:
            return value
        if "=" in value:
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            value = {k.strip(): v for k, _, v in pairs}
    if isinstance(value, dict):
        try:
            out = {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise Invalid(expected) from None
        if not out or not all(math.isfinite(v) and v >= 0 for v in out.values()):
            raise Invalid(expected)
        return out
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if isinstance(value, bool) or not (math.isfinite(out) and out >= 0):
        raise Invalid(expected)
    return out


alpha.expected = 'a finite number >= 0, a mapping of expert names to such numbers, "cv" or "gcv"'
alpha.yaml_types = (int, float, dict, str)


def alpha_grid(value) -> list[float]:
    """``START:STOP:NUM`` (log-spaced, inclusive), a list, or ``[start, stop, num]`` in
    ``dask.config``; positive finite values."""
    import numpy as np

    expected = "positive finite alphas: START:STOP:NUM (log-spaced) or a list a,b,c"
    if isinstance(value, str) and ":" in value:
        try:
            start, stop, num = value.split(":")
            value = np.geomspace(float(start), float(stop), int(num)).tolist()
        except (TypeError, ValueError):
            raise Invalid(expected) from None
    try:
        out = [float(v) for v in _items(value)]
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise Invalid(expected)
    return out


alpha_grid.expected = "positive finite alphas: START:STOP:NUM (log-spaced) or a list a,b,c"
alpha_grid.yaml_types = (list, str)

ROUTINGS = ("oracle", "observed", "learned", "soft")
FIT_ROUTINGS = ("oracle", "observed")


def _grid_from_config(value):
    """``snr-moe.fit.cv.grid`` is ``[start, stop, num]`` (a log grid)."""
    if isinstance(value, list | tuple) and len(value) == 3:
        return f"{value[0]}:{value[1]}:{int(value[2])}"
    return value


def folds(value) -> int:
    try:
        return integer(2)(value)
    except Invalid:
        raise Invalid("an integer >= 2 (cross-validation needs at least 2 folds)") from None


folds.expected = "an integer >= 2 (cross-validation needs at least 2 folds)"
folds.yaml_types = (int,)


def routings(value) -> list[str]:
    """One or more routings, ``"oracle,soft"`` or a list, without repeats."""
    names = list(dict.fromkeys(str(n).strip() for n in _items(value) if str(n).strip()))
    if not names or any(n not in ROUTINGS for n in names):
        raise Invalid(f"routings among {list(ROUTINGS)}", choices=ROUTINGS)
    return names


routings.expected = f"routings among {list(ROUTINGS)}"
routings.yaml_types = (str, list)


def gate(value):
    """``True``/``False``, or the name of a feature set (``"snr"``, ``"error"``)."""
    if isinstance(value, bool):
        return value
    if value in GATE_FEATURES:
        return value
    raise Invalid(f"true, false or a feature set among {list(GATE_FEATURES)}")


GATE_FEATURES = ("snr", "error")
gate.expected = f"true, false or a feature set among {list(GATE_FEATURES)}"


def cluster_kind(value) -> str:
    expected = "local, slurm, pbs or a scheduler address like tcp://host:8786"
    if not isinstance(value, str):
        raise Invalid(expected)
    if value in ("local", "slurm", "pbs"):
        return value
    scheme, sep, rest = value.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep and scheme in ("tcp", "tls") and colon and host and port.isdigit():
        return value
    raise Invalid(expected)


cluster_kind.expected = "local, slurm, pbs or a scheduler address like tcp://host:8786"
cluster_kind.yaml_types = (str,)


def existing_file(value) -> str:
    if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
        raise Invalid("the path of an existing file")
    return str(value)


existing_file.expected = "the path of an existing file"
existing_file.yaml_types = (str,)


def memory(value):
    """``auto``, a byte count, or a size such as ``4GB``."""
    from dask.utils import parse_bytes

    if value == "auto":
        return value
    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise Invalid("auto, a number of bytes or a size like 4GB") from None
    if isinstance(value, bool) or n <= 0:
        raise Invalid("auto, a number of bytes or a size like 4GB")
    return value


memory.expected = "auto, a number of bytes or a size like 4GB"
memory.yaml_types = (str, int)


def adapt(value) -> tuple[int, int]:
    expected = "MIN,MAX with 0 <= MIN <= MAX jobs"
    try:
        low, high = (int(float(v)) for v in _items(value))
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not 0 <= low <= high:
        raise Invalid(expected)
    return low, high


adapt.expected = "MIN,MAX with 0 <= MIN <= MAX jobs"
adapt.yaml_types = (list, str)


def duration(value) -> float:
    """Seconds, or a duration such as ``30s`` or ``2min``."""
    from dask.utils import parse_timedelta

    try:
        out = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError):
        raise Invalid("a duration such as 30s") from None
    if not (math.isfinite(out) and out > 0):
        raise Invalid("a duration such as 30s")
    return out


duration.expected = "a duration such as 30s"


# ---------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Option:
    """One setting.

    Attributes
    ----------
    name : str
        Its keyword (estimator parameter or function argument).
    check : callable
        Validates and converts a value; raises :class:`Invalid`.
    help : str
    key : str, optional
        Its ``dask.config`` key below ``snr-moe`` (the default's home).
    flag : str, optional
        Its command-line flag, on the subcommands in ``commands``.
    yaml : str, optional
        Its ``section.key`` in an experiment YAML.
    action : str, optional
        ``"store_true"`` for a command-line switch.
    metavar, nargs : optional
        For the command line.
    """

    name: str
    check: Callable[[Any], Any]
    help: str
    key: str | None = None
    flag: str | None = None
    commands: tuple[str, ...] = ()
    yaml: str | None = None
    action: str | None = None
    metavar: str | None = None
    nargs: str | None = None
    from_config: Callable[[Any], Any] | None = None

    def default(self):
        """The ``dask.config`` value (None when the option has no key)."""
        if not self.key:
            return None
        value = dask.config.get(f"snr-moe.{self.key}")
        return self.from_config(value) if self.from_config and value is not None else value

    def resolve(self, value=None, *, where: str | None = None):
        """``value``, or the config default when it is None, checked.

        Raises ValueError naming the option as the estimator or a function
        names it: ``min_spectra must be an integer >= 1; got min_spectra=-5``.
        """
        if value is None:
            value = self.default()
            if value is None:
                return None
        try:
            return self.check(value)
        except Invalid as exc:
            name = where or self.name
            raise ValueError(f"{name} must be {exc.expected}; got {name}={value!r}") from None


FIT, EVALUATE, GENERATE, RUN, CLUSTER = "fit", "evaluate", "generate", "run", "cluster"
ALL_COMMANDS = (GENERATE, FIT, EVALUATE, RUN)
NONNEG = integer(0)
POSITIVE = integer(1)

OPTIONS: tuple[Option, ...] = (
    # fit
    Option("alpha", alpha, "ridge penalty: a number, per expert global=1e5,X=1e6,...; "
           "cv: K-fold CV per expert; gcv: generalized CV per expert (one "
           "eigendecomposition each)", "fit.alpha", "--alpha", (FIT,), "model.alpha"),
    Option("alphas", alpha_grid, "alphas tried by --alpha cv or gcv: START:STOP:NUM "
           "(log-spaced) or a list a,b,c (default 1e0:1e9:28)", "fit.cv.grid",
           "--alpha-grid", (FIT,), "model.alpha_grid", from_config=_grid_from_config),
    Option("cv", folds, "folds for --alpha cv (default 5)", "fit.cv.folds",
           "--cv-folds", (FIT,), "model.cv_folds"),
    Option("cv_seed", NONNEG, "seed of the CV fold assignment", "fit.cv.seed"),
    Option("compare_alpha", number(0), "the fixed alpha solved alongside a CV choice",
           "fit.cv.compare-alpha"),
    Option("bins", number_list, "SNR bin edges, right-closed, e.g. 2,4,7", "bins.edges",
           "--bins", (FIT,), "bins.edges"),
    Option("bin_names", name_list, "one name per bin, e.g. X,L,M,H", "bins.names",
           "--bin-names", (FIT,), "bins.names"),
    Option("routing", choice(*FIT_ROUTINGS), "bin by the store's true snr (oracle) or the "
           "observed median flux/error", "fit.routing", "--routing", (FIT,), "routing.type"),
    Option("target", targets, "label(s) to predict, default logg", "fit.target",
           "--target", (FIT,), "fit.target", nargs="+"),
    Option("precision", choice("float32", "float64"), "dtype of the centred products "
           "(accumulation is always float64)", "fit.precision", "--precision", (FIT,),
           "fit.precision"),
    Option("standardize", boolean, "penalize standardized coefficients", "fit.standardize",
           "--standardize", (FIT,), "fit.standardize", action="store_true"),
    Option("min_spectra", POSITIVE, "experts with fewer training spectra fall back to the "
           "global model", "fit.min-spectra", "--min-spectra", (FIT,), "fit.min_spectra"),
    Option("max_bad_fraction", number(0.0, 1.0), "spectra with a larger fraction of bad "
           "pixels are excluded", "fit.max-bad-fraction", "--max-bad-fraction", (FIT,),
           "fit.max_bad_fraction"),
    Option("partitions", optional(POSITIVE), "fold chains (default: one per worker thread)",
           "fit.partitions", "--partitions", (FIT,), "fit.partitions"),
    Option("strict", boolean, "any bad pixel is an error naming the variable and spectrum",
           "fit.strict", "--strict", (FIT,), "fit.strict", action="store_true"),
    Option("gate", gate, "train the deployable gate in the fit pass (needs oracle routing)",
           "fit.gate.enabled"),
    Option("gate_features", choice(*GATE_FEATURES), "the gate's feature set",
           "fit.gate.features"),
    Option("gate_max_train", POSITIVE, "the gate trains on at most this many spectra",
           "fit.gate.max-train-spectra"),
    Option("checkpoint_every", POSITIVE, "chunks between a fold chain's checkpoints",
           "fit.checkpoint-every"),
    Option("buffer_mb", number(0), "MiB per fold chain for rows waiting for their bin's "
           "product", "fit.buffer-mb"),
    # evaluate
    Option("routings", routings, "one or more of oracle,observed,learned,soft "
           "(comma-separated; the first is the primary result, all are compared); default: "
           "the model's fit routing", None, "--routing", (EVALUATE,), "evaluate.routings"),
    Option("gate_threshold", number(0.0, 1.0), "soft routing falls back to the global model "
           "when max p < this (default 0.4)", "evaluate.gate-threshold", "--gate-threshold",
           (EVALUATE,), "evaluate.gate_threshold"),
    Option("error_scale", number(0, above=True), "multiply the test store's errors by this "
           "(robustness study; default 1)", None, "--error-scale", (EVALUATE,),
           "evaluate.error_scale"),
    Option("eval_target", text, "which of the model's targets to score", None, "--target",
           (EVALUATE,)),
    Option("bootstrap", NONNEG, "bootstrap resamples (0 disables)", "evaluate.bootstrap",
           "--bootstrap", (EVALUATE,), "evaluate.bootstrap"),
    Option("seed", NONNEG, "bootstrap seed", "evaluate.seed", "--seed", (EVALUATE,),
           "evaluate.seed"),
    Option("hist_bins", POSITIVE, "bins of the report's histograms", "evaluate.hist-bins"),
    Option("allow_training_store", boolean, "evaluate on the model's own training store "
           "(the report then says training set, not held-out)", None,
           "--allow-training-store", (EVALUATE,), action="store_true"),
    # generate
    Option("n", POSITIVE, "number of spectra", None, "--n", (GENERATE,)),
    Option("gen_seed", NONNEG, "survey seed", "generate.seed", "--seed", (GENERATE,),
           "data.seed"),
    Option("test_seed", NONNEG, "seed of the test survey", None, None, (), "data.test_seed"),
    Option("noise_level", number(0), "noise level (1 = the errors' own scale)",
           "generate.noise-level", "--noise-level", (GENERATE,), "data.noise_level"),
    Option("pixels", integer(2), "pixels per spectrum", "generate.pixels", "--pixels",
           (GENERATE,), "data.feature_dim"),
    Option("chunk_size", POSITIVE, "spectra per chunk", "generate.chunk-size",
           "--chunk-size", (GENERATE,), "data.chunk_size"),
    Option("codec", choice("none", "zstd", "lz4"), "chunk compression", "generate.codec",
           "--codec", (GENERATE,), "data.codec"),
    Option("train_size", POSITIVE, "training spectra", None, None, (), "data.train_size"),
    Option("test_size", POSITIVE, "test spectra", None, None, (), "data.test_size"),
    Option("train_store", text, "training store path", None, None, (), "data.train_store"),
    Option("test_store", text, "test store path", None, None, (), "data.test_store"),
    # cluster
    Option("cluster", cluster_kind, "local (default), slurm, pbs, or a scheduler address "
           "tcp://HOST:PORT", "cluster.kind", "--cluster", ALL_COMMANDS, "cluster.kind"),
    Option("scheduler_file", existing_file, "connect through a scheduler file", None,
           "--scheduler-file", ALL_COMMANDS, "cluster.scheduler_file"),
    Option("workers", optional(POSITIVE), "LocalCluster worker processes",
           "cluster.workers", "--workers", ALL_COMMANDS, "cluster.workers"),
    Option("threads_per_worker", POSITIVE, "threads per LocalCluster worker",
           "cluster.threads-per-worker", "--threads-per-worker", ALL_COMMANDS,
           "cluster.threads_per_worker"),
    Option("memory_limit", memory, "per LocalCluster worker, e.g. 4GB",
           "cluster.memory-limit", "--memory-limit", ALL_COMMANDS, "cluster.memory_limit"),
    Option("jobs", POSITIVE, "SLURM/PBS worker jobs to submit", None, "--jobs", ALL_COMMANDS,
           "cluster.jobs"),
    Option("adapt", adapt, "SLURM/PBS adaptive scaling between MIN and MAX jobs", None,
           "--adapt", ALL_COMMANDS, "cluster.adapt", metavar="MIN,MAX"),
    Option("jobqueue_config", existing_file, "dask-jobqueue YAML (see deploy/jobqueue.yaml)",
           None, "--jobqueue-config", ALL_COMMANDS, "cluster.jobqueue_config"),
    *(
        Option(name, check, f"SLURM/PBS worker job {name.replace('_', '-')}", None,
               f"--{name.replace('_', '-')}", ALL_COMMANDS, f"cluster.{name}")
        for name, check in (
            ("cores", POSITIVE),
            ("memory", memory),
            ("walltime", text),
            ("queue", text),
            ("account", text),
            ("processes", POSITIVE),
            ("log_directory", text),
            ("interface", text),
        )
    ),
    Option("insecure", boolean, "SLURM/PBS: plain TCP instead of TLS (any local user could "
           "connect)", None, "--insecure", ALL_COMMANDS, action="store_true"),
    Option("quiet", boolean, "no dashboard link or progress bars", "cluster.quiet",
           "--quiet", ALL_COMMANDS, action="store_true"),
    Option("connect_timeout", duration, "how long to wait for a scheduler to answer",
           "cluster.connect-timeout"),
    Option("performance_report", text, "save Dask's performance report for the run", None,
           "--performance-report", ALL_COMMANDS, metavar="FILE.html"),
)  # fmt: skip

BY_NAME = {o.name: o for o in OPTIONS}
BY_YAML = {o.yaml: o for o in OPTIONS if o.yaml}


def option(name: str) -> Option:
    return BY_NAME[name]


def resolve(name: str, value=None):
    """Resolve one option by name (see :meth:`Option.resolve`)."""
    return BY_NAME[name].resolve(value)


def for_command(command: str) -> list[Option]:
    """The options with a flag on ``command``, in table order."""
    return [o for o in OPTIONS if o.flag and command in o.commands]


def yaml_sections() -> dict[str, dict[str, Option]]:
    """The experiment YAML's sections: ``{section: {key: Option}}``."""
    out: dict[str, dict[str, Option]] = {}
    for path, opt in BY_YAML.items():
        section, _, key = path.partition(".")
        out.setdefault(section, {})[key] = opt
    return out
