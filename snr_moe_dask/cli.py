"""The ``snr-moe`` command: generate, fit, evaluate, run.

Every subcommand runs on a cluster from :func:`snr_moe_dask.cluster.get_client`
(a LocalCluster by default) and closes it on exit. Errors in the input end the
command with a one-line message and exit status 2, before heavy compute.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time

import dask

from . import options
from .binning import check_bins


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``snr-moe fit: error: ...``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cli_type(opt: options.Option):
    """The argparse ``type`` of an option: its check, with its expectation as the error."""

    def convert(text: str):
        try:
            return opt.check(text)
        except options.Invalid as exc:
            raise argparse.ArgumentTypeError(f"must be {exc.expected}; got {text!r}") from None

    convert.__name__ = opt.name  # argparse names the type in some messages
    return convert


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of ``command``, from the option table (:mod:`snr_moe_dask.options`)."""
    cluster = p.add_argument_group("cluster")
    for opt in options.for_command(command):
        group = cluster if options.ALL_COMMANDS == opt.commands else p
        kw: dict = {"default": None, "help": opt.help}
        if opt.action:
            kw["action"] = opt.action
        else:
            kw["type"] = str if opt.nargs else _cli_type(opt)
            choices = getattr(opt.check, "choices", None)
            if choices and opt.name != "routings":
                kw["metavar"] = "|".join(choices)
            if opt.metavar:
                kw["metavar"] = opt.metavar
            if opt.nargs:
                kw["nargs"] = opt.nargs
        group.add_argument(opt.flag, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snr-moe", description="SNR-binned mixture-of-experts ridge regression on Dask"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a mock PFS survey to Zarr")
    g.add_argument("out", help="output store, e.g. train.zarr")
    g.add_argument("--overwrite", action="store_true")
    _add_options(g, "generate")

    f = sub.add_parser("fit", help="fit the global model and one expert per SNR bin")
    f.add_argument("train", help="training store")
    f.add_argument("--model", required=True, help="output model store, e.g. model.zarr")
    f.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="save each partition's statistics here as the pass goes (deleted on success)",
    )
    f.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in --checkpoint"
    )
    f.add_argument("--overwrite", action="store_true")
    _add_options(f, "fit")

    e = sub.add_parser("evaluate", help="predict a test store and write metrics and the report")
    e.add_argument("model", help="model store")
    e.add_argument("test", help="test store")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--overwrite", action="store_true")
    _add_options(e, "evaluate")

    r = sub.add_parser("run", help="run a whole experiment from a YAML config")
    r.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml")
    r.add_argument("--out", default=None, help="output directory (default: the config's)")
    r.add_argument("--overwrite", action="store_true")
    _add_options(r, "run")
    return parser


CLUSTER_KEYWORDS = tuple(
    o.name
    for o in options.OPTIONS
    if o.commands == options.ALL_COMMANDS and o.flag and o.name != "performance_report"
)


def _cluster_kwargs(args) -> dict:
    """The keywords of :func:`snr_moe_dask.cluster.get_client` given on the command line."""
    kw = {}
    for name in CLUSTER_KEYWORDS:
        value = getattr(args, options.option(name).flag.lstrip("-").replace("-", "_"), None)
        kw[name] = value if value is not False else None
    return kw


@contextlib.contextmanager
def _session(args, cluster_overrides: dict | None = None):
    """The cluster (always closed) and the optional performance report."""
    from distributed import performance_report

    from .cluster import get_client

    kw = _cluster_kwargs(args)
    for key, value in (cluster_overrides or {}).items():
        if kw.get(key) is None:
            kw[key] = value
    preload = [*dask.config.get("distributed.worker.preload", []), __name__]
    log_file = str(WorkerLog.path_for(args.command))
    args.log_file = log_file
    settings = {
        "snr-moe.cluster.quiet": bool(args.quiet),
        "snr-moe.cluster.log-file": log_file,
        "distributed.worker.preload": preload,
    }
    with dask.config.set(settings), WorkerLog(log_file):
        with get_client(**kw) as client:
            _CtrlC.reinstall()  # importing dask_jobqueue replaces the SIGINT handler
            try:
                if args.performance_report:
                    with performance_report(filename=args.performance_report):
                        yield client
                else:
                    yield client
            except KeyboardInterrupt:
                _CtrlC.caught_here()
                raise


