"""Cells of a grid of per-spectrum keys, and merges of fine cells into coarse ones
(numpy kernels).

A *key* is a per-spectrum variable (``teff``, ``mh``, the routing SNR, ...)
and its edges, strictly increasing finite floats. Its cells are right-closed
with open outer cells, so every value but NaN has one: with edges
``(e0, e1)`` the cells are ``(-inf, e0]``, ``(e0, e1]`` and ``(e1, inf)``; a
value equal to an edge is in the lower cell, and ``-inf`` / ``inf`` are in
the outer cells. NaN has no cell (:data:`NO_CELL`, -1).

Several keys make a grid, their product. A spectrum's cell index is
``numpy.ravel_multi_index`` of its per-key indices over the grid's shape, in
C order (the first key varies slowest), and is -1 when any key is NaN.

A *coarse* partition of one key's ``K`` fine bins groups them into ``B`` runs
of adjacent fine bins, written as ``B - 1`` *cuts*: strictly increasing
positions in ``1 ... K - 1``, cut ``c`` starting a new run at fine bin ``c``
(so the coarse edge is the fine edge between fine bins ``c - 1`` and ``c``,
``fine_edges[c - 1]``). The coarse cells of a grid are the products of the
per-key runs. Because sufficient statistics merge exactly
(:func:`snr_moe_dask.kernels.stats.pooled_stats`), statistics kept per fine
cell give those of any coarse partition without reading a spectrum again:
pass :func:`coarse_groups` of :func:`fine_to_coarse` to ``pooled_stats``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .binning import assign_bins

NO_CELL = -1


@dataclass(frozen=True)
class Key:
    """A per-spectrum variable and its cell edges.

    Parameters
    ----------
    name : str
        The variable's name (used in cell names and to look up its values).
    edges : sequence of float
        Strictly increasing finite edges; ``len(edges) + 1`` right-closed cells.
    """

    name: str
    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "|" in self.name:
            raise ValueError(f"key name must be a non-empty string without '|'; got {self.name!r}")
        edges = tuple(float(e) for e in np.asarray(self.edges, dtype=np.float64).ravel())
        if not all(np.isfinite(edges)) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(
                f"edges of key {self.name!r} must be finite and strictly increasing; got "
                f"{list(edges)}; sort them and drop duplicates (quantile_edges does)"
            )
        object.__setattr__(self, "edges", edges)

    @property
    def n_cells(self) -> int:
        """Number of cells, ``len(edges) + 1``."""
        return len(self.edges) + 1


def check_keys(keys) -> list[Key]:
    """Return ``keys`` as a list of :class:`Key`.

    Parameters
    ----------
    keys : mapping of str to sequence of float, or sequence of Key or (name, edges)
        For example ``{"teff": [4500, 5250], "mh": [-1, 0]}``.

    Raises
    ------
    ValueError
        If there is no key, or names repeat.
    """
    if isinstance(keys, Key):
        keys = [keys]
    items = keys.items() if isinstance(keys, Mapping) else keys
    out = [k if isinstance(k, Key) else Key(*k) for k in items]
    if not out:
        raise ValueError("keys is empty; pass at least one key, e.g. {'teff': [4500, 5250]}")
    names = [k.name for k in out]
    if len(set(names)) != len(names):
        raise ValueError(f"key names must be unique; got {names}")
    return out


def grid_shape(keys) -> tuple[int, ...]:
    """The number of cells of each key, the grid's shape (first key first)."""
    return tuple(k.n_cells for k in check_keys(keys))


def _key_values(values, keys: list[Key]) -> list[np.ndarray]:
    """The value arrays of ``keys``, in their order, all of one shape."""
    if isinstance(values, Mapping):
        missing = [k.name for k in keys if k.name not in values]
        if missing:
            raise ValueError(
                f"values has no variable {missing[0]!r} (it has {sorted(values)}); pass an "
                "array for every key"
            )
        arrays = [np.asarray(values[k.name], dtype=np.float64) for k in keys]
    else:
        arrays = [np.asarray(v, dtype=np.float64) for v in values]
        if len(arrays) != len(keys):
            raise ValueError(
                f"values has {len(arrays)} arrays for {len(keys)} keys "
                f"({[k.name for k in keys]}); pass one array per key, in the keys' order"
            )
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        named = {k.name: a.shape for k, a in zip(keys, arrays)}
        raise ValueError(f"the keys' value arrays must have one shape; got {named}")
    return arrays


