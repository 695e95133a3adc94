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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import yaml

from . import keyspec
from .checks import (
    FIT_ROUTINGS,
    Invalid,
    _grid_from_config,
    adapt,
    alpha,
    alpha_grid,
    boolean,
    choice,
    cluster_kind,
    duration,
    existing_file,
    folds,
    integer,
    memory,
    name_list,
    number,
    number_list,
    optional,
    predict_routing,
    routings,
    targets,
    text,
)

_DEFAULTS_FILE = Path(__file__).with_name("snr_moe_dask.yaml")


def _register_defaults() -> None:
    """The package's defaults, registered with ``dask.config.update_defaults``: a
    keyword left as None is resolved from ``snr-moe.*`` at call time, so
    ``dask.config.set`` and ``DASK_SNR_MOE__*`` environment variables apply."""
    with open(_DEFAULTS_FILE) as f:
        dask.config.update_defaults(yaml.safe_load(f))


_register_defaults()


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
INGEST, PREDICT = "ingest", "predict"
ALL_COMMANDS = (GENERATE, INGEST, FIT, EVALUATE, PREDICT, RUN)
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
    Option("by", keyspec.by, "key the experts by a per-spectrum variable: VAR[:EDGES], e.g. "
           "teff:4500,5250 (a store variable, snr, observed_snr or a quality feature); "
           "repeat it for a grid of cells; --bins 2,4,7 is --by snr:2,4,7", None, "--by",
           (FIT,), "bins.by", action="append", metavar="VAR[:EDGES]"),
    Option("fine_bins", keyspec.fine_bins, "with --edges auto: K quantile fine bins per key "
           "(K, or VAR:K), or a key's fine edges (VAR:e1,e2,...); repeatable", None,
           "--fine-bins", (FIT,), "bins.fine_bins", action="append"),
    Option("edges", keyspec.search, "auto[:B]: choose B coarse bins per key, runs of adjacent "
           "fine bins, by K-fold CV of the oracle-routed mixture, from the same pass", None,
           "--edges", (FIT,), "bins.search", metavar="auto[:B]"),
    Option("default_fine_bins", POSITIVE, "fine bins per key for --edges auto without "
           "--fine-bins", "bins.fine-bins"),
    Option("default_search_bins", POSITIVE, "coarse bins per key for --edges auto",
           "bins.search-bins"),
    Option("search_method", choice("exact", "coordinate"), "the edge search: exact, or "
           "coordinate-wise (approximate, for large grids)", "bins.search-method"),
    Option("routing", choice(*FIT_ROUTINGS), "bin by the store's true snr (oracle) or the "
           "observed median flux/error", "fit.routing", "--routing", (FIT,), "routing.type"),
    Option("target", targets, "label(s) to predict, default logg", "fit.target",
           "--target", (FIT,), "fit.target", nargs="+"),
    Option("precision", choice("refined", "float32", "float64"), "refined (default): "
           "float32 products, then one float64 refinement pass, within 1e-6 x std(y) of "
           "float64; float32: the products alone (faster, about 1e-6..1e-4 x std(y) off on "
           "ill-conditioned data); float64: float64 products", "fit.precision",
           "--precision", (FIT,), "fit.precision"),
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
    Option("gate", keyspec.gate, "train the deployable gate in the fit pass (needs oracle "
           "routing)", "fit.gate.enabled"),
    Option("gate_features", keyspec.gate_features, "the gate's features: snr, error, pca:K "
           "(K leading principal components of the training spectra) and per-spectrum "
           "variables, comma-separated", "fit.gate.features", "--gate-features", (FIT,),
           "fit.gate_features"),
    Option("gate_sample", POSITIVE, "spectra whose flux the pass keeps to train the gate's "
           "principal-component features", "fit.gate.pca-sample"),
    Option("pack_above", number(0), "pack each slot's Gram triangle when one fold chain's "
           "statistics would exceed this many GB unpacked (0: always)", "fit.pack-above-gb"),
    Option("gate_max_train", POSITIVE, "the gate trains on at most this many spectra",
           "fit.gate.max-train-spectra"),
    Option("checkpoint_every", POSITIVE, "chunks between a fold chain's checkpoints",
           "fit.checkpoint-every"),
    Option("buffer_mb", number(0), "MiB per fold chain for rows waiting for their bin's "
           "product", "fit.buffer-mb"),
    Option("calibration", NONNEG, "training spectra (about; whole chunks evenly spread) read "
           "again after the solve for each expert's leave-one-out error model, the "
           "uncertainties of predict and evaluate (0: none)", "fit.calibration.spectra",
           "--calibration-spectra", (FIT,), "fit.calibration_spectra"),
    Option("calibration_bins", integer(1), "observed-SNR quantile bins of the error model",
           "fit.calibration.snr-bins"),
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
    # ingest
    Option("format", choice("pfsspec", "pfs"), "the sources' format: pfsspec HDF5 shards or "
           "PFS pipeline FITS files (pfsArm, pfsMerged, pfsObject, pfsSingle)", None,
           "--format", (INGEST,)),
    Option("ingest_noise_level", number(0), "pfsspec: noise added to the noiseless model "
           "flux, in units of its error (default 1)", "ingest.noise-level", "--noise-level",
           (INGEST,)),
    Option("ingest_seed", NONNEG, "pfsspec: seed of the noise (spectrum i draws from its own "
           "stream)", "ingest.seed", "--seed", (INGEST,)),
    Option("snr_definition", choice("median", "norm"), "pfsspec: the true snr, median of "
           "flux/error (the store's, default) or the study's ||flux|| / ||error * "
           "noise_level||", "ingest.snr-definition", "--snr-definition", (INGEST,)),
    Option("wavelength_grid", text, "resample every spectrum onto the wavelength grid of "
           "this spectra or model store", None, "--wavelength-grid", (INGEST,),
           metavar="STORE_OR_MODEL"),
    Option("resample", choice("linear", "flux"), "with --wavelength-grid: linear "
           "interpolation (default) or flux-conserving rebinning", "ingest.resample",
           "--resample", (INGEST,)),
    Option("ignore_flags", name_list, "PFS: mask planes that do not make a pixel bad, e.g. "
           "REFLINE", None, "--ignore-flags", (INGEST,), metavar="PLANE,..."),
    Option("apply_norm", boolean, "PFS pfsArm/pfsMerged: divide flux and error by the NORM "
           "HDU", None, "--apply-norm", (INGEST,), action="store_true"),
    Option("ingest_chunk_size", POSITIVE, "spectra per chunk of the store",
           "ingest.chunk-size", "--chunk-size", (INGEST,)),
    Option("ingest_codec", choice("none", "zstd", "lz4"), "chunk compression",
           "ingest.codec", "--codec", (INGEST,)),
    # predict
    Option("predict_routing", predict_routing, "soft (default with a gate), "
           "learned or observed (without); oracle needs a true SNR that observed spectra "
           "do not have", None, "--routing", (PREDICT,)),
    Option("predict_target", text, "which of the model's targets to predict (default: all)",
           None, "--target", (PREDICT,)),
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
    Option("worker_spill", boolean, "let LocalCluster workers spill data to disk (off: a "
           "fit's accumulators are needed at once, and spilling them only copies them)",
           "cluster.spill"),
    Option("retain_memory", boolean, "LocalCluster workers keep the memory they free for "
           "their next large arrays (glibc malloc: no mmap or trim of large blocks) instead "
           "of returning it to the system at once", "cluster.retain-memory"),
    Option("dashboard_address", text, "where a LocalCluster's dashboard listens",
           "cluster.dashboard-address"),
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
