"""The package version, in one place (the model store and output markers record it)."""

__version__ = "0.1.0"
