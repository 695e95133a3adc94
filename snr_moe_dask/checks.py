"""The checks of setting values: each takes a value (from Python, an experiment YAML
or, as text, the command line) and returns it converted, or raises
:class:`Invalid` saying what the setting takes. :mod:`snr_moe_dask.options`
gives every setting one of these."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any


class Invalid(ValueError):
    """A value outside what an option takes; ``expected`` says what it takes."""

    def __init__(self, expected: str, choices: tuple | None = None):
        super().__init__(expected)
        self.expected = expected
        self.choices = choices


# ---------------------------------------------------------------------- checks
# Each takes a value (from Python, YAML or, through ``text``, the command line)
# and returns it converted, or raises Invalid.


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    bound = (
        f" in [{low}, {high}]"
        if low is not None and high is not None
        else f" >= {low}"
        if low is not None
        else ""
    )
    expected = f"an integer{bound}"

    def check(value) -> int:
        if isinstance(value, bool):
            raise Invalid(expected)
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise Invalid(expected) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or (low is not None and value < low):
            raise Invalid(expected)
        if high is not None and value > high:
            raise Invalid(expected)
        return int(value)

    check.expected = expected
    check.yaml_types = (int,)
    return check


def number(
    low: float | None = None, high: float | None = None, *, above: bool = False
) -> Callable[[Any], float]:
    """A finite float; ``low`` <= value (< with ``above``) <= ``high``."""
    if low is not None and high is not None:
        expected = f"in [{low:g}, {high:g}]"
    elif low is not None:
        expected = f"a finite number {'>' if above else '>='} {low:g}"
    else:
        expected = "a finite number"

    def check(value) -> float:
        if isinstance(value, bool):
            raise Invalid(expected)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise Invalid(expected) from None
        ok = math.isfinite(value)
        ok = ok and (low is None or (value > low if above else value >= low))
        ok = ok and (high is None or value <= high)
        if not ok:
            raise Invalid(expected)
        return value

    check.expected = expected
    check.yaml_types = (int, float)
    return check


def choice(*values: str) -> Callable[[Any], str]:
    expected = f"one of {values}"

    def check(value) -> str:
        if value not in values:
            raise Invalid(expected, choices=values)
        return value

    check.expected = expected
    check.choices = values
    check.yaml_types = (str,)
    return check


def boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise Invalid("true or false")


boolean.expected = "true or false"
boolean.yaml_types = (bool,)


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("a non-empty string")
    return value


text.expected = "a non-empty string"
text.yaml_types = (str,)


def optional(check: Callable) -> Callable:
    """``check``, or None."""

    def wrapped(value):
        return None if value is None else check(value)

    wrapped.expected = f"{check.expected} (or null)"
    wrapped.yaml_types = getattr(check, "yaml_types", None)
    return wrapped


def _items(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    try:
        return list(value)  # numpy arrays and other sequences
    except TypeError:
        raise Invalid("a list") from None


def number_list(value) -> list[float]:
    expected = "finite numbers, e.g. 2,4,7"
    try:
        out = [float(v) for v in _items(value)]
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not all(math.isfinite(v) for v in out):
        raise Invalid(expected)
    return out


number_list.expected = "finite numbers, e.g. 2,4,7"
number_list.yaml_types = (list,)


def name_list(value) -> list[str]:
    out = [str(v) for v in _items(value)]
    if not out or not all(out):
        raise Invalid("names, e.g. X,L,M,H")
    return out


name_list.expected = "names, e.g. X,L,M,H"
name_list.yaml_types = (list,)


def targets(value) -> list[str]:
    """One label or several: ``logg``, ``[logg, teff]`` or ``logg,teff``."""
    names = [value] if isinstance(value, str) and "," not in value else _items(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise Invalid("a label name or a list of them, e.g. logg")
    if len(set(names)) != len(names):
        raise Invalid("label names without repeats")
    return list(names)


targets.expected = "a label name or a list of them, e.g. logg"
targets.yaml_types = (str, list)

ALPHA_METHODS = ("cv", "gcv")


def alpha(value):
    """A penalty: a number >= 0, ``{expert: number}``, ``"cv"`` or ``"gcv"``, or on the
    command line ``1e5``, ``cv``, ``gcv`` or ``global=1e5,X=1e6``."""
    expected = 'a finite number >= 0, a mapping of expert names to such numbers, "cv" or "gcv"'
    if isinstance(value, str):
        value = value.strip()
        if value in ALPHA_METHODS:
            return value
        if "=" in value:
            pairs = [p.partition("=") for p in value.split(",") if p.strip()]
            value = {k.strip(): v for k, _, v in pairs}
    if isinstance(value, dict):
        try:
            out = {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise Invalid(expected) from None
        if not out or not all(math.isfinite(v) and v >= 0 for v in out.values()):
            raise Invalid(expected)
        return out
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if isinstance(value, bool) or not (math.isfinite(out) and out >= 0):
        raise Invalid(expected)
    return out


alpha.expected = 'a finite number >= 0, a mapping of expert names to such numbers, "cv" or "gcv"'
alpha.yaml_types = (int, float, dict, str)


def alpha_grid(value) -> list[float]:
    """``START:STOP:NUM`` (log-spaced, inclusive), a list, or ``[start, stop, num]`` in
    ``dask.config``; positive finite values."""
    import numpy as np

    expected = "positive finite alphas: START:STOP:NUM (log-spaced) or a list a,b,c"
    if isinstance(value, str) and ":" in value:
        try:
            start, stop, num = value.split(":")
            value = np.geomspace(float(start), float(stop), int(num)).tolist()
        except (TypeError, ValueError):
            raise Invalid(expected) from None
    try:
        out = [float(v) for v in _items(value)]
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise Invalid(expected)
    return out


alpha_grid.expected = "positive finite alphas: START:STOP:NUM (log-spaced) or a list a,b,c"
alpha_grid.yaml_types = (list, str)

ROUTINGS = ("oracle", "observed", "learned", "soft")
FIT_ROUTINGS = ("oracle", "observed")


def _grid_from_config(value):
    """``snr-moe.fit.cv.grid`` is ``[start, stop, num]`` (a log grid)."""
    if isinstance(value, list | tuple) and len(value) == 3:
        return f"{value[0]}:{value[1]}:{int(value[2])}"
    return value


def folds(value) -> int:
    try:
        return integer(2)(value)
    except Invalid:
        raise Invalid("an integer >= 2 (cross-validation needs at least 2 folds)") from None


folds.expected = "an integer >= 2 (cross-validation needs at least 2 folds)"
folds.yaml_types = (int,)


def routings(value) -> list[str]:
    """One or more routings, ``"oracle,soft"`` or a list, without repeats."""
    names = list(dict.fromkeys(str(n).strip() for n in _items(value) if str(n).strip()))
    if not names or any(n not in ROUTINGS for n in names):
        raise Invalid(f"routings among {list(ROUTINGS)}", choices=ROUTINGS)
    return names


routings.expected = f"routings among {list(ROUTINGS)}"
routings.yaml_types = (str, list)


def cluster_kind(value) -> str:
    expected = "local, slurm, pbs or a scheduler address like tcp://host:8786"
    if not isinstance(value, str):
        raise Invalid(expected)
    if value in ("local", "slurm", "pbs"):
        return value
    scheme, sep, rest = value.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep and scheme in ("tcp", "tls") and colon and host and port.isdigit():
        return value
    raise Invalid(expected)


cluster_kind.expected = "local, slurm, pbs or a scheduler address like tcp://host:8786"
cluster_kind.yaml_types = (str,)


def existing_file(value) -> str:
    if not isinstance(value, str | os.PathLike) or not os.path.isfile(value):
        raise Invalid("the path of an existing file")
    return str(value)


existing_file.expected = "the path of an existing file"
existing_file.yaml_types = (str,)


def memory(value):
    """``auto``, a byte count, or a size such as ``4GB``."""
    from dask.utils import parse_bytes

    if value == "auto":
        return value
    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise Invalid("auto, a number of bytes or a size like 4GB") from None
    if isinstance(value, bool) or n <= 0:
        raise Invalid("auto, a number of bytes or a size like 4GB")
    return value


memory.expected = "auto, a number of bytes or a size like 4GB"
memory.yaml_types = (str, int)


def adapt(value) -> tuple[int, int]:
    expected = "MIN,MAX with 0 <= MIN <= MAX jobs"
    try:
        low, high = (int(float(v)) for v in _items(value))
    except (TypeError, ValueError):
        raise Invalid(expected) from None
    if not 0 <= low <= high:
        raise Invalid(expected)
    return low, high


adapt.expected = "MIN,MAX with 0 <= MIN <= MAX jobs"
adapt.yaml_types = (list, str)


def duration(value) -> float:
    """Seconds, or a duration such as ``30s`` or ``2min``."""
    from dask.utils import parse_timedelta

    try:
        out = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError):
        raise Invalid("a duration such as 30s") from None
    if not (math.isfinite(out) and out > 0):
        raise Invalid("a duration such as 30s")
    return out


duration.expected = "a duration such as 30s"


def predict_routing(value) -> str:
    """A routing for spectra without labels: soft, learned or observed."""
    if value in ("soft", "learned", "observed"):
        return value
    raise Invalid(PREDICT_ROUTING, choices=("soft", "learned", "observed"))


PREDICT_ROUTING = (
    "soft, learned or observed (oracle routing needs each spectrum's true SNR, which "
    "observed spectra do not have)"
)
predict_routing.expected = PREDICT_ROUTING
predict_routing.choices = ("soft", "learned", "observed")
predict_routing.yaml_types = (str,)
