"""The mock survey: the numpy generator (``mock``) and its Dask graph (``generate``)."""
