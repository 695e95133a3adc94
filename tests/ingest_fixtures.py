"""Writers of small real files in the layouts that ``snr_moe_dask.ingest`` reads.

- pfsspec shards: ``dataset.h5`` written with h5py (wave, flux, error) and
  pandas (the label table, ``DataFrame.to_hdf(..., format="table")``);
- Subaru-PFS products as the pipeline writes them (Subaru-PFS datamodel,
  ``PfsFiberArraySet.writeFits`` and ``PfsSimpleSpectrum/PfsFiberArray
  ._writeImpl``): astropy ``ImageHDU``s, so big-endian on disk, wavelengths in
  nm, integer mask bitmasks with ``MP_`` planes, infinite and non-positive
  variances, and for pfsObject the three wavelength layouts (a WAVELENGTH
  HDU, the datamodel's ``WavelengthArray`` WCS, and the old header WCS with
  the identity in the primary header).

Each ``make_*`` returns ``(HDUList, truth)`` so a test can damage the HDUs
before writing; each ``write_*`` writes under the datamodel's file name and
returns ``(path, truth)``, ``truth`` holding what was written in native numpy.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import astropy.wcs
import h5py
import numpy as np
import pandas as pd
from astropy.io import fits

MASK_PLANES = {"BAD": 0, "SAT": 1, "CR": 3, "NO_DATA": 8, "BAD_FLAT": 9, "REFLINE": 15}
PFSSPEC_COLUMNS = ("T_eff", "log_g", "M_H", "a_M", "C_M", "mag", "snr", "redshift")


# --------------------------------------------------------------------------- pfsspec


def write_pfsspec_shard(
    path: str | Path,
    n: int = 12,
    n_pixels: int = 40,
    *,
    seed: int = 0,
    columns: tuple[str, ...] = PFSSPEC_COLUMNS,
    nan_errors: bool = True,
    flux_dtype=np.float64,
) -> dict:
    """Write a pfsspec ``dataset.h5`` with ``n`` spectra; return what was written.

    Some errors are NaN (``nan_errors``) and some noiseless fluxes slightly
    negative, as model spectra near saturated lines can be.
    """
    rng = np.random.default_rng(seed)
    wave = np.linspace(7100.0, 8850.0, n_pixels)
    flux = rng.uniform(0.5, 2.0, (n, n_pixels)).astype(flux_dtype)
    flux[0, :3] = -0.01
    error = rng.uniform(0.2, 1.0, (n, n_pixels)).astype(flux_dtype)
    if nan_errors:
        error[1, 0] = np.nan  # leading NaN: filled from the next pixel
        error[2, 5:7] = np.nan  # filled from pixel 4
    params = pd.DataFrame(
        {
            "T_eff": rng.uniform(3800, 6500, n),
            "log_g": rng.uniform(0.5, 5.0, n),
            "M_H": rng.uniform(-2.5, 0.5, n),
            "a_M": rng.uniform(-0.2, 0.6, n),
            "C_M": rng.uniform(-0.5, 0.5, n),
            "mag": rng.uniform(20.5, 22.5, n),
            "snr": rng.uniform(1, 10, n),
            "redshift": rng.uniform(-1e-3, 1e-3, n),
        }
    )[list(columns)]
    with h5py.File(path, "w") as f:
        f["spectrumdataset/wave"] = wave
        f["dataset/arrays/flux/value"] = flux
        f["dataset/arrays/error/value"] = error
    params.to_hdf(path, key="dataset/params", format="table")
    return {"wave": wave, "flux": flux, "error": error, "params": params}


# --------------------------------------------------------------------------- PFS


def mask_plane_header(header: fits.Header) -> fits.Header:
    """Add the ``MP_<NAME> = bit`` cards (``HIERARCH`` for long names), as MaskHelper does."""
    for name, bit in MASK_PLANES.items():
        key = f"MP_{name}"
        header[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    return header


def make_pixels(rng, shape: tuple[int, ...]) -> dict:
    """Flux, variance and mask bits with the pathologies real products have."""
    flux = rng.normal(100.0, 20.0, shape).astype(np.float32)
    variance = rng.uniform(10.0, 50.0, shape).astype(np.float32)
    bits = np.zeros(shape, dtype=np.int32)
    flat = bits.reshape(-1)
    n = flat.size
    flat[rng.choice(n, max(1, n // 20), replace=False)] |= 1 << MASK_PLANES["CR"]
    flat[rng.choice(n, max(1, n // 20), replace=False)] |= 1 << MASK_PLANES["REFLINE"]
    flat[rng.choice(n, max(1, n // 40), replace=False)] |= 1 << MASK_PLANES["NO_DATA"]
    v = variance.reshape(-1)
    v[rng.choice(n, 3, replace=False)] = np.inf
    v[rng.choice(n, 2, replace=False)] = -1.0
    v[rng.choice(n, 1, replace=False)] = 0.0
    flux.reshape(-1)[rng.choice(n, 1, replace=False)] = np.nan
    return {"flux": flux, "variance": variance, "bits": bits}


def make_covar(variance: np.ndarray) -> np.ndarray:
    """COVAR with the variance in plane 0 and small off-diagonal terms in planes 1, 2."""
    covar = np.zeros(variance.shape[:-1] + (3, variance.shape[-1]), dtype=np.float32)
    covar[..., 0, :] = variance
    covar[..., 1, :-1] = 0.1
    covar[..., 2, :-2] = 0.01
    return covar


def make_fiber_array_set(
    kind: str = "pfsArm",
    *,
    visit: int = 123,
    arm: str = "m",
    spectrograph: int = 1,
    n_fiber: int = 6,
    n_pixels: int = 50,
    shared_wavelength: bool = False,
    seed: int = 1,
) -> tuple[fits.HDUList, dict]:
    """A pfsArm or pfsMerged as ``PfsFiberArraySet.writeFits`` lays it out (DAMD_VER 2)."""
    rng = np.random.default_rng(seed)
    fiber_id = np.sort(rng.choice(np.arange(1, 2395), n_fiber, replace=False)).astype(np.int32)
    base = np.linspace(710.0, 885.0, n_pixels)
    shift = np.zeros((n_fiber, 1)) if shared_wavelength else rng.uniform(-0.3, 0.3, (n_fiber, 1))
    wavelength = base[None, :] + shift + 1e-4 * (base[None, :] - 800.0) ** 2 / 100.0
    pixels = make_pixels(rng, (n_fiber, n_pixels))
    norm = rng.uniform(0.5, 2.0, (n_fiber, n_pixels)).astype(np.float32)
    norm[0, 1] = 0.0
    primary = mask_plane_header(fits.Header())
    primary["DAMD_VER"] = (2, "PfsFiberArraySet datamodel version")
    hdus = fits.HDUList([fits.PrimaryHDU(header=primary)])
    arrays = {
        "FIBERID": fiber_id,
        "WAVELENGTH": wavelength,
        "FLUX": pixels["flux"],
        "MASK": pixels["bits"],
        "SKY": rng.uniform(0, 10, (n_fiber, n_pixels)).astype(np.float32),
        "NORM": norm,
        "COVAR": make_covar(pixels["variance"]),
    }
    for name, data in arrays.items():
        hdus.append(fits.ImageHDU(data, name=name))
    config_arm = arm if kind == "pfsArm" else "bmn"
    config = [
        fits.Column(name="visit", format="J", array=[visit]),
        fits.Column(name="arm", format=f"{len(config_arm)}A", array=[config_arm]),
        fits.Column(name="spectrograph", format="J", array=[spectrograph * (kind == "pfsArm")]),
        fits.Column(name="pfsDesignId", format="K", array=[0x1234ABCD]),
        fits.Column(name="expTime", format="D", array=[900.0]),
    ]
    hdus.append(fits.BinTableHDU.from_columns(config, name="CONFIG"))
    truth = {"fiber_id": fiber_id, "wavelength_nm": wavelength, "norm": norm, **pixels}
    truth.update(visit=visit, arm=config_arm, spectrograph=spectrograph)
    return hdus, truth


def pfs_arm_name(visit: int = 123, arm: str = "m", spectrograph: int = 1) -> str:
    """The datamodel's pfsArm file name."""
    return f"pfsArm-{visit:06d}-{arm}{spectrograph}.fits"


