"""The wavelengths of a PFS file: a WAVELENGTH HDU or a linear WCS, in nm as the
datamodel specifies, checked and converted to Angstrom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from .pfs_header import _fail
from .resample import find_non_increasing

NM_RANGE = (100.0, 3000.0)  # PFS covers 380-1260 nm; a median outside this is not nm
_UNIT_TO_NM = {"m": 1e9, "nm": 1.0, "um": 1e3, "angstrom": 0.1, "a": 0.1}


def wavelength_from_wcs(header: fits.Header, n_pixels: int) -> np.ndarray | None:
    """Return the FLUX header's linear wavelength WCS in nm, or None if it has none.

    Two conventions occur in the datamodel, and each is read as the
    datamodel reads it:

    - ``WavelengthArray.toFitsHeader`` (``CTYPE1 = 'WAVE'``, ``CDELT1``,
      ``CUNIT1``; astropy writes metres): sample ``i`` (0-based) is at WCS
      pixel ``i + 1`` in astropy's 0-based pixels, i.e. FITS pixel ``i + 2``,
      ``CRVAL1 + (i + 2 - CRPIX1) * CDELT1`` (``WavelengthArray.fromFitsHeader``
      and ``tests/test_WavelengthArray.py``: ``pixel_to_world(ii + 1)``);
    - the older pfsObject header (``CRVAL1``, ``CRPIX1``, ``CD1_1``, nm, no
      ``CTYPE1``): the FITS standard, ``CRVAL1 + (i + 1 - CRPIX1) * CD1_1``,
      as the old ``PfsObject.read`` computed it.

    Parameters
    ----------
    header : astropy.io.fits.Header
    n_pixels : int

    Returns
    -------
    ndarray of shape (n_pixels,), float64, nm; or None.

    Raises
    ------
    ValueError
        For a unit that is not a length or a non-linear (``-LOG``) axis.
    """
    step = header.get("CD1_1", header.get("CDELT1"))
    if "CRVAL1" not in header or step is None:
        return None
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    if "-" in ctype:
        raise ValueError(f"CTYPE1 = {ctype!r} is not a linear wavelength axis")
    unit = str(header.get("CUNIT1", "nm")).strip()
    scale = _UNIT_TO_NM.get(unit.lower())
    if scale is None:
        raise ValueError(f"CUNIT1 = {unit!r} is not a wavelength unit I know ({list(_UNIT_TO_NM)})")
    datamodel = ctype.startswith("WAVE") and "CD1_1" not in header
    pixel = np.arange(n_pixels, dtype=np.float64) + (2.0 if datamodel else 1.0)
    crval, crpix = float(header["CRVAL1"]), float(header.get("CRPIX1", 0.0))
    return (crval + (pixel - crpix) * float(step)) * scale


def read_wavelength_nm(p: Path, hdul, names, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """Return the wavelengths in nm, (n_pixels,) or (n_spectra, n_pixels), and their source."""
    if "WAVELENGTH" in names:
        wave_shape = hdul["WAVELENGTH"].shape
        if wave_shape not in (shape, shape[-1:]):
            raise _fail(
                p,
                f"has a WAVELENGTH HDU of shape {wave_shape} but FLUX of {shape}",
                "WAVELENGTH must match FLUX (or be one shared row of n_pixels)",
            )
        return np.asarray(hdul["WAVELENGTH"].data, dtype=np.float64), "WAVELENGTH"
    try:
        wave = wavelength_from_wcs(hdul["FLUX"].header, shape[-1])
    except ValueError as exc:
        raise _fail(
            p,
            f"has an unusable wavelength WCS in its FLUX header ({exc})",
            "give the wavelengths as a WAVELENGTH HDU or a linear WCS in nm",
        ) from None
    if wave is None:
        raise _fail(
            p,
            "has no WAVELENGTH HDU and no wavelength WCS in its FLUX header "
            "(CRVAL1, CRPIX1 and CD1_1 or CDELT1)",
            "pass the product as the pipeline wrote it",
        )
    return wave, "WCS"


def check_wavelength_nm(p: Path, wave: np.ndarray, fiber_id: np.ndarray | None) -> None:
    """Raise unless every row is finite, strictly increasing and plausibly in nm."""
    where = find_non_increasing(wave)
    if where is not None:
        row, pixel = where
        w = np.atleast_2d(wave)[row]
        which = f"spectrum {row}" + (f" (fiberId {fiber_id[row]})" if fiber_id is not None else "")
        before = f"{float(w[pixel - 1])!r} nm then " if pixel > 0 else ""
        raise _fail(
            p,
            f"has wavelengths for {which} that are not finite and strictly increasing at "
            f"pixel {pixel} ({before}{float(w[pixel])!r} nm)",
            "the file is damaged or not a PFS product: re-run the pipeline step that wrote it",
        )
    median = float(np.median(wave))
    if not NM_RANGE[0] <= median <= NM_RANGE[1]:
        raise _fail(
            p,
            f"has wavelengths of median {median:g}, which is not in nm as the datamodel "
            "specifies (PFS covers 380-1260 nm)",
            "pass the product as the pipeline wrote it, with wavelengths in nm",
        )


def finish_wavelength(wave_nm: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return the wavelength in Angstrom, collapsed to one row when all rows are equal."""
    if wave_nm.ndim == 2 and bool(np.all(wave_nm == wave_nm[:1])):
        wave_nm = wave_nm[0]
    return wave_nm * 10.0, wave_nm.ndim == 1