def assign_cells(values, keys) -> np.ndarray:
    """Return each spectrum's cell index in the grid of ``keys``, -1 where a key is NaN.

    Parameters
    ----------
    values : mapping of str to ndarray, or sequence of ndarray
        Each key's values, arrays of shape (n_spectra,): by key name, or in
        the keys' order.
    keys : see :func:`check_keys`

    Returns
    -------
    ndarray of int64, shape (n_spectra,)
        ``ravel_multi_index`` of the per-key cell indices over
        :func:`grid_shape` (C order), or :data:`NO_CELL`.
    """
    keys = check_keys(keys)
    arrays = _key_values(values, keys)
    per_key = [assign_bins(a.ravel(), k.edges) for a, k in zip(arrays, keys)]
    missing = np.zeros(per_key[0].shape, dtype=bool)
    for idx in per_key:
        missing |= idx == NO_CELL
    safe = [np.where(missing, 0, idx) for idx in per_key]
    cell = np.ravel_multi_index(safe, grid_shape(keys)).astype(np.int64)
    cell[missing] = NO_CELL
    return cell.reshape(arrays[0].shape)


def _format_edges(edges: Sequence[float]) -> list[str]:
    """``%g`` of each edge, with more digits when ``%g`` would make two edges equal."""
    for digits in range(6, 18):
        text = [f"{e:.{digits}g}" for e in edges]
        if len(set(text)) == len(text):
            return text
    return [repr(float(e)) for e in edges]  # pragma: no cover - %.17g tells floats apart


def key_cell_names(key: Key) -> list[str]:
    """Names of one key's cells, e.g. ``teff(-inf,4500]``, ``teff(4500,5250]``,
    ``teff(5250,inf)``."""
    bounds = ["-inf", *_format_edges(key.edges), "inf"]
    names = [f"{key.name}({lo},{hi}]" for lo, hi in zip(bounds[:-1], bounds[1:])]
    names[-1] = names[-1][:-1] + ")"
    return names


def cell_names(keys) -> list[str]:
    """Names of the grid's cells in cell-index order, the keys' names joined by ``|``.

    For example ``teff(4500,5250]|mh(-1,0]``. Numbers are formatted with
    ``%g``, with more digits only where ``%g`` would give two edges of one
    key the same text, so names are unique.

    Returns
    -------
    list of str, of length ``prod(grid_shape(keys))``
    """
    per_key = [key_cell_names(k) for k in check_keys(keys)]
    return ["|".join(parts) for parts in itertools.product(*per_key)]