def write_hdus(hdus: fits.HDUList, path: str | Path) -> Path:
    """Write an HDUList (astropy stores numbers big-endian, as FITS requires)."""
    hdus.writeto(path, overwrite=True)
    return Path(path)


def write_pfs_arm(folder: Path, **kwargs) -> tuple[Path, dict]:
    """Write a pfsArm under its datamodel name; return (path, truth)."""
    hdus, truth = make_fiber_array_set("pfsArm", **kwargs)
    name = pfs_arm_name(truth["visit"], truth["arm"], truth["spectrograph"])
    return write_hdus(hdus, folder / name), truth


def write_pfs_merged(folder: Path, *, visit: int = 123, **kwargs) -> tuple[Path, dict]:
    """Write a pfsMerged (one shared wavelength grid by default); return (path, truth)."""
    kwargs.setdefault("shared_wavelength", True)
    hdus, truth = make_fiber_array_set("pfsMerged", visit=visit, **kwargs)
    return write_hdus(hdus, folder / f"pfsMerged-{visit:06d}.fits"), truth


def wavelength_array_header(min_nm: float, max_nm: float, n: int) -> fits.Header:
    """The WCS header the datamodel's ``WavelengthArray.toFitsHeader`` writes."""
    wcs = astropy.wcs.WCS(naxis=1)
    wcs.wcs.ctype = ["WAVE"]
    wcs.wcs.cname = ["Wavelength"]
    wcs.wcs.crval = [0.5 * (min_nm + max_nm)]
    wcs.wcs.crpix = [0.5 * n + 1.5]
    wcs.wcs.cunit = [u.nm]
    wcs.wcs.cdelt = [(max_nm - min_nm) / (n - 1)]
    return wcs.to_header()


