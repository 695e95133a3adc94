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

The noise
---------
The study made its noisy spectra at load time; :func:`noisy_flux` does the
same: the noiseless flux is clipped at 0, NaN errors are filled from the
neighbouring pixel (:func:`fill_nan_errors`), and
``flux + noise_level * error * N(0, 1)`` is rounded once to float32.
Spectrum ``i`` of a shard (its global row index) draws its float32 normals
from its own stream, ``default_rng(SeedSequence(seed, spawn_key=(i,)))``,
the scheme of the project's mock generator, so any chunking of a shard gives
the same bytes.

The SNR
-------
:func:`true_snr` computes the two definitions, over the pixels whose flux
is finite and whose error is finite and positive:

``"median"``
    the median over pixels of noiseless flux / error, the store's ``snr``
    (as the mock generator computes it; ``noise_level`` plays no part);
``"norm"``
    ``||flux|| / ||error * noise_level||``, the study's oracle SNR
    (``||flux|| / ||error||`` when ``noise_level`` is 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

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
SNR_DEFINITIONS = ("median", "norm")
KIND = "pfsspec shard"


class IngestError(ValueError):
    """A source file cannot be ingested; the message names the file, what is wrong and the fix."""


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


# --------------------------------------------------------------------------- files


def check_file(path: str | os.PathLike, kind: str) -> Path:
    """Return ``path`` as a Path after checking that it is a non-empty regular file.

    Parameters
    ----------
    path : str or path-like
    kind : str
        What the file should be, for the message (``"pfsspec shard"``).

    Raises
    ------
    IngestError
        If the path does not exist, is not a file, or has 0 bytes.
    """
    p = Path(path)
    if not p.exists():
        raise IngestError(f"{kind} {str(p)!r} does not exist; check the path")
    if not p.is_file():
        raise IngestError(f"{kind} {str(p)!r} is not a regular file; pass the file, not a folder")
    if p.stat().st_size == 0:
        raise IngestError(
            f"{kind} {str(p)!r} is empty (0 bytes); the copy or download was interrupted: "
            "copy the file again"
        )
    return p


def read_head(path: Path, size: int = 16) -> bytes:
    """Return the first ``size`` bytes of a file, for messages about what it is."""
    with open(path, "rb") as fh:
        return fh.read(size)


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


def check_rows(p: Path, start: int, stop: int, n_spectra: int, kind: str) -> None:
    """Raise unless ``0 <= start <= stop <= n_spectra`` are integers."""
    ok = isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
    if not ok or not 0 <= start <= stop <= n_spectra:
        raise IngestError(
            f"{kind} {str(p)!r} has {n_spectra} spectra, so rows [{start!r}, {stop!r}) cannot "
            f"be read; use integers 0 <= start <= stop <= {n_spectra}"
        )


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
    p = Path(info.path)
    check_rows(p, start, stop, info.n_spectra, KIND)
    with h5py.File(p, "r") as f:
        flux = f[FLUX_PATH][start:stop]
        error = f[ERROR_PATH][start:stop]
    out = {
        "flux": flux.astype(np.result_type(flux.dtype, np.float32), copy=False),
        "error": error.astype(np.result_type(error.dtype, np.float32), copy=False),
        "wavelength": info.wavelength,
    }
    out.update(read_labels(p, start, stop, info))
    return out


def read_labels(p: Path, start: int, stop: int, info: ShardInfo) -> dict[str, np.ndarray]:
    """Read rows ``[start, stop)`` of the label table, renamed to the store's names."""
    table = pd.read_hdf(p, PARAMS_KEY, start=start, stop=stop)
    labels = {}
    for column, name in LABEL_COLUMNS.items():
        if column in table.columns:
            labels[name] = table[column].to_numpy(dtype=np.float64)
        else:
            labels[name] = np.full(stop - start, np.nan)
    return labels


# --------------------------------------------------------------------------- noise


def spectrum_rng(seed: int, index: int) -> np.random.Generator:
    """Return spectrum ``index``'s own random stream, as the mock generator does."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_noise(seed: int, start: int, n_spectra: int, n_pixels: int) -> np.ndarray:
    """Return standard normal draws for spectra ``start`` to ``start + n_spectra - 1``.

    Returns
    -------
    ndarray of shape (n_spectra, n_pixels), float32
        Row ``r`` is the first ``n_pixels`` float32 draws of
        ``spectrum_rng(seed, start + r)``.
    """
    noise = np.empty((n_spectra, n_pixels), dtype=np.float32)
    for r, row in enumerate(noise):
        spectrum_rng(seed, start + r).standard_normal(out=row, dtype=np.float32)
    return noise


def fill_nan_errors(error: np.ndarray) -> np.ndarray:
    """Fill NaN errors from the neighbouring pixel, as the study did before adding noise.

    A NaN takes the value of the nearest non-NaN pixel before it in its row;
    NaNs at the start of a row take the first non-NaN value. A row of NaNs
    stays NaN.

    Parameters
    ----------
    error : ndarray of shape (n_spectra, n_pixels)

    Returns
    -------
    ndarray, same shape and dtype
    """
    error = np.asarray(error)
    nan = np.isnan(error)
    if not nan.any():
        return error.copy()
    index = np.where(nan, -1, np.arange(error.shape[-1]))
    index = np.maximum.accumulate(index, axis=-1)
    first = np.argmax(~nan, axis=-1)[..., None]
    index = np.where(index < 0, first, index)
    return np.take_along_axis(error, index, axis=-1)


def noisy_flux(
    flux: np.ndarray, error: np.ndarray, noise_level: float, seed: int, start: int
) -> np.ndarray:
    """Add the study's noise to noiseless flux, one random stream per spectrum.

    Parameters
    ----------
    flux, error : ndarray of shape (n, n_pixels)
        Noiseless flux and its 1-sigma error for spectra ``start`` to
        ``start + n - 1`` of a shard.
    noise_level : float
        Multiplies the noise; 0 returns the clipped noiseless flux.
    seed : int
        The ingest's seed (a non-negative integer).
    start : int
        Global index of the first row, so that each spectrum gets its own
        stream whatever the chunking.

    Returns
    -------
    ndarray of shape (n, n_pixels), float32
        ``max(flux, 0) + noise_level * fill_nan_errors(error) * N(0, 1)``,
        computed in float64 and rounded once.

    Raises
    ------
    ValueError
        For mismatched shapes, a negative or non-finite ``noise_level``, or
        a seed or start that is not a non-negative integer.
    """
    flux, error = np.asarray(flux), np.asarray(error)
    if flux.ndim != 2 or error.shape != flux.shape:
        raise ValueError(
            f"noisy_flux: flux has shape {flux.shape} and error {error.shape}; "
            "both must be (n_spectra, n_pixels)"
        )
    check_noise_level(noise_level, "noisy_flux")
    for name, value in (("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"noisy_flux: {name} must be a non-negative integer; got {value!r}")
    clean = np.clip(flux.astype(np.float64), 0.0, None)
    if noise_level == 0:
        return clean.astype(np.float32)
    noise = draw_noise(int(seed), int(start), *flux.shape)
    sigma = fill_nan_errors(error).astype(np.float64)
    return (clean + noise_level * sigma * noise).astype(np.float32)


def check_noise_level(noise_level: float, caller: str) -> None:
    """Raise unless ``noise_level`` is a finite number >= 0."""
    ok = isinstance(noise_level, (int, float, np.integer, np.floating))
    if not ok or isinstance(noise_level, bool) or not np.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"{caller}: noise_level must be a finite number >= 0; got {noise_level!r}")


# --------------------------------------------------------------------------- SNR


def true_snr(
    flux: np.ndarray, error: np.ndarray, definition: str = "median", noise_level: float = 1.0
) -> np.ndarray:
    """Return each spectrum's true SNR by one of the study's definitions.

    Parameters
    ----------
    flux, error : ndarray of shape (n, n_pixels)
        Noiseless flux and its 1-sigma error.
    definition : {"median", "norm"}
        ``"median"``: median over pixels of flux / error (the store's
        ``snr``; ``noise_level`` is not used). ``"norm"``: ``||flux|| /
        ||error * noise_level||`` (``||flux|| / ||error||`` for
        ``noise_level`` 0), the study's oracle SNR.
    noise_level : float

    Returns
    -------
    ndarray of shape (n,), float64
        Over the pixels with finite flux and finite, positive error; NaN
        for a spectrum with none.

    Raises
    ------
    ValueError
        For an unknown definition, mismatched shapes or a bad noise_level.
    """
    if definition not in SNR_DEFINITIONS:
        raise ValueError(
            f"true_snr: definition must be one of {SNR_DEFINITIONS}; got {definition!r}"
        )
    check_noise_level(noise_level, "true_snr")
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    if f.ndim != 2 or e.shape != f.shape:
        raise ValueError(
            f"true_snr: flux has shape {f.shape} and error {e.shape}; "
            "both must be (n_spectra, n_pixels)"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        good = np.isfinite(f) & np.isfinite(e) & (e > 0)
        if definition == "median":
            return median_ignoring(np.where(good, f / np.where(good, e, 1.0), np.nan))
        signal = np.sqrt(np.sum(np.where(good, f * f, 0.0), axis=1))
        noise = np.sqrt(np.sum(np.where(good, e * e, 0.0), axis=1))
        noise *= noise_level if noise_level > 0 else 1.0
        return np.where(good.any(axis=1), signal / noise, np.nan)


def median_ignoring(ratio: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN; NaN for an all-NaN row, without a warning."""
    nan = np.isnan(ratio)
    if not nan.any():
        return np.median(ratio, axis=1)
    out = np.full(ratio.shape[0], np.nan)
    some = ~nan.all(axis=1)
    out[some] = np.nanmedian(ratio[some], axis=1)
    return out
