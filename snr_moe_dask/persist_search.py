"""The edge search's record (``edge_search_``) in a model store, both ways.

Its scalars, keys and edges are one JSON attribute ``edge_search``; its
arrays are variables named ``search_*``: the best CV error per number of
bins per key (dims ``search_bins_<k>``), the chosen coarse cells' records
(dim ``search_cell``) and the tables over every run of fine bins (dims
``search_first_<k>``, ``search_last_<k>``).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

_COARSE = ("sse", "n", "alpha", "fallback")
_TABLES = ("table_sse", "table_n", "table_alpha", "table_fallback")
_SCALARS = ("keys", "n_bins", "error", "edges_by_bins", "global_alpha", "n_spectra")
_SCALARS += ("solves", "method", "folds", "seed", "alpha", "alphas")
#: The search's variables in a model store.
SEARCH_ARRAYS = (
    "search_errors_by_bins",
    *(f"search_coarse_{k}" for k in _COARSE),
    *(f"search_{k}" for k in _TABLES),
)


def with_search(ds: xr.Dataset, search: dict) -> xr.Dataset:
    """``ds`` with the search record's attribute and arrays."""
    n_keys = len(search["keys"])
    ds = ds.copy()
    ds["search_errors_by_bins"] = (
        tuple(f"search_bins_{k}" for k in range(n_keys)),
        search["errors_by_bins"],
    )
    for key in _COARSE:
        ds[f"search_coarse_{key}"] = (("search_cell",), search["coarse"][key])
    dims = tuple(f"search_{end}_{k}" for k in range(n_keys) for end in ("first", "last"))
    for key in _TABLES:
        ds[f"search_{key}"] = (dims, search[key])
    ds.attrs["edge_search"] = json.dumps({k: search[k] for k in _SCALARS})
    return ds


def read_search(ds: xr.Dataset) -> dict:
    """The search record of a model store written with :func:`with_search`."""
    search = json.loads(ds.attrs["edge_search"])
    search["errors_by_bins"] = ds["search_errors_by_bins"].values
    search["coarse"] = {key: ds[f"search_coarse_{key}"].values for key in _COARSE}
    for key in _TABLES:
        search[key] = ds[f"search_{key}"].values
    search["coarse"]["fallback"] = search["coarse"]["fallback"].astype(bool)
    search["table_fallback"] = np.asarray(search["table_fallback"], dtype=bool)
    return search