def make_fiber_array(
    kind: str = "pfsObject",
    *,
    cat_id: int = 1,
    tract: int = 7621,
    patch: str = "2,2",
    obj_id: int = 0x02468ACE1234ABCD,
    visits: tuple[int, ...] = (101, 102, 103),
    n_pixels: int = 60,
    wavelength: str = "hdu",
    seed: int = 2,
) -> tuple[fits.HDUList, dict]:
    """A pfsObject or pfsSingle as ``PfsFiberArray`` writes it.

    ``wavelength``: ``"hdu"`` (a non-linear grid in a WAVELENGTH HDU),
    ``"wcs"`` (a linear grid as the datamodel's WavelengthArray header) or
    ``"legacy"`` (the old layout: ``CRVAL1``/``CRPIX1``/``CD1_1`` in the FLUX
    header, the identity in the primary header, no TARGET nor OBSERVATIONS).
    """
    rng = np.random.default_rng(seed)
    pixels = make_pixels(rng, (n_pixels,))
    flux_header = fits.Header()
    primary = fits.Header()
    if wavelength == "hdu":
        wave = np.linspace(710.0, 885.0, n_pixels) + 1e-3 * np.linspace(0, 1, n_pixels) ** 2
    elif wavelength == "wcs":
        wave = np.linspace(710.0, 885.0, n_pixels)
        flux_header = wavelength_array_header(710.0, 885.0, n_pixels)
    elif wavelength == "legacy":
        step = 175.0 / (n_pixels - 1)
        wave = 710.0 + step * np.arange(n_pixels)
        flux_header.update(CRVAL1=wave[2], CRPIX1=3.0, CD1_1=step, INHERIT=True)
        primary.update(TRACT=tract, PATCH=patch, CATID=cat_id, OBJID=obj_id, PFSVHASH=0)
    else:
        raise ValueError(wavelength)
    flux_header["DAMD_VER"] = (2, "PfsSimpleSpectrum datamodel version")
    mask_header = mask_plane_header(fits.Header())
    mask_header.extend(flux_header)
    hdus = fits.HDUList([fits.PrimaryHDU(header=primary)])
    hdus.append(fits.ImageHDU(pixels["flux"], header=flux_header, name="FLUX"))
    hdus.append(fits.ImageHDU(pixels["bits"], header=mask_header, name="MASK"))
    if wavelength == "hdu":
        hdus.append(fits.ImageHDU(wave, header=flux_header, name="WAVELENGTH"))
    if wavelength != "legacy":
        target = fits.Header()
        target.update(CATID=cat_id, TRACT=tract, PATCH=patch, OBJID=obj_id, RA=150.1, DEC=2.2)
        target["HIERARCH TARGETTYPE"] = 1
        columns = [
            fits.Column("filterName", "5A", array=["g_hsc", "i_hsc"]),
            fits.Column("fiberFlux", "E", array=[1000.0, 2000.0]),
        ]
        hdus.append(fits.BinTableHDU.from_columns(columns, header=target, name="TARGET"))
    hdus.append(fits.ImageHDU(rng.uniform(0, 1, n_pixels).astype(np.float32), name="SKY"))
    hdus.append(fits.ImageHDU(make_covar(pixels["variance"]), name="COVAR"))
    hdus.append(fits.ImageHDU(np.zeros((1, 1), np.float32), name="COVAR2"))
    if wavelength != "legacy":
        n_obs = len(visits)
        observations = [
            fits.Column("visit", "J", array=list(visits)),
            fits.Column("arm", "3A", array=["bmn"] * n_obs),
            fits.Column("spectrograph", "J", array=[1] * n_obs),
            fits.Column("fiberId", "J", array=[42] * n_obs),
            fits.Column("pfsDesignId", "K", array=[7] * n_obs),
            fits.Column("pfiNominal", "2E", array=np.zeros((n_obs, 2))),
            fits.Column("pfiCenter", "2E", array=np.zeros((n_obs, 2))),
        ]
        hdus.append(fits.BinTableHDU.from_columns(observations, name="OBSERVATIONS"))
    truth = {"wavelength_nm": wave, **pixels}
    truth.update(catId=cat_id, tract=tract, patch=patch, objId=obj_id, visits=visits)
    return hdus, truth


