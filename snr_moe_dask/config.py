"""Package defaults, registered with :mod:`dask.config`.

Every public function takes ``None`` for a setting it can look up here, and
resolves it at call time, so ``dask.config.set`` and environment variables apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

_DEFAULTS_FILE = Path(__file__).with_name("snr_moe_dask.yaml")


def _register_defaults() -> None:
    with open(_DEFAULTS_FILE) as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def get_setting(key: str, value: Any = None) -> Any:
    """Return ``value`` unless it is ``None``, else the config value under ``snr-moe.key``.

    Parameters
    ----------
    key : str
        Dotted key below ``snr-moe``, e.g. ``"fit.alpha"``.
    value : object, optional
        An explicit value, which wins over the config.
    """
    if value is not None:
        return value
    return dask.config.get(f"snr-moe.{key}")


_register_defaults()
