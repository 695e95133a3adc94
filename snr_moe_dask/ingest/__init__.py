"""Readers that turn real spectra files into the project's store schema, chunk by chunk.

Each module is pure numpy in, numpy out (no Dask, no xarray), so an ingest
graph can call it once per chunk of spectra:

:mod:`snr_moe_dask.ingest.pfsspec`
    The source study's pfsspec HDF5 shards (``dataset.h5``): noiseless model
    flux, errors and labels.
:mod:`snr_moe_dask.ingest.noise`
    The study's noise model (:func:`~snr_moe_dask.ingest.noise.noisy_flux`,
    one random stream per spectrum) and its two SNR definitions.
:mod:`snr_moe_dask.ingest.pfs`
    Subaru-PFS pipeline products in FITS (pfsArm, pfsMerged, pfsObject and
    pfsSingle, as the Subaru-PFS datamodel defines them); their headers and
    identities (:mod:`~snr_moe_dask.ingest.pfs_header`) and wavelengths
    (:mod:`~snr_moe_dask.ingest.pfs_wave`).
:mod:`snr_moe_dask.ingest.resample`
    Linear and flux-conserving resampling of spectra on their own wavelength
    grids onto the store's one grid, with errors and bad pixels.
:mod:`snr_moe_dask.ingest.graph` and :mod:`snr_moe_dask.ingest.tasks`
    ``snr-moe ingest``: the plan (every source scanned on the client), the
    template store and one task per output chunk.

Every bad file raises :class:`snr_moe_dask.ingest.files.IngestError` (a
``ValueError``), whose one-line message names the file, what is wrong and
the fix; the checks run in the cheap ``scan_*`` step, before heavy reads.
The heavy libraries (h5py, pandas with PyTables, astropy) come with the
``ingest`` extra: ``pip install -e ".[ingest]"``. This package's ``__init__``
imports none of them.
"""