def pfs_object_name(cat_id=1, tract=7621, patch="2,2", obj_id=0x02468ACE1234ABCD, n_visit=3):
    """The datamodel's pfsObject file name (the visit hash is a made-up constant)."""
    return (
        f"pfsObject-{cat_id:05d}-{tract:05d}-{patch}-{obj_id:016x}-{n_visit % 1000:03d}"
        f"-0x{0x1234ABCDDEADBEEF:016x}.fits"
    )


def write_pfs_object(folder: Path, **kwargs) -> tuple[Path, dict]:
    """Write a pfsObject under its datamodel name; return (path, truth)."""
    hdus, truth = make_fiber_array("pfsObject", **kwargs)
    name = pfs_object_name(
        truth["catId"], truth["tract"], truth["patch"], truth["objId"], len(truth["visits"])
    )
    return write_hdus(hdus, folder / name), truth


def write_pfs_single(folder: Path, *, visit: int = 101, **kwargs) -> tuple[Path, dict]:
    """Write a pfsSingle (one visit) under its datamodel name; return (path, truth)."""
    hdus, truth = make_fiber_array("pfsSingle", visits=(visit,), **kwargs)
    name = (
        f"pfsSingle-{truth['catId']:05d}-{truth['tract']:05d}-{truth['patch']}"
        f"-{truth['objId']:016x}-{visit:06d}.fits"
    )
    truth["visit"] = visit
    return write_hdus(hdus, folder / name), truth
