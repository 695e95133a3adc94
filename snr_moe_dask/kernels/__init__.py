"""Numpy kernels: binning, SNR and bad pixels, quality features, sufficient
statistics and their merge, ridge solvers, cross-validation, metrics, the
mixture's routing and the gate's maths.

They take and return numpy arrays and never import dask or xarray, so a
worker running a task imports only what its kernels need.
"""
