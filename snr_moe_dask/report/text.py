"""Text helpers of the report and its figures: labels, number formats, and finding
values (bins in SNR order, confidence intervals) in the metrics mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DASH = "–"
_TARGET_LABELS = {"logg": "log g", "teff": "Teff", "mh": "[M/H]"}


def label_target(target: str | None) -> str:
    """Return the human-readable name of a regression target.

    Parameters
    ----------
    target : str or None
        Target key as stored in the metrics, e.g. ``"logg"``.

    Returns
    -------
    str
        ``"log g"``, ``"Teff"``, ``"[M/H]"``, or the key itself when unknown.
    """
    if not target:
        return "target"
    return _TARGET_LABELS.get(str(target).lower(), str(target))


def format_snr_range(low: float | None, high: float | None, *, compact: bool = False) -> str:
    """Describe the SNR interval ``low < SNR <= high`` of one bin.

    Parameters
    ----------
    low, high : float or None
        Bin edges; ``None`` means unbounded on that side.
    compact : bool, default False
        Drop the spaces, for tight axis tick labels.

    Returns
    -------
    str
        For example ``"SNR ≤ 2"``, ``"2 < SNR ≤ 4"`` or ``"SNR > 7"``.
    """
    if low is None and high is None:
        text = "all SNR"
    elif low is None:
        text = f"SNR ≤ {high:g}"
    elif high is None:
        text = f"SNR > {low:g}"
    else:
        text = f"{low:g} < SNR ≤ {high:g}"
    return text.replace(" ", "") if compact else text


def sample_name(metrics: Mapping[str, Any], *, spectra: bool = False) -> str:
    """What the evaluation scored: the test set, or (when allowed) the training set."""
    word = "training" if metrics.get("test_is_training_set") else "test"
    return f"{word} spectra" if spectra else f"{word} set"


def is_missing(value: Any) -> bool:
    """Return True for ``None`` and NaN, the two ways JSON can carry "no value"."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def name_model(routing: str | None) -> str:
    """Return the display name of the mixture, e.g. ``"Oracle MoE"``."""
    return f"{str(routing or 'routed').capitalize()} MoE"


def is_keyed(metrics: Mapping[str, Any]) -> bool:
    """Whether the experts are cells of keys other than one SNR (their bins carry no
    ``snr_low``)."""
    return any("snr_low" not in b for b in metrics.get("bins") or [])


def cell_label(b: Mapping[str, Any]) -> str:
    """A cell's name for a markdown table: ``|`` escaped, since it separates columns."""
    return str(b.get("name")).replace("|", "\\|")


def order_bins(bins: Sequence[Mapping[str, Any]], *, descending: bool = False) -> list[dict]:
    """Sort bins by SNR, lowest first unless ``descending``; cells of other keys stay
    in their (cell index) order.

    The source study lists bins from high to low SNR in tables but plots them
    along an increasing SNR axis, so both orders are needed.
    """
    if any("snr_low" not in b for b in bins):
        return [dict(b) for b in bins]

    def key(b: Mapping[str, Any]) -> float:
        low = b.get("snr_low")
        return -math.inf if low is None else float(low)

    return sorted((dict(b) for b in bins), key=key, reverse=descending)


def find_bin_ci(metrics: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float] | None:
    """Return the 95 % CI of one bin's ΔR², or None when it is unknown.

    The CI may be stored on the bin itself or in the top-level
    ``delta_r2_ci95`` mapping; the bin's own value wins.
    """
    ci = b.get("delta_r2_ci95")
    if ci is None:
        ci = (metrics.get("delta_r2_ci95") or {}).get(b.get("name"))
    return _clean_ci(ci)


def find_overall_ci(metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    """Return the 95 % CI of the overall ΔR², or None when it is unknown."""
    return _clean_ci((metrics.get("delta_r2_ci95") or {}).get("overall"))


def find_overall_delta(metrics: Mapping[str, Any]) -> float:
    """Return the overall ΔR² (MoE minus global), NaN when unknown."""
    overall = metrics.get("overall") or {}
    delta = overall.get("delta_r2")
    if is_missing(delta):
        r2_g, r2_m = overall.get("r2_global"), overall.get("r2_moe")
        if is_missing(r2_g) or is_missing(r2_m):
            return math.nan
        return float(r2_m) - float(r2_g)
    return float(delta)


def _clean_ci(ci: Any) -> tuple[float, float] | None:
    if ci is None or len(ci) != 2 or is_missing(ci[0]) or is_missing(ci[1]):
        return None
    return float(ci[0]), float(ci[1])


def as_float(value: Any) -> float:
    return math.nan if is_missing(value) else float(value)


def format_r2(value: Any) -> str:
    """Format an R², MAE or RMSE with 4 decimals, or a dash when missing."""
    return DASH if is_missing(value) else f"{float(value):.4f}"


def format_delta(value: Any) -> str:
    """Format a difference with an explicit sign and 4 decimals."""
    return DASH if is_missing(value) else f"{float(value):+.4f}"


def format_count(value: Any) -> str:
    """Format a count with thousands separators."""
    return DASH if is_missing(value) else f"{int(value):,}"


def format_ci(ci: tuple[float, float] | None) -> str:
    """Format a CI as ``[+lo, +hi]``."""
    return DASH if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def format_alpha(value: Any) -> str:
    """Format a ridge penalty compactly (``100000``, ``3e+06``)."""
    return DASH if is_missing(value) else f"{float(value):g}"


def describe_bin(b: Mapping[str, Any]) -> str:
    """A bin's name and SNR range, e.g. ``M (4 < SNR ≤ 7)``; a cell of other keys by its
    name, which holds its ranges (``teff(4500,5250]|mh(-1,0]``)."""
    if "snr_low" not in b:
        return f"`{b.get('name')}`"
    return f"{b.get('name')} ({format_snr_range(b.get('snr_low'), b.get('snr_high'))})"


def describe_keys(metrics: Mapping[str, Any]) -> str:
    """The keys of the cells, e.g. ``teff × mh (3 × 3 = 9 cells)``."""
    keys = metrics.get("keys") or []
    shape = metrics.get("grid_shape") or [len(k.get("edges", [])) + 1 for k in keys]
    names = " × ".join(str(k.get("name")) for k in keys) or "the keys"
    n = math.prod(shape) if shape else len(metrics.get("bins") or [])
    sizes = " × ".join(str(s) for s in shape)
    return f"{names} ({sizes} = {n} cells)" if len(shape) > 1 else f"{names} ({n} cells)"
