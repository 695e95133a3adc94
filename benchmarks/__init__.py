"""Benchmarks of the SNR-binned ridge fit against the BLAS limit, scikit-learn and dask-ml.

``python -m benchmarks --help`` for the harness, ``python -m benchmarks.report``
for the tables and the scaling plot. Nothing is imported here, so the report
can run without dask.
"""
