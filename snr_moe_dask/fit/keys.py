"""The experts' keys of a fit, from its ``bins``, ``bin_names``, ``by``, ``fine_bins`` and
``edges`` parameters (see :mod:`snr_moe_dask.keyspec`), checked before anything is read.

``bins`` (default ``2, 4, 7``) is the shorthand for one key on ``snr`` whose
cells are named by ``bin_names`` (X, L, M, H); ``by`` gives any keys, whose
cells are named from their edges (``teff(4500,5250]|mh(-1,0]``) unless
``bin_names`` names them. With ``edges="auto"`` a key's edges (from ``by``
or ``bins``) are its *fine* edges; a key without them gets ``fine_bins``
quantile fine bins.
"""

from __future__ import annotations

import math

from ..kernels import cells
from ..kernels.binning import check_bins
from ..keyspec import split_fine
from ..options import resolve

Keys = tuple[tuple[str, tuple[float, ...] | None], ...]


def resolve_keys(params: dict) -> tuple[Keys, tuple[str, ...], tuple, tuple[int, ...] | None]:
    """``(keys, names, fine, bins)``: the pass keys, the experts' cell names (empty with
    a search), the quantile fine-bin count of each key that needs one (None where its
    edges are given), and the coarse bins per key of the search (None without)."""
    by = resolve("by", params.get("by"))
    search = resolve("edges", params.get("edges"))
    fine = params.get("fine_bins")
    fine = None if fine is None else resolve("fine_bins", fine)
    if by is not None and params.get("bins") is not None:
        raise ValueError(
            "give the SNR bins (bins=, --bins) or keys (by=, --by), not both; --bins 2,4,7 "
            "is --by snr:2,4,7"
        )
    if fine is not None and search is None:
        raise ValueError(
            "fine_bins (--fine-bins) sets the fine bins of the edge search: add edges='auto' "
            "(--edges auto[:B])"
        )
    if by is None:
        edges, names = check_bins(
            resolve("bins", params.get("bins")), resolve("bin_names", params.get("bin_names"))
        )
        if search is None:
            return (("snr", tuple(edges)),), tuple(names), (), None
        by = (("snr", tuple(edges) if params.get("bins") is not None else None),)
    if search is not None:
        return _searched(by, fine, search, params.get("bin_names"))
    return by, _names(by, params.get("bin_names")), (), None


def _names(by: Keys, given) -> tuple[str, ...]:
    missing = [name for name, edges in by if edges is None]
    if missing:
        raise ValueError(
            f"key {missing[0]!r} has no edges: give them (--by {missing[0]}:e1,e2,... or "
            f"by=[({missing[0]!r}, [e1, e2])]) or let the fit choose them (--edges auto)"
        )
    grid = [cells.Key(name, edges) for name, edges in by]
    if given is None:
        return tuple(cells.cell_names(grid))
    names = [str(n) for n in resolve("bin_names", given)]
    n_cells = math.prod(k.n_cells for k in grid)
    if len(names) != n_cells or len(set(names)) != len(names) or "global" in names:
        raise ValueError(
            f"bin_names must name the {n_cells} cells of the keys {[k.name for k in grid]} "
            f"once each (not 'global'); got {names}; or leave them out to name the cells by "
            "their edges"
        )
    return tuple(names)


def _searched(by: Keys, fine, search, names_given):
    if names_given is not None:
        raise ValueError(
            "bin_names cannot name the cells of edges='auto': the search chooses them, and "
            "they are named by their edges"
        )
    default, per_key = split_fine(fine) if fine is not None else (None, {})
    unknown = sorted(set(per_key) - {name for name, _ in by})
    if unknown:
        raise ValueError(
            f"fine_bins names {unknown}, which are not keys ({[n for n, _ in by]}); "
            "key the experts by them with --by"
        )
    keys, counts = [], []
    for name, edges in by:
        spec = per_key.get(name)
        if edges is not None and spec is not None:
            raise ValueError(
                f"key {name!r} has edges ({list(edges)}) and fine_bins ({spec!r}): with "
                "edges='auto' a key's edges are its fine edges; give one of them"
            )
        if isinstance(spec, tuple):
            edges, spec = spec, None
        if edges is None and spec is None:
            spec = default or resolve("default_fine_bins")
        keys.append((name, edges))
        counts.append(spec)
    if not search:
        search = (resolve("default_search_bins"),)
    if len(search) == 1:
        search = search * len(keys)
    if len(search) != len(keys):
        raise ValueError(
            f"edges='auto:{','.join(map(str, search))}' gives {len(search)} bin counts for "
            f"{len(keys)} keys; give one count, or one per key in their order"
        )
    return tuple(keys), (), tuple(counts), tuple(search)
