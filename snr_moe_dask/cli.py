"""The ``snr-moe`` command: generate, ingest, fit, evaluate, predict, run.

Every subcommand runs on a cluster from :func:`snr_moe_dask.cluster.get_client`
(a LocalCluster by default) and closes it on exit. Errors in the input end the
command with a one-line message and exit status 2, before heavy compute.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import options
from .kernels.binning import check_bins
from .report.console import evaluate_summary, fit_summary
from .runner import CtrlC, WorkerLog, session


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


def _cli_item_type(opt: options.Option):
    """The argparse ``type`` of a repeatable option: each value checked on its own (as a
    one-item list), and kept as given for the estimator to resolve."""

    def convert(text: str):
        try:
            opt.check([text])
        except options.Invalid as exc:
            raise argparse.ArgumentTypeError(f"must be {exc.expected}; got {text!r}") from None
        return text

    convert.__name__ = opt.name
    return convert


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of ``command``, from the option table (:mod:`snr_moe_dask.options`)."""
    cluster = p.add_argument_group("cluster")
    for opt in options.for_command(command):
        group = cluster if options.ALL_COMMANDS == opt.commands else p
        kw: dict = {"default": None, "help": opt.help}
        if opt.action == "append":
            kw.update(action="append", type=_cli_item_type(opt))
            if opt.metavar:
                kw["metavar"] = opt.metavar
        elif opt.action:
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

    i = sub.add_parser("ingest", help="write pfsspec shards or PFS pipeline files to a store")
    i.add_argument("sources", nargs="+", metavar="SOURCE", help="files, or folders of them")
    i.add_argument("--out", required=True, help="output spectra store, e.g. spectra.zarr")
    i.add_argument("--overwrite", action="store_true")
    _add_options(i, "ingest")

    f = sub.add_parser(
        "fit", help="fit the global model and one expert per SNR bin (or per cell of --by keys)"
    )
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

    p = sub.add_parser("predict", help="predict spectra without labels: predictions and catalog")
    p.add_argument("model", help="model store")
    p.add_argument("spectra", help="spectra store (e.g. from snr-moe ingest)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true")
    _add_options(p, "predict")

    r = sub.add_parser("run", help="run a whole experiment from a YAML config")
    r.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml")
    r.add_argument("--out", default=None, help="output directory (default: the config's)")
    r.add_argument("--overwrite", action="store_true")
    _add_options(r, "run")
    return parser


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, flush=True)


def cmd_generate(args) -> int:
    from .store.outputs import check_output
    from .survey.generate import generate_survey

    if args.n is None:
        raise ValueError("--n is required: the number of spectra to generate, e.g. --n 100000")
    check_output(args.out, args.overwrite, kind="spectra")
    t0 = time.perf_counter()
    with session(args):
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


def cmd_ingest(args) -> int:
    from .ingest.graph import ingest_spectra, ingest_summary

    if args.format is None:
        raise ValueError("--format is required: pfsspec (HDF5 shards) or pfs (pipeline FITS)")
    with session(args):
        result = ingest_spectra(
            args.sources,
            args.out,
            format=args.format,
            noise_level=args.noise_level,
            seed=args.seed,
            snr_definition=args.snr_definition,
            wavelength_grid=args.wavelength_grid,
            resample=args.resample,
            ignore_flags=args.ignore_flags,
            apply_norm=bool(args.apply_norm),
            chunk_size=args.chunk_size,
            codec=args.codec,
            overwrite=args.overwrite,
        )
    _say(args, ingest_summary(result))
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
        "calibration": args.calibration_spectra,
        "by": args.by,
        "fine_bins": args.fine_bins,
        "edges": args.edges,
        "gate": args.gate_features,
    }


def fit_store(train: str, model_path: str, params: dict, overwrite: bool, args) -> object:
    """Validate, fit and save (``snr-moe fit``)."""
    from .model import SNRBinnedRidge
    from .store.outputs import check_disjoint, check_output

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
        from .store.checkpoint import remove

        remove(checkpoint)  # only now: the model is safely on disk
    _say(args, fit_summary(model, model_path, time.perf_counter() - t0))
    return model


def cmd_fit(args) -> int:
    params = fit_params(args)
    with session(args):
        fit_store(args.train, args.model, params, args.overwrite, args)
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation.graph import evaluate_model
    from .store.outputs import check_output

    check_output(args.out, args.overwrite, kind="evaluation", inputs=[args.model, args.test])
    with session(args):
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
    _say(args, evaluate_summary(result, args.out))
    return 0


def cmd_predict(args) -> int:
    from .predict.output import predict_spectra, predict_summary
    from .store.outputs import check_output

    check_output(args.out, args.overwrite, kind="prediction", inputs=[args.model, args.spectra])
    with session(args):
        result = predict_spectra(
            args.model,
            args.spectra,
            args.out,
            routing=args.routing,
            target=args.target,
            overwrite=args.overwrite,
        )
    _say(args, predict_summary(result))
    return 0


def cmd_run(args) -> int:
    from .experiment import experiment_inputs, load_experiment, run_experiment
    from .store.outputs import check_output

    exp = load_experiment(args.config)
    out = args.out or exp["output"]
    check_output(out, args.overwrite, kind="experiment", inputs=experiment_inputs(exp))
    with session(args, exp["cluster"]):
        result = run_experiment(exp, out, overwrite=args.overwrite, quiet=args.quiet)
    _say(args, evaluate_summary(result, out))
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "ingest": cmd_ingest,
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snr-moe``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with CtrlC():
        return _run(args)


def _log_note(args) -> str:
    return WorkerLog.note(getattr(args, "log_file", None))


def _run(args) -> int:
    try:
        snr_bins = getattr(args, "bins", None) is not None or getattr(args, "bin_names", None)
        if snr_bins and getattr(args, "by", None) is None and getattr(args, "edges", None) is None:
            check_bins(
                options.resolve("bins", args.bins), options.resolve("bin_names", args.bin_names)
            )
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        text = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"snr-moe {args.command}: error: {text}{_log_note(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        terminated = CtrlC.caught_here()
        what = "terminated" if terminated else "interrupted"
        print(f"snr-moe {args.command}: {what}; outputs left as they were", file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