def quantile_edges(sample, k: int) -> list[float]:
    """Edges of ``k`` fine bins holding about equal shares of ``sample``.

    The ``k - 1`` interior edges are the sample quantiles at ``1/k, ...,
    (k-1)/k`` by the inverted empirical CDF (``method="inverted_cdf"``), so
    each edge is a sample value and, with right-closed bins, bin ``i`` holds
    ``ceil(n (i+1) / k) - ceil(n i / k)`` of ``n`` distinct values (the
    shares differ by at most one).

    Ties and few distinct values give fewer edges, never equal ones:
    duplicate quantiles are merged (a value holding more than ``1/k`` of the
    sample absorbs the neighbouring quantiles into one edge), and an edge at
    the sample maximum is dropped, since the top bin ``(max, inf)`` would be
    empty. So the result has at most ``min(k, n_distinct) - 1`` edges, and
    every bin holds at least one sample value (its right edge, or the
    maximum for the top bin). NaN values are ignored, as are infinite
    quantiles.

    Parameters
    ----------
    sample : array_like of float
        Values of the key, e.g. from one pass over the store or a subsample.
    k : int
        Number of fine bins wanted, at least 1.

    Returns
    -------
    list of float
        Strictly increasing finite edges, at most ``k - 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k (number of fine bins) must be an integer >= 1; got {k!r}")
    x = np.asarray(sample, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("sample has no value that is not NaN; pass the key's values")
    if k == 1:
        return []
    q = np.quantile(x, np.arange(1, k) / k, method="inverted_cdf")
    edges = np.unique(q)
    edges = edges[np.isfinite(edges) & (edges < x.max())]
    return [float(e) for e in edges]


def check_cuts(cuts: Sequence[int], n_fine: int) -> list[int]:
    """Validate the cuts of one key's ``n_fine`` fine bins and return them as a list.

    Raises
    ------
    ValueError
        Unless the cuts are strictly increasing integers in ``1 ... n_fine - 1``.
    """
    out = [int(c) for c in cuts]
    if any(c != float(v) for c, v in zip(out, cuts)):
        raise ValueError(f"cuts must be integers; got {list(cuts)}")
    if any(b <= a for a, b in zip(out, out[1:])) or any(not 0 < c < n_fine for c in out):
        raise ValueError(
            f"cuts must be strictly increasing positions in 1 ... {n_fine - 1} (cut c starts "
            f"a coarse bin at fine bin c, of {n_fine}); got {out}"
        )
    return out


def coarse_edges(fine_edges: Sequence[float], cuts: Sequence[int]) -> list[float]:
    """The edges of the coarse bins that merge runs of adjacent fine bins.

    Parameters
    ----------
    fine_edges : sequence of float
        The key's ``K - 1`` fine edges (``K`` fine bins).
    cuts : sequence of int
        ``B - 1`` cuts (see the module docstring).

    Returns
    -------
    list of float
        ``B - 1`` edges: ``fine_edges[c - 1]`` for each cut ``c``.
    """
    try:
        fine_edges = list(Key("fine_edges", fine_edges).edges)
    except ValueError:
        raise ValueError(
            f"fine_edges must be finite and strictly increasing; got {list(fine_edges)}"
        ) from None
    return [fine_edges[c - 1] for c in check_cuts(cuts, len(fine_edges) + 1)]


def coarse_keys(keys, cuts_per_key: Sequence[Sequence[int]]) -> list[Key]:
    """The keys of a coarse grid: each key with :func:`coarse_edges` of its cuts."""
    keys = check_keys(keys)
    cuts_per_key = check_cuts_per_key([k.n_cells for k in keys], cuts_per_key)
    return [Key(k.name, coarse_edges(k.edges, c)) for k, c in zip(keys, cuts_per_key)]


def check_cuts_per_key(fine_shape, cuts_per_key) -> list[list[int]]:
    """Validate one list of cuts per key (:func:`check_cuts`) and return them.

    With one key, a flat list of cuts is also accepted (``[1, 3]`` for ``[[1, 3]]``).
    """
    shape = _check_fine_shape(fine_shape)
    if len(shape) == 1 and all(np.ndim(c) == 0 for c in cuts_per_key):
        cuts_per_key = [list(cuts_per_key)]
    if len(cuts_per_key) != len(shape):
        raise ValueError(
            f"cuts_per_key has {len(cuts_per_key)} lists for {len(shape)} keys; pass "
            "one list of cuts per key ([] keeps a key in one coarse bin)"
        )
    return [check_cuts(c, k) for c, k in zip(cuts_per_key, shape)]


def _check_fine_shape(fine_shape) -> tuple[int, ...]:
    shape = (fine_shape,) if np.ndim(fine_shape) == 0 else tuple(fine_shape)
    if not shape or any(int(k) != k or k < 1 for k in shape):
        raise ValueError(f"fine_shape must hold positive bin counts, one per key; got {shape}")
    return tuple(int(k) for k in shape)


def fine_to_coarse(fine_shape, cuts_per_key) -> np.ndarray:
    """Map each fine cell of a grid to its coarse cell.

    Parameters
    ----------
    fine_shape : int or sequence of int
        Fine bins per key (:func:`grid_shape`); an int for one key.
    cuts_per_key : sequence of sequence of int
        Each key's cuts (see :func:`check_cuts_per_key`; with one key a flat
        list of cuts is also accepted).

    Returns
    -------
    ndarray of int64, shape (prod(fine_shape),)
        The coarse cell index (C order over the coarse grid, whose shape is
        ``len(cuts) + 1`` per key) of each fine cell index.
    """
    fine_shape = _check_fine_shape(fine_shape)
    cuts_per_key = check_cuts_per_key(fine_shape, cuts_per_key)
    per_key = [
        np.searchsorted(np.asarray(c, dtype=np.int64), np.arange(k), side="right")
        for k, c in zip(fine_shape, cuts_per_key)
    ]
    coarse_shape = tuple(len(c) + 1 for c in cuts_per_key)
    grids = np.meshgrid(*per_key, indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], coarse_shape).astype(np.int64)


def coarse_groups(mapping: np.ndarray, n_folds: int = 1) -> list[list[int]]:
    """Slot groups that merge fine statistics into coarse ones with ``pooled_stats``.

    Parameters
    ----------
    mapping : ndarray of int, shape (n_fine_cells,)
        :func:`fine_to_coarse`.
    n_folds : int
        Folds per cell: fine slot ``cell * n_folds + fold``, as the fit keeps.

    Returns
    -------
    list of list of int, of length ``n_coarse_cells * n_folds``
        Group ``coarse * n_folds + fold`` lists the fine slots of that
        coarse cell and fold, so ``stats.pooled_stats(acc, groups)`` is the
        coarse accumulator in the same slot layout.
    """
    mapping = np.asarray(mapping, dtype=np.int64)
    n_coarse = int(mapping.max()) + 1 if mapping.size else 0
    return [
        [int(c) * n_folds + f for c in np.flatnonzero(mapping == g)]
        for g in range(n_coarse)
        for f in range(n_folds)
    ]
