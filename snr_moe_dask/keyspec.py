"""The settings that key experts by variables: ``by``, ``fine_bins`` and ``edges``.

Each is checked here, from Python, an experiment YAML or the command line,
into one normalized form (:mod:`snr_moe_dask.options` gives each a row):

``by`` (``--by VAR[:EDGES]``, repeatable; YAML ``bins.by``)
    The keys, a tuple of ``(name, edges or None)``: ``--by teff:4500,5250
    --by mh:-1,0``, ``[{"var": "teff", "edges": [4500, 5250]}, {"var":
    "mh"}]``, ``{"teff": [4500, 5250], "mh": [-1, 0]}`` or ``[("teff",
    [4500, 5250])]``. A key without edges gets them from the search.
``fine_bins`` (``--fine-bins K`` or ``--fine-bins VAR:K`` or ``VAR:e1,e2,...``)
    Fine bins per key for the search: a tuple of items, each a count for
    every key or ``(name, count or edges)`` (:func:`split_fine` splits them).
``edges`` (``--edges auto[:B]``; YAML ``bins.search``)
    ``None`` (the given edges), or the number of coarse bins per key the
    search picks: ``auto`` (the default count), ``auto:3``, ``auto:3,2``.
"""

from __future__ import annotations

import math

from .checks import Invalid, _items
from .kernels.gate_features import parse_features

BY_EXPECTED = (
    "keys VAR[:EDGES], e.g. teff:4500,5250 (repeatable), or a list of {var: NAME, edges: [...]}"
)
FINE_EXPECTED = "a number of fine bins K >= 1, VAR:K, or VAR:e1,e2,... (explicit fine edges)"
SEARCH_EXPECTED = "auto, auto:B or auto:B1,B2,... (coarse bins per key, each >= 1)"


def _name(value) -> str:
    if not isinstance(value, str) or not value.strip() or "|" in value or "=" in value:
        raise Invalid(BY_EXPECTED)
    name = value.strip()
    if name == "global":
        raise Invalid(BY_EXPECTED + " (not named 'global')")
    return name


def _edges(value) -> tuple[float, ...]:
    try:
        edges = tuple(float(v) for v in _items(value))
    except (TypeError, ValueError):
        raise Invalid(BY_EXPECTED) from None
    if not edges or not all(math.isfinite(e) for e in edges):
        raise Invalid(BY_EXPECTED + " with finite edges")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise Invalid(BY_EXPECTED + " with strictly increasing edges")
    return edges


def _one_key(item) -> tuple[str, tuple[float, ...] | None]:
    if isinstance(item, str):
        name, _, edges = item.partition(":")
        return _name(name), (_edges(edges) if edges.strip() else None)
    if isinstance(item, dict):
        unknown = set(item) - {"var", "edges"}
        if unknown or "var" not in item:
            raise Invalid(BY_EXPECTED + f" (keys var and edges; got {sorted(item)})")
        edges = item.get("edges")
        return _name(item["var"]), (None if edges is None else _edges(edges))
    if isinstance(item, list | tuple) and len(item) in (1, 2):
        edges = item[1] if len(item) == 2 else None
        return _name(item[0]), (None if edges is None else _edges(edges))
    raise Invalid(BY_EXPECTED)


def by(value) -> tuple[tuple[str, tuple[float, ...] | None], ...]:
    """Keys: see the module docstring. Names must be unique."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        value = list(value.items())
    if not isinstance(value, list | tuple) or not value:
        raise Invalid(BY_EXPECTED)
    keys = tuple(_one_key(item) for item in value)
    names = [k[0] for k in keys]
    if len(set(names)) != len(names):
        raise Invalid(BY_EXPECTED + f" without repeated variables (got {names})")
    return keys


by.expected = BY_EXPECTED
by.yaml_types = (list, dict)


def _count(value) -> int:
    if isinstance(value, bool):
        raise Invalid(FINE_EXPECTED)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Invalid(FINE_EXPECTED) from None
    if not number.is_integer() or number < 1:
        raise Invalid(FINE_EXPECTED)
    return int(number)


def _fine_value(value) -> int | tuple[float, ...]:
    """A count of fine bins, or explicit fine edges."""
    if isinstance(value, int | float) or (isinstance(value, str) and "," not in value):
        return _count(value)
    try:
        return _edges(value)
    except Invalid:
        raise Invalid(FINE_EXPECTED) from None


def fine_bins(value) -> tuple:
    """Fine bins: a tuple of items, each a count for every key or ``(name, count or
    edges)``; checking the result again returns it unchanged."""
    items = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(items, list | tuple):
        items = [items]
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2:
            name, spec = item
        elif isinstance(item, str) and ":" in item:
            name, _, spec = item.partition(":")
        else:
            out.append(_count(item))
            continue
        try:
            out.append((_name(name), _fine_value(spec)))
        except Invalid:
            raise Invalid(FINE_EXPECTED) from None
    return tuple(out)


def split_fine(items) -> tuple[int | None, dict]:
    """``(count for every key or None, {name: count or edges})`` of :func:`fine_bins`."""
    default, per_key = None, {}
    for item in items:
        if isinstance(item, tuple):
            per_key[item[0]] = item[1]
        else:
            default = item
    return default, per_key


fine_bins.expected = FINE_EXPECTED
fine_bins.yaml_types = (int, dict, list, str)


def search(value) -> tuple[int, ...] | None:
    """``auto[:B]``: the coarse bins per key, ``()`` for the default count."""
    if value is None or value is False:
        return None
    if isinstance(value, list | tuple):  # already checked: the counts
        return tuple(_count(c) for c in value)
    text = str(value).strip()
    head, _, counts = text.partition(":")
    if head != "auto":
        raise Invalid(SEARCH_EXPECTED)
    if not counts.strip():
        return ()
    try:
        return tuple(_count(c) for c in _items(counts))
    except Invalid:
        raise Invalid(SEARCH_EXPECTED) from None


search.expected = SEARCH_EXPECTED
search.yaml_types = (str,)


def format_key(name: str, edges) -> str:
    """A key as the command line writes it: ``teff:4500,5250``."""
    return name if edges is None else f"{name}:{','.join(f'{e:g}' for e in edges)}"


GATE_EXPECTED = (
    "gate features: snr, error, pca:K and per-spectrum variables, comma-separated, e.g. snr,pca:4"
)


def gate_features(value) -> str:
    """A gate feature spec (:mod:`snr_moe_dask.kernels.gate_features`), canonical."""
    if isinstance(value, bool) or not isinstance(value, str | list | tuple):
        raise Invalid(GATE_EXPECTED)
    try:
        return ",".join(parse_features(value))
    except ValueError:
        raise Invalid(GATE_EXPECTED) from None


gate_features.expected = GATE_EXPECTED
gate_features.yaml_types = (str, list)


def gate(value):
    """``True``/``False``, or a gate feature spec (``"snr"``, ``"error,pca:4"``)."""
    if isinstance(value, bool):
        return value
    try:
        return gate_features(value)
    except Invalid:
        raise Invalid(f"true, false or {GATE_EXPECTED}") from None


gate.expected = f"true, false or {GATE_EXPECTED}"