def dask_setup(worker) -> None:
    """Worker preload for the LocalCluster a command starts.

    Ctrl-C reaches every process of the terminal's foreground group; the
    command itself handles it and closes the cluster, so its workers ignore it
    instead of each printing a traceback. A worker closed mid-task logs a
    warning per cancelled task; on that close it is noise.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_not_a_close_cancellation)
    log_file = dask.config.get("snr-moe.cluster.log-file", None)
    if log_file:
        WorkerLog.redirect(log_file)


class _LazyFileHandler(logging.FileHandler):
    """A log file, and its directory, made only when the first record arrives."""

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()


class WorkerLog:
    """Log records of the cluster a command runs, in a file instead of the terminal.

    A failed task makes its worker log "Compute Failed" with the task's whole
    traceback, and a closing cluster logs its own goodbyes; the command already
    reports the error in one line, so these go to
    ``.snr-moe/logs/COMMAND-TIME-PID.log`` (relative to the current directory),
    which the error line names. The scheduler and nannies of a LocalCluster run
    in this process, its workers in others: the worker preload
    (:func:`dask_setup`) sends theirs to the same file. A file nothing was
    written to is not created.
    """

    current: WorkerLog | None = None
    LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")

    def __init__(self, path: str):
        self.path = path
        self.saved: list = []

    @staticmethod
    def path_for(command: str):
        from pathlib import Path

        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(".snr-moe") / "logs" / f"{command}-{stamp}-{os.getpid()}.log"

    @classmethod
    def redirect(cls, path: str) -> list:
        """Point the loggers at ``path``; returns what to restore."""
        handler = _LazyFileHandler(path, delay=True)
        handler.setLevel(logging.WARNING)  # what the terminal would have shown
        handler.setFormatter(
            logging.Formatter("%(asctime)s pid %(process)d %(name)s %(levelname)s %(message)s")
        )
        saved = []
        for name in cls.LOGGERS:
            logger = logging.getLogger(name)
            saved.append((logger, logger.handlers[:], logger.propagate))
            logger.handlers = [handler]
            logger.propagate = False
        return saved

    def __enter__(self) -> WorkerLog:
        self.saved = self.redirect(self.path)
        WorkerLog.current = self
        return self

    def __exit__(self, *exc) -> None:
        for logger, handlers, propagate in self.saved:
            for h in logger.handlers:
                h.close()
            logger.handlers, logger.propagate = handlers, propagate
        WorkerLog.current = None

    @classmethod
    def note(cls, path: str | None) -> str:
        """`` (worker logs: PATH)`` when that log has something in it, else ``""``."""
        if path and os.path.isfile(path) and os.path.getsize(path) > 0:
            return f" (worker logs: {path})"
        return ""


def _not_a_close_cancellation(record: logging.LogRecord) -> bool:
    return "ended with CancelledError" not in record.getMessage()


class _CtrlC:
    """Ctrl-C during one command: a KeyboardInterrupt that is not lost.

    Python ignores an exception raised inside a gc callback or ``__del__``, and
    distributed's scheduler (in this process, with a LocalCluster) runs a gc
    callback on every collection: a Ctrl-C landing there would be dropped and
    the command would finish and write its outputs. So the handler raises
    KeyboardInterrupt again every 0.2 s until the command has caught it.

    Once interrupted, logging and Python's "Exception ignored" reports are off
    until the command returns: closing the client cancels its pending futures,
    which asyncio, tornado and distributed log with tracebacks, and an
    interrupt landing in distributed's gc callback upsets its timer, which then
    fails on every collection until the scheduler closes. None of it would say
    more than the one-line message.
    """

    current: _CtrlC | None = None

    def __init__(self):
        self.caught = threading.Event()
        self.quiet = False
        self.previous = None
        self.logging_was = logging.root.manager.disable
        self.hook_was = sys.unraisablehook

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)
            sys.unraisablehook = self.unraisable
            _CtrlC.current = self
        return self

    def __exit__(self, *exc) -> None:
        self.caught.set()
        if _CtrlC.current is self:
            signal.signal(signal.SIGINT, self.previous)
            sys.unraisablehook = self.hook_was
            _CtrlC.current = None
        if self.quiet:
            gc.collect()  # cancelled tasks complain when collected: while still quiet
            logging.disable(self.logging_was)

    def handle(self, signum, frame):
        if self.caught.is_set():
            return  # the command already stops; a late repeat must not escape
        if not self.quiet:
            self.silence()  # before the client's threads see the interrupt
            threading.Thread(target=self._repeat, daemon=True).start()
        raise KeyboardInterrupt

    def unraisable(self, info) -> None:
        if not self.quiet:
            self.hook_was(info)

    def silence(self) -> None:
        self.quiet = True
        logging.disable(logging.CRITICAL)

    def _repeat(self) -> None:
        while not self.caught.wait(0.2):
            _thread.interrupt_main()

    @classmethod
    def caught_here(cls) -> None:
        if cls.current is not None:
            cls.current.caught.set()
            cls.current.silence()

    @classmethod
    def reinstall(cls) -> None:
        if cls.current is not None:
            signal.signal(signal.SIGINT, cls.current.handle)


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


def cmd_generate(args) -> int:
    from .generate import generate_survey
    from .outputs import check_output

    if args.n is None:
        raise ValueError("--n is required: the number of spectra to generate, e.g. --n 100000")
    check_output(args.out, args.overwrite, kind="spectra")
    t0 = time.perf_counter()
    with _session(args):
        generate_survey(
            args.out,
            args.n,
            seed=args.seed,
            noise_level=args.noise_level,
            pixels=args.pixels,
            chunk_size=args.chunk_size,
            codec=args.codec,
            overwrite=args.overwrite,
        )
    _say(args, f"wrote {args.n:,} spectra to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def fit_params(args) -> dict:
    return {
        "alpha": args.alpha,
        "bins": args.bins,
        "bin_names": args.bin_names,
        "routing": args.routing,
        "target": args.target,
        "precision": args.precision,
        "standardize": args.standardize,
        "min_spectra": args.min_spectra,
        "max_bad_fraction": args.max_bad_fraction,
        "partitions": args.partitions,
        "strict": args.strict,
        "alphas": args.alpha_grid,
        "cv": args.cv_folds,
    }


def fit_store(train: str, model_path: str, params: dict, overwrite: bool, args) -> object:
    """Validate, fit and save (``snr-moe fit``)."""
    from .model import SNRBinnedRidge
    from .outputs import check_disjoint, check_output

    checkpoint = getattr(args, "checkpoint", None)
    check_output(model_path, overwrite, kind="model", inputs=[train, checkpoint])
    if checkpoint is not None:
        check_disjoint(checkpoint, [train, model_path], role="checkpoint directory")
    model = SNRBinnedRidge(**params)
    model.open_training_store(train)  # fail on bad settings or a bad store before compute
    t0 = time.perf_counter()
    if getattr(args, "resume", False) and checkpoint is None:
        raise ValueError("--resume needs --checkpoint DIR (the directory of the interrupted fit)")
    model.fit(
        train,
        checkpoint=checkpoint,
        resume=getattr(args, "resume", False),
        overwrite_checkpoint=overwrite,
    )
    model.save(model_path, overwrite=overwrite)
    if checkpoint is not None:
        from .checkpoint import remove

        remove(checkpoint)  # only now: the model is safely on disk
    _say(args, fit_summary(model, model_path, time.perf_counter() - t0))
    return model


def fit_summary(model, path: str, seconds: float) -> str:
    lines = [f"fitted {len(model.experts_)} models in {seconds:.1f} s -> {path}"]
    ck = getattr(model, "checkpoint_", {})
    if ck.get("restored"):
        lines.append(
            f"  resumed from {ck['directory']}: {ck['restored']} of {ck['chunks']} chunks "
            f"restored from checkpoints, {ck['folded']} read and folded"
        )
    for name, n, alpha in zip(model.experts_, model.n_train_, model.alpha_):
        note = model.fallback_.get(name) or model.solver_.get(name, {}).get("reason", "")
        lines.append(f"  {name:>8}: n_train={int(n):>10,}  alpha={alpha:.3g}  {note}")
    gate = getattr(model, "gate_", None)
    if gate:
        lines.append(
            f"  gate: logistic regression on {gate['feature_set']} features of "
            f"{gate['n_train']:,} spectra, training accuracy {gate['train_accuracy']:.4f}, "
            f"leakage R2 {gate['leak_r2_train']:.4f}"
        )
    if model.cv_:
        cv = model.cv_
        how = "GCV" if cv.get("method") == "gcv" else f"{cv['folds']}-fold CV"
        lines.append(
            f"  alpha by {how} over {len(cv['alphas'])} values "
            f"{cv['alphas'][0]:.3g}..{cv['alphas'][-1]:.3g} (fixed alpha "
            f"{cv['alpha_fixed']:.3g} also solved, for comparison)"
        )
    exc = model.excluded_
    lines.append(
        "  excluded spectra: "
        + ", ".join(f"{k}={sum(v.values()):,}" for k, v in exc.items() if k != "bad_pixels")
        + f"; bad pixels in used spectra: {sum(exc['bad_pixels'].values()):,}"
    )
    return "\n".join(lines)


def cmd_fit(args) -> int:
    params = fit_params(args)
    with _session(args):
        fit_store(args.train, args.model, params, args.overwrite, args)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model
    from .outputs import check_output

    check_output(args.out, args.overwrite, kind="evaluation", inputs=[args.model, args.test])
    with _session(args):
        result = evaluate_model(
            args.model,
            args.test,
            args.out,
            routing=args.routing,
            target=args.target,
            bootstrap=args.bootstrap,
            seed=args.seed,
            overwrite=args.overwrite,
            gate_threshold=args.gate_threshold,
            error_scale=1.0 if args.error_scale is None else args.error_scale,
            allow_training_store=bool(args.allow_training_store),
        )
    _say(args, _evaluate_summary(result, args.out))
    return 0


def _evaluate_summary(result: dict, out: str) -> str:
    o = result["overall"]
    ci = result["delta_r2_ci95"].get("overall", [float("nan")] * 2)
    return (
        f"R2 global {o['r2_global']:.4f}, MoE ({result['routing']}) {o['r2_moe']:.4f}, "
        f"delta {o['delta_r2']:+.4f} [95% CI {ci[0]:+.4f}, {ci[1]:+.4f}] on {o['n']:,} spectra"
        + "".join(
            f"\n  {r:>8}: R2 {e['r2']:.4f}  gate accuracy {e['accuracy']:.3f}"
            + (f"  rho {e['rho']:.2f}" if e.get("rho") is not None else "")
            + (f"  fallback {e['fallback_rate']:.3f}" if r == "soft" else "")
            for r, e in result["routings"]["by_routing"].items()
            if len(result["routings"]["by_routing"]) > 1
        )
        + f"\nwrote {out}/report.md, metrics.json, predictions.zarr, figures/"
    )


def cmd_run(args) -> int:
    from .experiment import experiment_inputs, load_experiment, run_experiment
    from .outputs import check_output

    exp = load_experiment(args.config)
    out = args.out or exp["output"]
    check_output(out, args.overwrite, kind="experiment", inputs=experiment_inputs(exp))
    with _session(args, exp["cluster"]):
        result = run_experiment(exp, out, overwrite=args.overwrite, quiet=args.quiet)
    _say(args, _evaluate_summary(result, out))
    return 0


COMMANDS = {"generate": cmd_generate, "fit": cmd_fit, "evaluate": cmd_evaluate, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snr-moe``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _CtrlC():
        return _run(args)


def _log_note(args) -> str:
    return WorkerLog.note(getattr(args, "log_file", None))


def _run(args) -> int:
    try:
        if getattr(args, "bins", None) is not None or getattr(args, "bin_names", None) is not None:
            from .config import get_setting

            check_bins(
                get_setting("bins.edges", args.bins), get_setting("bins.names", args.bin_names)
            )
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        text = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"snr-moe {args.command}: error: {text}{_log_note(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _CtrlC.caught_here()
        print(f"snr-moe {args.command}: interrupted; outputs left as they were", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
