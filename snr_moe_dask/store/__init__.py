"""Stores: the spectra schema (open, validate, write), fingerprints, the
worker-side chunk reader, atomic outputs with their markers, and checkpoints.

``rows``, ``blocks``, ``outputs`` and ``checkpoint`` run on workers and need only numpy
and zarr; ``schema`` and ``fingerprint`` are the client's (xarray, dask).
"""
