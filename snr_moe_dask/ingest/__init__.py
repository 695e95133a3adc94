"""Readers that turn real spectra files into the project's store schema, chunk by chunk.

Each module is pure numpy in, numpy out (no Dask, no xarray), so an ingest
graph can call it once per chunk of spectra:

:mod:`snr_moe_dask.ingest.pfsspec`
    The source study's pfsspec HDF5 shards (``dataset.h5``): noiseless model
    flux, errors and labels; the study's noise model (:func:`noisy_flux`,
    one random stream per spectrum) and its two SNR definitions.
:mod:`snr_moe_dask.ingest.pfs`
    Subaru-PFS pipeline products in FITS (pfsArm, pfsMerged, pfsObject and
    pfsSingle, as the Subaru-PFS datamodel defines them).
:mod:`snr_moe_dask.ingest.resample`
    Linear and flux-conserving resampling of spectra on their own wavelength
    grids onto the store's one grid, with errors and bad pixels.

Every bad file raises :class:`snr_moe_dask.ingest.pfsspec.IngestError` (a
``ValueError``), whose one-line message names the file, what is wrong and
the fix; the checks run in the cheap ``scan_*`` step, before heavy reads.
The heavy libraries (h5py, pandas with PyTables, astropy) come with the
``ingest`` extra: ``pip install -e ".[ingest]"``. This package's ``__init__``
imports none of them.
"""
