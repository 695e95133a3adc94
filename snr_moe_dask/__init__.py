"""SNR-binned mixture-of-experts ridge regression on millions of spectra, with Dask.

The public API: :class:`SNRBinnedRidge` (the estimator), :func:`load_model`,
:func:`evaluate_model`, :func:`predict_spectra`, :func:`open_spectra`,
:func:`write_spectra`, :func:`ingest_spectra`, :func:`generate_survey`,
:func:`survey_dataset` and :class:`StoreError`.
"""

from __future__ import annotations

from . import options as _options  # noqa: F401  (registers the dask.config defaults)
from .store.rows import StoreError
from .version import __version__

__all__ = [
    "SNRBinnedRidge",
    "StoreError",
    "evaluate_model",
    "generate_survey",
    "ingest_spectra",
    "load_model",
    "open_spectra",
    "predict_spectra",
    "survey_dataset",
    "write_spectra",
    "__version__",
]

_LAZY = {
    "SNRBinnedRidge": ("model", "SNRBinnedRidge"),
    "load_model": ("model", "load_model"),
    "evaluate_model": ("evaluation.graph", "evaluate_model"),
    "open_spectra": ("store.schema", "open_spectra"),
    "write_spectra": ("store.writer", "write_spectra"),
    "ingest_spectra": ("ingest.graph", "ingest_spectra"),
    "predict_spectra": ("predict.output", "predict_spectra"),
    "generate_survey": ("survey.generate", "generate_survey"),
    "survey_dataset": ("survey.generate", "survey_dataset"),
}


def __getattr__(name: str):
    """Import the public API on first use: a worker unpickling a task imports this
    package, and its tasks need neither xarray nor scikit-learn."""
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
