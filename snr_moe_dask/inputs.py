"""Where a stage's spectra come from: the one place that chooses between a store's
path, an xarray Dataset and arrays.

Each builds a :class:`Source`: one chunk description per chunk, which the
stage's task reads with ``chunk.read()`` whatever it is. From a store path the
chunk is a :class:`~snr_moe_dask.store.rows.StoreRows`: the task reads its own
rows from the store, so data never wait in memory or travel between workers.
From a Dataset or arrays it is an :class:`~snr_moe_dask.store.rows.ArrayChunk`
of dask blocks, so Dask computes the blocks the task needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .graph import blocks
from .store.rows import ArrayChunk, StoreRows
from .store.schema import (
    SPECTRUM,
    WAVELENGTH,
    open_spectra,
    store_row_chunks,
    validate_spectra,
)

IN_MEMORY = "<in-memory dataset>"


@dataclass
class Source:
    """The spectra of one stage, chunk by chunk.

    Attributes
    ----------
    chunks : list of StoreRows or ArrayChunk
        One per chunk, in spectrum order.
    rows : tuple of int
        Spectra per chunk.
    n_pixels : int
    wavelength : ndarray of shape (n_pixels,) or None
        None for arrays, which carry no grid.
    name : str
        For messages: the store's path, or what the data are.
    path : str
        The store the chunks read themselves, or "" when they are blocks.
    reads : dict
        What each store chunk reads (``targets``, ``with_snr``, ``with_mask``).
    fingerprint : str
        The store's fingerprint, taken once when it was opened (or "").
    """

    chunks: list
    rows: tuple[int, ...]
    n_pixels: int
    wavelength: np.ndarray | None
    name: str
    path: str = ""
    reads: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def starts(self) -> list[int]:
        """The index of each chunk's first spectrum."""
        return np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(int).tolist()

    def token(self) -> str:
        """A name for the graph's keys: the same source gives the same keys."""
        return tokenize(self.path or self.chunks, self.rows, self.reads)


def from_store(
    path: str | os.PathLike,
    targets=(),
    *,
    with_snr: bool,
    require=(),
    variables=(),
) -> tuple[Source, xr.Dataset]:
    """Open, check and describe a store; its tasks read their own chunks.

    ``targets``, (with ``with_snr``) ``snr`` and the per-spectrum
    ``variables`` (the experts' keys and the gate's features, read with each
    chunk) must be in the store, as must ``require``. Returns the source and
    the lazily opened Dataset.
    """
    variables = tuple(v for v in dict.fromkeys(variables) if v not in (*targets, "snr"))
    needed = [*targets, *(["snr"] if with_snr else []), *variables, *require]
    ds = open_spectra(path, require=list(dict.fromkeys(needed)))
    reads = {"targets": list(targets), "with_snr": with_snr, "with_mask": "mask" in ds}
    if variables:
        reads["variables"] = list(variables)
    row_chunks = store_row_chunks(ds)
    chunks = [
        StoreRows(str(path), a, b, tuple(targets), with_snr, reads["with_mask"], variables)
        for a, b in row_chunks
    ]
    source = Source(
        chunks,
        tuple(b - a for a, b in row_chunks),
        ds.sizes[WAVELENGTH],
        ds[WAVELENGTH].values,
        str(path),
        str(path),
        reads,
        ds.encoding.get("fingerprint", ""),
    )
    return source, ds


def from_dataset(
    ds: xr.Dataset,
    targets=(),
    *,
    with_snr: bool,
    missing_targets: bool = False,
    variables=(),
) -> Source:
    """Check a Dataset against the store schema and describe its chunks as blocks.

    With ``missing_targets`` a target the Dataset lacks reads as NaN (an
    evaluation then excludes those spectra); otherwise it must be there, as
    must the per-spectrum ``variables``.
    """
    name = ds.encoding.get("source", IN_MEMORY)
    present = [t for t in targets if t in ds] if missing_targets else list(targets)
    variables = [v for v in dict.fromkeys(variables) if v != "snr"]
    validate_spectra(ds, name, require=[*present, *(["snr"] if with_snr else []), *variables])
    flux = _as_dask(ds["flux"].data).rechunk({1: -1})
    rows = flux.chunks[0]
    nan = da.full(ds.sizes[SPECTRUM], np.nan, chunks=(rows,))
    y = (
        da.stack([_as_dask(ds[t].data) if t in ds else nan for t in targets], axis=1)
        if targets
        else None
    )
    optional = {k: _as_dask(ds[k].data) for k in ("snr", "mask") if k in ds}
    chunks = _array_chunks(
        flux,
        _as_dask(ds["error"].data),
        y,
        optional.get("snr"),
        optional.get("mask"),
        {v: _as_dask(ds[v].data) for v in variables},
    )
    return Source(chunks, rows, ds.sizes[WAVELENGTH], ds[WAVELENGTH].values, name)


