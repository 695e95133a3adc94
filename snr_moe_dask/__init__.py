"""SNR-binned mixture-of-experts ridge regression on millions of spectra, with Dask."""

from __future__ import annotations

from . import config as _config  # noqa: F401  (registers the dask.config defaults)
from .generate import generate_survey, survey_dataset
from .io import StoreError, open_spectra

__version__ = "0.1.0"

__all__ = ["StoreError", "generate_survey", "open_spectra", "survey_dataset", "__version__"]
