"""Running one command on a cluster: the session (cluster, performance report and
log file), Ctrl-C that is never lost, and the worker preload.

:func:`session` opens the cluster a command runs on and always closes it; a
LocalCluster's workers load this module as their preload (:func:`dask_setup`).
"""

from __future__ import annotations

import _thread
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


@contextlib.contextmanager
def session(args, cluster_overrides: dict | None = None):
    """The cluster (always closed) and the optional performance report."""
    from distributed import performance_report

    from .cluster import get_client

    kw = cluster_kwargs(args)
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
            CtrlC.reinstall()  # importing dask_jobqueue replaces the SIGINT handler
            try:
                if args.performance_report:
                    with performance_report(filename=args.performance_report):
                        yield client
                else:
                    yield client
            except KeyboardInterrupt:
                CtrlC.caught_here()
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


class CtrlC:
    """Ctrl-C (or SIGTERM) during one command: a KeyboardInterrupt that is not lost.

    SIGTERM, what ``kill``, a batch system or a supervisor sends first, is
    handled the same way, so the command closes its LocalCluster (whose worker
    processes would otherwise outlive it) and writes nothing; ``terminated``
    says which signal it was.

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

    current: CtrlC | None = None

    def __init__(self):
        self.caught = threading.Event()
        self.quiet = False
        self.terminated = False
        self.previous = None
        self.previous_term = None
        self.logging_was = logging.root.manager.disable
        self.hook_was = sys.unraisablehook

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)
            self.previous_term = signal.signal(signal.SIGTERM, self.handle)
            sys.unraisablehook = self.unraisable
            CtrlC.current = self
        return self

    def __exit__(self, *exc) -> None:
        self.caught.set()
        if CtrlC.current is self:
            signal.signal(signal.SIGINT, self.previous)
            signal.signal(signal.SIGTERM, self.previous_term)
            sys.unraisablehook = self.hook_was
            CtrlC.current = None
        if self.quiet:
            gc.collect()  # cancelled tasks complain when collected: while still quiet
            logging.disable(self.logging_was)

    def handle(self, signum, frame):
        if self.caught.is_set():
            return  # the command already stops; a late repeat must not escape
        self.terminated = self.terminated or signum == signal.SIGTERM
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
    def caught_here(cls) -> bool:
        """Mark the interrupt caught; True when it was SIGTERM."""
        if cls.current is not None:
            cls.current.caught.set()
            cls.current.silence()
            return cls.current.terminated
        return False

    @classmethod
    def reinstall(cls) -> None:
        if cls.current is not None:
            signal.signal(signal.SIGINT, cls.current.handle)
            signal.signal(signal.SIGTERM, cls.current.handle)


CLUSTER_KEYWORDS = tuple(
    o.name
    for o in options.OPTIONS
    if o.commands == options.ALL_COMMANDS and o.flag and o.name != "performance_report"
)


def cluster_kwargs(args) -> dict:
    """The keywords of :func:`snr_moe_dask.cluster.get_client` given on the command line."""
    kw = {}
    for name in CLUSTER_KEYWORDS:
        value = getattr(args, options.option(name).flag.lstrip("-").replace("-", "_"), None)
        kw[name] = value if value is not False else None
    return kw