def from_arrays(X, y=None, *, snr=None, error=None, mask=None, variables=None) -> Source:
    """Describe array input (numpy or dask): flux ``X``, targets ``y``, and optionally
    the routing SNR, errors (default ones), bad-pixel mask and per-spectrum
    ``variables`` (a dict of arrays of shape (n_spectra,), e.g. the keys' values)."""
    flux = _as_dask(X)
    if flux.ndim != 2:
        raise ValueError(f"X must have shape (n_spectra, n_pixels); got shape {flux.shape}")
    flux = flux.rechunk({1: -1})
    rows = flux.chunks[0]
    if error is None:
        error = da.ones(flux.shape, chunks=flux.chunks, dtype=flux.dtype)
    if y is not None:
        y = _as_dask(y)
        y = y[:, None] if y.ndim == 1 else y
        if y.shape[0] != flux.shape[0]:
            raise ValueError(f"X has {flux.shape[0]} spectra but y has {y.shape[0]}")
    extra = [None if a is None else _as_dask(a) for a in (snr, mask)]
    named = {}
    for name, values in (variables or {}).items():
        named[name] = _as_dask(values)
        if named[name].shape != (flux.shape[0],):
            raise ValueError(
                f"variables[{name!r}] must have shape ({flux.shape[0]},), one value per "
                f"spectrum; got {named[name].shape}"
            )
    chunks = _array_chunks(flux, _as_dask(error), y, *extra, named)
    return Source(chunks, rows, flux.shape[1], None, "<arrays>")


SUPPORTED = (
    "(SNRBinnedRidge fits dense, real-valued spectra: float32 or float64 arrays of shape "
    "(n_spectra, n_pixels) with at least one spectrum and one pixel, dask arrays, an "
    "xarray Dataset or the path of a spectra store)"
)


def check_arrays(estimator, X, y, *, reset: bool, require_y: bool):
    """Validate array input as scikit-learn does (dense, real, 2-D, at least one
    spectrum and one pixel, the fitted pixel count) and return it converted; dask
    arrays are checked by shape only, so nothing is computed."""
    from sklearn.utils.validation import check_array, check_consistent_length, validate_data

    name = type(estimator).__name__
    if require_y and y is None:
        raise ValueError(
            f"{name} requires y to be passed, but the target y is None; pass "
            "y=<array of shape (n_spectra,) or (n_spectra, n_targets)>, or fit a store path "
            "or Dataset that holds the target labels"
        )
    if isinstance(X, da.Array):
        _check_dask_shape(name, X, None if reset else estimator.n_features_in_)
        return X, y
    try:
        X = validate_data(
            estimator,
            X,
            reset=reset,
            accept_sparse=False,
            dtype=(np.float64, np.float32),
            ensure_all_finite=False,
        )
        if y is not None and not isinstance(y, da.Array):
            y = check_array(
                y, ensure_2d=False, dtype=np.float64, ensure_all_finite=False, input_name="y"
            )
            check_consistent_length(X, y)
    except (ValueError, TypeError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{exc} {SUPPORTED}") from exc
    return X, y


def _check_dask_shape(name: str, X: da.Array, n_features: int | None) -> None:
    """The checks ``validate_data`` makes, by shape, for a lazy array."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2D array of shape (n_spectra, n_pixels), got shape {X.shape}; "
            "Reshape your data"
        )
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {X.shape}; {SUPPORTED}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but {name} is expecting {n_features} features as input"
        )


def target_names(y) -> list[str]:
    """The names array targets go by: ``y``, or ``y0, y1, ...`` for several."""
    n = 1 if np.ndim(y) == 1 else np.shape(y)[1]
    return ["y"] if n == 1 else [f"y{i}" for i in range(n)]


def _array_chunks(flux, error, y, snr=None, mask=None, variables=None) -> list[ArrayChunk]:
    rows = flux.chunks[0]
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(int).tolist()
    named = {k: blocks(v, rows) for k, v in (variables or {}).items()}
    per_chunk = [{k: b[i] for k, b in named.items()} or None for i in range(len(rows))]
    parts = zip(
        starts,
        blocks(flux, rows, two_d=True),
        blocks(error, rows, two_d=True),
        blocks(y, rows, two_d=True),
        blocks(snr, rows),
        blocks(mask, rows, two_d=True),
        per_chunk,
    )
    return [ArrayChunk(*p) for p in parts]


def _as_dask(a) -> da.Array:
    if isinstance(a, da.Array):
        return a
    a = np.asarray(a)
    return da.from_array(a, chunks=(2048,) + a.shape[1:])


def check_array_keys(with_snr: bool, needed, snr, variables) -> None:
    """Array input must carry the true SNR and the variables the keys and gate read."""
    if with_snr and snr is None:
        raise ValueError(
            "oracle routing needs the true SNR: pass snr=<array of shape (n_spectra,)>, "
            "or routing='observed' with error=<array>"
        )
    missing = [v for v in needed if v not in (variables or {})]
    if missing:
        raise ValueError(
            f"the keys and the gate need the per-spectrum variables {missing}: pass "
            f"variables={{{missing[0]!r}: <array of shape (n_spectra,)>, ...}}"
        )


def values_reader(ds, snr, variables):
    """``values(name)`` of a store or Dataset variable, or of the arrays given (for the
    quantile fine edges: one small 1-D array per key, read on the client)."""

    def values(name: str) -> np.ndarray:
        if ds is not None:
            return np.asarray(ds[name].values, dtype=np.float64)
        given = {"snr": snr, **(variables or {})}
        return np.asarray(given[name], dtype=np.float64)

    return values
