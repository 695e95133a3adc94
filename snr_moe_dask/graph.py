"""The graph helpers every stage shares: run a graph on the current cluster, merge
results pairwise in a fixed order, and split dask arrays into per-chunk blocks.

Each stage (fit, prediction, evaluation) has the same shape, as flox names it:
one task per chunk, a pairwise combine, and a finalize on one worker. Those
stages build their graphs with these helpers.
"""

from __future__ import annotations

import sys
import time

import dask

from .options import resolve


def run_graph(*collections, label: str = "", quiet: bool | None = None):
    """Compute dask collections, with a terminal progress bar on a distributed cluster.

    Returns the results like ``dask.compute``.
    """
    from distributed import get_client as current_client
    from distributed import progress

    quiet = bool(resolve("quiet", quiet))
    try:
        client = current_client()
    except ValueError:
        return dask.compute(*collections)
    futures = client.compute(list(collections))
    try:
        if not quiet:
            if label:
                print(label, file=sys.stderr, flush=True)
            if sys.stderr.isatty():  # a redrawn bar only where it redraws, not in logs
                progress(futures, notebook=False)
                print(file=sys.stderr, flush=True)
        return tuple(client.gather(futures))
    except Exception:
        # A failed task does not stop the others already running, and some write
        # into a temporary output the caller is about to delete: let them finish.
        client.cancel(futures)
        _wait_until_idle(client)
        raise


def _wait_until_idle(client, timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` s) until no worker is executing a task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            busy = client.run(lambda dask_worker: dask_worker.state.executing_count)
        except Exception as exc:  # noqa: BLE001 - cleanup only; the original error is raised
            del exc
            return
        if not any(busy.values()):
            return
        time.sleep(0.1)


def pairwise_tree(values: list, func, name: str):
    """Combine delayed values with ``func(a, b)`` pairwise, level by level.

    The pairing depends only on the order of ``values``, so the result does
    not depend on which worker runs which task.
    """
    level, depth = list(values), 0
    while len(level) > 1:
        merged = [
            dask.delayed(func, pure=True)(a, b, dask_key_name=f"{name}-{depth}-{j}")
            for j, (a, b) in enumerate(zip(level[::2], level[1::2]))
        ]
        if len(level) % 2:
            merged.append(level[-1])
        level, depth = merged, depth + 1
    return level[0]


def blocks(array, rows: tuple[int, ...], *, two_d: bool = False) -> list:
    """The delayed blocks of a dask array along its first axis, one per entry of
    ``rows`` (whole rows for a 2-D array); ``None`` for every chunk without one."""
    if array is None:
        return [None] * len(rows)
    array = array.rechunk((rows, -1) if two_d else (rows,))
    return list(array.to_delayed().ravel())
