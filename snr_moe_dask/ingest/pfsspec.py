"""Read the source study's pfsspec HDF5 shards, and add its noise (numpy in, numpy out).

The layout
----------
One shard is one ``dataset.h5`` (up to 19 GB), so rows are read as HDF5
hyperslabs and nothing here reads a whole array:

==============================  ==============  ====================================
path in the file                shape           meaning
==============================  ==============  ====================================
``spectrumdataset/wave``        (n_pixels,)     wavelength, Angstrom (7100-8850 for
                                                the medium-resolution red arm)
``dataset/arrays/flux/value``   (n, n_pixels)   noiseless model flux
``dataset/arrays/error/value``  (n, n_pixels)   1-sigma error
``dataset/params``              n rows          labels: a pandas (PyTables) table,
                                                ``pandas.read_hdf(path, "dataset/params")``
==============================  ==============  ====================================

The table's columns map to the store's names by :data:`LABEL_COLUMNS`
(``T_eff`` -> ``teff``, ``log_g`` -> ``logg``, ``M_H`` -> ``mh``, the table's
own ``snr`` -> ``snr_table`` so that it cannot be taken for the store's true
``snr``, the others lower-cased). ``T_eff``, ``log_g`` and ``M_H`` are
required; a missing optional column reads as NaN.

The noise model and the SNR definitions are :mod:`snr_moe_dask.ingest.noise`'s;
they are imported here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .files import IngestError, check_file, check_rows, read_head
from .noise import (  # noqa: F401  (the readers' public names)
    SNR_DEFINITIONS,
    check_noise_level,
    draw_noise,
    fill_nan_errors,
    median_ignoring,
    noisy_flux,
    spectrum_rng,
    true_snr,
)
from .resample import find_non_increasing

WAVE_PATH = "spectrumdataset/wave"
FLUX_PATH = "dataset/arrays/flux/value"
ERROR_PATH = "dataset/arrays/error/value"
PARAMS_KEY = "dataset/params"
LABEL_COLUMNS = {
    "T_eff": "teff",
    "log_g": "logg",
    "M_H": "mh",
    "a_M": "a_m",
    "C_M": "c_m",
    "mag": "mag",
    "snr": "snr_table",
    "redshift": "redshift",
}
REQUIRED_COLUMNS = ("T_eff", "log_g", "M_H")
KIND = "pfsspec shard"


@dataclass(frozen=True)
class ShardInfo:
    """What :func:`scan_shard` found in a pfsspec shard.

    Attributes
    ----------
    path : str
    n_spectra, n_pixels : int
    wavelength : ndarray of shape (n_pixels,)
        float64, Angstrom, strictly increasing.
    flux_dtype : numpy.dtype
        The stored flux dtype (the error's is checked to be floating too).
    columns : tuple of str
        The label columns of :data:`LABEL_COLUMNS` the table has.
    missing_columns : tuple of str
        The optional ones it lacks (read as NaN).
    """

    path: str
    n_spectra: int
    n_pixels: int
    wavelength: np.ndarray
    flux_dtype: np.dtype
    columns: tuple[str, ...]
    missing_columns: tuple[str, ...]


# --------------------------------------------------------------------------- layout


def _fail(path: Path, what: str, fix: str) -> IngestError:
    return IngestError(f"{KIND} {str(path)!r} {what}; {fix}")


def _dataset(f: h5py.File, name: str, path: Path, meaning: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise _fail(
            path,
            f"has no dataset {name!r} ({meaning}); its top-level groups are {sorted(f)}",
            "pass a pfsspec dataset.h5 (spectrumdataset/wave, dataset/arrays/{flux,error}/value, "
            "dataset/params)",
        )
    return obj


# --------------------------------------------------------------------------- scan


def scan_shard(path: str | os.PathLike) -> ShardInfo:
    """Check a pfsspec shard's layout cheaply and describe it.

    Reads the wavelength grid, the datasets' shapes and the label table's
    row count and columns; no flux or error values.

    Parameters
    ----------
    path : str or path-like
        A pfsspec ``dataset.h5``.

    Returns
    -------
    ShardInfo

    Raises
    ------
    IngestError
        With one line naming the file, what is wrong and the fix: a missing
        or empty file, not HDF5, a missing dataset or table, mismatched
        shapes between wave, flux, error and params, a wavelength grid that
        is not finite and strictly increasing, 0 spectra or 0 pixels, or a
        missing required label column.
    """
    p = check_file(path, KIND)
    if not h5py.is_hdf5(p):
        raise _fail(
            p,
            f"is not an HDF5 file (it starts with {read_head(p)!r})",
            "pass a pfsspec dataset.h5; FITS pipeline products are read by ingest.pfs",
        )
    try:
        with h5py.File(p, "r") as f:
            wave_ds = _dataset(f, WAVE_PATH, p, "the wavelength grid (n_pixels,) in Angstrom")
            flux_ds = _dataset(f, FLUX_PATH, p, "the noiseless flux (n, n_pixels)")
            error_ds = _dataset(f, ERROR_PATH, p, "the 1-sigma error (n, n_pixels)")
            if PARAMS_KEY not in f:
                raise _fail(
                    p,
                    f"has no label table {PARAMS_KEY!r}",
                    "the shard's labels must be a pandas table at key 'dataset/params' "
                    "(DataFrame.to_hdf(path, key='dataset/params', format='table'))",
                )
            check_arrays(p, wave_ds, flux_ds, error_ds)
            wave = np.asarray(wave_ds[()], dtype=np.float64)
            flux_dtype = flux_ds.dtype
            n_spectra, n_pixels = flux_ds.shape
    except OSError as exc:
        raise _fail(
            p, f"cannot be read as HDF5 ({exc})", "the file may be truncated: copy it again"
        ) from None
    n_rows, columns = scan_params(p)
    if n_rows != n_spectra:
        raise _fail(
            p,
            f"has {n_spectra} spectra in {FLUX_PATH!r} but {n_rows} rows in {PARAMS_KEY!r}",
            "flux, error and params must have one row per spectrum: rewrite the shard",
        )
    check_wave(p, wave)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise _fail(
            p,
            f"has no column {missing[0]!r} in {PARAMS_KEY!r} (its columns are {columns})",
            f"the table needs {list(REQUIRED_COLUMNS)}; rename the label columns",
        )
    return ShardInfo(
        path=str(p),
        n_spectra=n_spectra,
        n_pixels=n_pixels,
        wavelength=wave,
        flux_dtype=flux_dtype,
        columns=tuple(c for c in LABEL_COLUMNS if c in columns),
        missing_columns=tuple(c for c in LABEL_COLUMNS if c not in columns),
    )


def check_arrays(p: Path, wave_ds, flux_ds, error_ds) -> None:
    """Check the wave, flux and error datasets' ranks, shapes and dtypes (metadata only)."""
    if wave_ds.ndim != 1:
        raise _fail(
            p,
            f"has {WAVE_PATH!r} of shape {wave_ds.shape}; expected (n_pixels,)",
            "the wavelength grid must be one shared 1-D array",
        )
    if flux_ds.ndim != 2:
        raise _fail(
            p,
            f"has {FLUX_PATH!r} of shape {flux_ds.shape}; expected (n_spectra, n_pixels)",
            "rewrite the shard with one row per spectrum",
        )
    if error_ds.shape != flux_ds.shape:
        raise _fail(
            p,
            f"has {ERROR_PATH!r} of shape {error_ds.shape} but {FLUX_PATH!r} of {flux_ds.shape}",
            "flux and error must have the same shape: rewrite the shard",
        )
    if flux_ds.shape[1] != wave_ds.shape[0]:
        raise _fail(
            p,
            f"has {flux_ds.shape[1]} pixels per spectrum in {FLUX_PATH!r} but "
            f"{wave_ds.shape[0]} wavelengths in {WAVE_PATH!r}",
            "flux rows and the wavelength grid must have the same length",
        )
    if 0 in flux_ds.shape:
        none = "spectra" if flux_ds.shape[0] == 0 else "pixels"
        raise _fail(
            p,
            f"has no {none} ({FLUX_PATH!r} has shape {flux_ds.shape})",
            "leave empty shards out of the ingest list",
        )
    for name, ds in ((FLUX_PATH, flux_ds), (ERROR_PATH, error_ds), (WAVE_PATH, wave_ds)):
        if ds.dtype.kind != "f":
            raise _fail(
                p,
                f"has {name!r} of dtype {ds.dtype}; expected floating point",
                "rewrite the shard with float32 or float64 arrays",
            )


def check_wave(p: Path, wave: np.ndarray) -> None:
    """Raise unless the wavelength grid is finite and strictly increasing."""
    where = find_non_increasing(wave)
    if where is not None:
        pixel = where[1]
        before = f"{float(wave[pixel - 1])!r} then " if pixel > 0 else ""
        raise _fail(
            p,
            f"has a wavelength grid {WAVE_PATH!r} that is not finite and strictly increasing "
            f"at pixel {pixel} ({before}{float(wave[pixel])!r})",
            "the wavelength grid must be sorted, without NaN or repeated values",
        )


def scan_params(p: Path) -> tuple[int, list[str]]:
    """Return the label table's row count and columns without reading its rows."""
    import pandas as pd  # client side only: a worker reading pixels does not import it

    try:
        with pd.HDFStore(p, mode="r") as store:
            storer = store.get_storer(PARAMS_KEY)
            n_rows = int(storer.nrows if storer.is_table else storer.shape[0])
            columns = [str(c) for c in store.select(PARAMS_KEY, start=0, stop=0).columns]
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise _fail(
            p,
            f"has a {PARAMS_KEY!r} that is not a pandas table ({type(exc).__name__}: {exc})",
            "write the labels with DataFrame.to_hdf(path, key='dataset/params', format='table')",
        ) from None
    return n_rows, columns


# --------------------------------------------------------------------------- read


def read_shard(
    path: str | os.PathLike, start: int, stop: int, *, info: ShardInfo | None = None
) -> dict[str, np.ndarray]:
    """Read rows ``[start, stop)`` of a pfsspec shard: noiseless flux, error and labels.

    Only those rows are read (HDF5 hyperslabs and a PyTables row range).

    Parameters
    ----------
    path : str or path-like
    start, stop : int
        Row range, ``0 <= start <= stop <= n_spectra``.
    info : ShardInfo, optional
        The shard's :func:`scan_shard`, to skip scanning it again.

    Returns
    -------
    dict
        ``flux`` (noiseless) and ``error``, shape (stop - start, n_pixels),
        in the stored floating dtype (at least float32), native byte order;
        ``wavelength`` (n_pixels,) float64 Angstrom; and one float64 array of
        shape (stop - start,) per label, named by :data:`LABEL_COLUMNS`'s
        values (NaN for a column the table lacks).

    Raises
    ------
    IngestError
        For a bad file (see :func:`scan_shard`) or rows outside the shard.
    """
    info = scan_shard(path) if info is None else info
    out = read_pixels(info, start, stop)
    out.update(read_labels(Path(info.path), start, stop, info))
    return out


def read_pixels(info: ShardInfo, start: int, stop: int) -> dict[str, np.ndarray]:
    """Read rows ``[start, stop)`` of a scanned shard's noiseless flux and error only.

    What an ingest task reads (h5py hyperslabs; no pandas): the labels are read
    on the client when the store is planned.

    Returns
    -------
    dict
        ``flux``, ``error`` of shape (stop - start, n_pixels) in the stored
        floating dtype (at least float32), native byte order, and
        ``wavelength`` (n_pixels,) float64 Angstrom.
    """
    p = Path(info.path)
    check_rows(p, start, stop, info.n_spectra, KIND)
    with h5py.File(p, "r") as f:
        flux = f[FLUX_PATH][start:stop]
        error = f[ERROR_PATH][start:stop]
    return {
        "flux": flux.astype(np.result_type(flux.dtype, np.float32), copy=False),
        "error": error.astype(np.result_type(error.dtype, np.float32), copy=False),
        "wavelength": info.wavelength,
    }


def read_labels(p: Path, start: int, stop: int, info: ShardInfo) -> dict[str, np.ndarray]:
    """Read rows ``[start, stop)`` of the label table, renamed to the store's names."""
    import pandas as pd

    table = pd.read_hdf(p, PARAMS_KEY, start=start, stop=stop)
    labels = {}
    for column, name in LABEL_COLUMNS.items():
        if column in table.columns:
            labels[name] = table[column].to_numpy(dtype=np.float64)
        else:
            labels[name] = np.full(stop - start, np.nan)
    return labels
