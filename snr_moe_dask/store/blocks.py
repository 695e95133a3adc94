"""Write one block of rows into several arrays of a Zarr group at once (worker tasks).

The prediction and evaluation tasks write a chunk's rows into a few dozen
per-spectrum arrays. Written one after another, each write waits for zarr's
event loop in turn; here they are issued together, so zarr encodes and writes
the chunks concurrently. Needs only zarr and numpy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np


def write_rows(path: str, start: int, values: Mapping[str, np.ndarray]) -> None:
    """Write ``values[name]`` into rows ``start ...`` of array ``name`` of the Zarr v3
    group at ``path``, every array at once.

    Every chunk is written, fill values too (``write_empty_chunks``): a store the
    tool writes is complete, so a missing chunk always means damage.
    """
    from zarr.core.sync import sync

    sync(_write_rows(str(path), int(start), dict(values)))


async def _write_rows(path: str, start: int, values: dict) -> None:
    import zarr.api.asynchronous as za

    group = await za.open_group(path, mode="r+", zarr_format=3)
    arrays = await asyncio.gather(*(group.getitem(name) for name in values))
    config = {"write_empty_chunks": True}
    await asyncio.gather(
        *(
            array.with_config(config).setitem(slice(start, start + len(value)), value)
            for array, value in zip(arrays, values.values())
        )
    )
