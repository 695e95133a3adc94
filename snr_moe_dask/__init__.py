"""SNR-binned mixture-of-experts ridge regression on millions of spectra, with Dask."""

from __future__ import annotations

from . import config as _config  # noqa: F401  (registers the dask.config defaults)
from .rows import StoreError

__version__ = "0.1.0"

__all__ = ["StoreError", "generate_survey", "open_spectra", "survey_dataset", "__version__"]


def __getattr__(name: str):
    """Import the store functions on first use: a worker unpickling a task
    imports this package, and its tasks need neither xarray nor dask.array."""
    if name in ("generate_survey", "survey_dataset"):
        from . import generate

        return getattr(generate, name)
    if name == "open_spectra":
        from .io import open_spectra

        return open_spectra
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
