"""Read Subaru-PFS pipeline products (FITS) into the store schema (numpy in, numpy out).

The layouts follow the Subaru-PFS datamodel (``datamodel.txt`` and
``python/pfs/datamodel/``): what each file holds, the HDU names and header
keys, and the conventions below were taken from there, not guessed.

pfsArm and pfsMerged (``PfsFiberArraySet``: many fibres, one visit)
    File names ``pfsArm-%(visit)06d-%(arm)1s%(spectrograph)1d.fits`` (one arm
    of one spectrograph; arm ``b``, ``r``, ``m`` = medium-resolution red, or
    ``n``) and ``pfsMerged-%(visit)06d.fits`` (all arms merged). HDUs:
    ``FIBERID`` (n_fiber,) int32; ``WAVELENGTH`` (n_fiber, n_pix) float64,
    nm, vacuum; ``FLUX`` (n_fiber, n_pix); ``MASK`` (n_fiber, n_pix) int32
    bitmask; ``SKY``; ``NORM`` (from DAMD_VER 2); ``COVAR`` (n_fiber, 3,
    n_pix) whose ``[:, 0, :]`` is the variance (``[:, 1, :-1]`` and
    ``[:, 2, :-2]`` the +-1 and +-2 covariances); and the binary table
    ``CONFIG`` (one row: ``visit``, ``arm``, ``spectrograph``,
    ``pfsDesignId``). The mask planes are ``MP_<NAME> = bit`` cards of the
    primary header.
pfsObject and pfsSingle (``PfsFiberArray``: one object)
    File names ``pfsObject-%(catId)05d-%(tract)05d-%(patch)s-%(objId)016x-
    %(nVisit)03d-0x%(pfsVisitHash)016x.fits`` (all visits combined) and
    ``pfsSingle-%(catId)05d-%(tract)05d-%(patch)s-%(objId)016x-%(visit)06d.fits``
    (one visit). HDUs: ``FLUX`` (n_pix,), ``MASK`` (n_pix,) int32 (its
    header holds the ``MP_`` cards), ``WAVELENGTH`` (n_pix,) nm when the
    grid is not linear, ``TARGET`` (header keys ``CATID``, ``TRACT``,
    ``PATCH``, ``OBJID``, ``RA``, ``DEC``, ``TARGETTYPE``), ``SKY``,
    ``COVAR`` (3, n_pix), ``COVAR2``, ``OBSERVATIONS`` (one row per visit,
    with its ``arm``). Without a ``WAVELENGTH`` HDU the grid is a linear WCS
    in the FLUX header (see :func:`wavelength_from_wcs`).

What a read returns
-------------------
One spectrum per fibre (pfsArm, pfsMerged) or per file (pfsObject,
pfsSingle): ``flux`` float32; ``error = sqrt(variance)`` float32; ``mask``
bool, True where any mask bit is set (less the planes named in
``ignore_flags``), the variance is not finite or not positive, or the flux
is not finite; ``wavelength`` float64 in Angstrom (nm * 10). FITS stores
big-endian numbers; everything returned is native. Labels are absent
(NaN). ``object_id`` names each spectrum after the file's identity, in the
datamodel's own file-name encoding (documented at :func:`make_object_ids`).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from .pfsspec import IngestError, check_file, check_rows, read_head
from .resample import find_non_increasing

KIND = "PFS file"
FIBER_ARRAY_SET_KINDS = ("pfsArm", "pfsMerged")
FIBER_ARRAY_KINDS = ("pfsObject", "pfsSingle")
ARMS = "brmn"
STORE_LABELS = ("logg", "teff", "mh", "mag")
NM_RANGE = (100.0, 3000.0)  # PFS covers 380-1260 nm; a median outside this is not nm
# The datamodel's file-name regexes (python/pfs/datamodel/drp.py), catId as 3 or 5 digits.
FILENAME_PATTERNS = {
    "pfsArm": re.compile(r"^pfsArm-(?P<visit>\d{6})-(?P<arm>[brnm])(?P<spectrograph>\d)\.fits"),
    "pfsMerged": re.compile(r"^pfsMerged-(?P<visit>\d{6})\.fits"),
    "pfsObject": re.compile(
        r"^pfsObject-(?P<catId>\d{3,5})-(?P<tract>\d{5})-(?P<patch>.*)-(?P<objId>[0-9a-f]{16})"
        r"-(?P<nVisit>\d{3})-0x(?P<pfsVisitHash>[0-9a-f]{16})\.fits"
    ),
    "pfsSingle": re.compile(
        r"^pfsSingle-(?P<catId>\d{3,5})-(?P<tract>\d{5})-(?P<patch>.*)-(?P<objId>[0-9a-f]{16})"
        r"-(?P<visit>\d{6})\.fits"
    ),
}
FILENAME_FORMATS = {  # the datamodel's filenameFormat, for messages
    "pfsArm": "pfsArm-{visit:06d}-{arm}{spectrograph}.fits",
    "pfsMerged": "pfsMerged-{visit:06d}.fits",
    "pfsObject": "pfsObject-{catId:05d}-{tract:05d}-{patch}-{objId:016x}-{nVisit:03d}"
    "-0x{pfsVisitHash:016x}.fits",
    "pfsSingle": "pfsSingle-{catId:05d}-{tract:05d}-{patch}-{objId:016x}-{visit:06d}.fits",
}
_HEX_KEYS = ("objId", "pfsVisitHash")
_UNIT_TO_NM = {"m": 1e9, "nm": 1.0, "um": 1e3, "angstrom": 0.1, "a": 0.1}


@dataclass(frozen=True)
class PfsInfo:
    """What :func:`scan_pfs` found in a PFS file.

    Attributes
    ----------
    path : str
    kind : {"pfsArm", "pfsMerged", "pfsObject", "pfsSingle"}
    arm : str or None
        ``"m"`` etc. for a pfsArm; the arms merged or observed (in ``brmn``
        order) for the others, None when the file does not say.
    n_spectra, n_pixels : int
    wavelength : ndarray
        float64 Angstrom: shape (n_pixels,) when every spectrum shares one
        grid (``shared_wavelength``), else (n_spectra, n_pixels).
    shared_wavelength : bool
    wavelength_source : {"WAVELENGTH", "WCS"}
    identity : dict
        visit, arm, spectrograph, pfsDesignId (fibre arrays) or catId,
        tract, patch, objId (and nVisit, pfsVisitHash or visit) from the
        headers, completed from the file name.
    object_id : ndarray of str, shape (n_spectra,)
    fiber_id : ndarray of int64, shape (n_spectra,), or None
    mask_planes : dict of str to int
        Mask plane name to bit, from the ``MP_`` header cards.
    has_norm : bool
        Whether a ``NORM`` HDU exists (pfsArm and pfsMerged from DAMD_VER 2).
    """

    path: str
    kind: str
    arm: str | None
    n_spectra: int
    n_pixels: int
    wavelength: np.ndarray
    shared_wavelength: bool
    wavelength_source: str
    identity: dict = field(default_factory=dict)
    object_id: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    fiber_id: np.ndarray | None = None
    mask_planes: dict = field(default_factory=dict)
    has_norm: bool = False


def _fail(path: Path, what: str, fix: str) -> IngestError:
    return IngestError(f"{KIND} {str(path)!r} {what}; {fix}")


# --------------------------------------------------------------------------- opening


def open_fits(p: Path) -> fits.HDUList:
    """Open a FITS file lazily (memory-mapped), after checking that it is FITS and whole.

    Raises
    ------
    IngestError
        If the file does not start with a FITS primary header, its headers
        cannot be parsed, or it is shorter than its headers say.
    """
    head = read_head(p, 30)
    if not head.startswith(b"SIMPLE  ="):
        raise _fail(
            p,
            f"is not a FITS file (it starts with {head[:16]!r})",
            "pass a PFS pipeline product (pfsArm, pfsMerged, pfsObject); pfsspec HDF5 shards "
            "are read by ingest.pfsspec",
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(p, memmap=True, lazy_load_hdus=True)
            n_hdus = len(hdul)  # parses every header
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(
                p, f"cannot be read as FITS ({exc})", "the file may be truncated: copy it again"
            ) from None
    problems = [
        str(w.message).splitlines()[0]
        for w in caught
        if "truncated" in str(w.message) or "Error validating header" in str(w.message)
    ]
    end = max(hdul.fileinfo(i)["datLoc"] + hdul.fileinfo(i)["datSpan"] for i in range(n_hdus))
    size = p.stat().st_size
    if problems or end > size:
        hdul.close()
        what = problems[0] if problems else f"its HDUs need {end} bytes but it has {size}"
        raise _fail(p, f"is truncated or corrupt ({what})", "copy the file again")
    return hdul


def hdu_names(hdul: fits.HDUList) -> list[str]:
    """Return the HDUs' EXTNAMEs, upper case."""
    return [hdu.name.upper() for hdu in hdul]


def require_hdus(p: Path, kind: str, names: list[str], required: tuple[str, ...]) -> None:
    """Raise naming the first of ``required`` that the file lacks."""
    for name in required:
        if name not in names:
            raise _fail(
                p,
                f"has no {name!r} HDU (its HDUs are {names})",
                f"a {kind} file needs {list(required)} (Subaru-PFS datamodel.txt); "
                "pass a product written by the PFS pipeline",
            )


def detect_kind(p: Path, hdul: fits.HDUList, names: list[str]) -> str:
    """Return the product kind from the file name, else from the file's structure."""
    for kind, pattern in FILENAME_PATTERNS.items():
        if pattern.match(p.name):
            return kind
    require_hdus(p, "PFS", names, ("FLUX",))
    ndim = len(hdul["FLUX"].shape)
    if "FIBERID" in names or ndim == 2:
        config = read_config(hdul, names)
        single = len(str(config.get("arm", ""))) == 1 and config.get("spectrograph", 0) != 0
        return "pfsArm" if single else "pfsMerged"
    if "TARGET" in names or ndim == 1:
        return "pfsSingle" if "pfsSingle" in p.name else "pfsObject"
    raise _fail(
        p,
        f"has a FLUX HDU of shape {hdul['FLUX'].shape} and HDUs {names}",
        "expected a pfsArm, pfsMerged (FLUX (n_fiber, n_pix)) or pfsObject (FLUX (n_pix,))",
    )


# --------------------------------------------------------------------------- identity


def parse_filename(p: Path, kind: str) -> dict:
    """Return the identity the datamodel encodes in a file name (empty if it does not match)."""
    match = FILENAME_PATTERNS[kind].match(p.name)
    if match is None:
        return {}
    out = {}
    for key, value in match.groupdict().items():
        if key in _HEX_KEYS:
            out[key] = int(value, 16)
        elif key in ("arm", "patch"):
            out[key] = value
        else:
            out[key] = int(value)
    return out


def read_config(hdul: fits.HDUList, names: list[str]) -> dict:
    """Return visit, arm, spectrograph, pfsDesignId from the one-row ``CONFIG`` table."""
    if "CONFIG" not in names or hdul["CONFIG"].data is None or len(hdul["CONFIG"].data) == 0:
        return {}
    data = hdul["CONFIG"].data
    out = {}
    for key in ("visit", "arm", "spectrograph", "pfsDesignId"):
        if key in data.columns.names:
            value = data[key][0]
            out[key] = _clean_str(value) if key == "arm" else int(value)
    return out


def read_target(hdul: fits.HDUList, names: list[str]) -> dict:
    """Return catId, tract, patch, objId from the TARGET header (legacy: the primary header)."""
    for header in ([hdul["TARGET"].header] if "TARGET" in names else []) + [hdul[0].header]:
        if all(k in header for k in ("CATID", "TRACT", "PATCH", "OBJID")):
            out = {k: int(header[k.upper()]) for k in ("catId", "tract", "objId")}
            out["patch"] = _clean_str(header["PATCH"])
            return out
    return {}


def read_observed_arms(hdul: fits.HDUList, names: list[str]) -> str | None:
    """Return the arms in the OBSERVATIONS table, in ``brmn`` order, or None."""
    if "OBSERVATIONS" not in names or hdul["OBSERVATIONS"].data is None:
        return None
    data = hdul["OBSERVATIONS"].data
    if "arm" not in data.columns.names:
        return None
    letters = set("".join(_clean_str(a) for a in data["arm"]))
    return "".join(a for a in ARMS if a in letters) or None


def merge_identity(p: Path, from_file: dict, from_name: dict) -> dict:
    """Combine header and file-name identities; raise if they disagree."""
    for key in from_file.keys() & from_name.keys():
        if from_file[key] != from_name[key]:
            raise _fail(
                p,
                f"is named for {key}={from_name[key]!r} but its headers say "
                f"{key}={from_file[key]!r}",
                "rename the file to match its contents (or fix its headers)",
            )
    return {**from_name, **from_file}


def make_object_ids(kind: str, identity: dict, fiber_id: np.ndarray | None) -> np.ndarray:
    """Return one id per spectrum, in the datamodel's file-name encoding.

    - pfsArm: ``pfsArm-{visit:06d}-{arm}{spectrograph}-{fiberId:04d}``
      (the file's name without ``.fits``, then the fibre);
    - pfsMerged: ``pfsMerged-{visit:06d}-{fiberId:04d}``;
    - pfsObject: ``pfsObject-{catId:05d}-{tract:05d}-{patch}-{objId:016x}``
      (the object, without the visit count and hash, which describe the
      reduction rather than the object);
    - pfsSingle: ``pfsSingle-{catId:05d}-{tract:05d}-{patch}-{objId:016x}-{visit:06d}``.

    Returns
    -------
    ndarray of str, shape (n_spectra,)
    """
    if kind == "pfsArm":
        prefix = f"pfsArm-{identity['visit']:06d}-{identity['arm']}{identity['spectrograph']}"
        return np.array([f"{prefix}-{f:04d}" for f in fiber_id])
    if kind == "pfsMerged":
        return np.array([f"pfsMerged-{identity['visit']:06d}-{f:04d}" for f in fiber_id])
    obj = (
        f"{kind}-{identity['catId']:05d}-{identity['tract']:05d}-{identity['patch']}"
        f"-{identity['objId']:016x}"
    )
    return np.array([obj if kind == "pfsObject" else f"{obj}-{identity['visit']:06d}"])


def read_mask_planes(header: fits.Header) -> dict[str, int]:
    """Return ``{name: bit}`` from the ``MP_<NAME>`` (or ``HIERARCH MP_<NAME>``) cards."""
    planes = {}
    for key, value in header.items():
        key = key.removeprefix("HIERARCH ").strip()
        if key.startswith("MP_") and isinstance(value, (int, np.integer)):
            planes[key[3:]] = int(value)
    return planes


def _clean_str(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


# --------------------------------------------------------------------------- wavelength


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


# --------------------------------------------------------------------------- scan


def scan_pfs(path: str | os.PathLike) -> PfsInfo:
    """Check a PFS file's layout and describe it, reading headers and wavelengths only.

    Parameters
    ----------
    path : str or path-like
        A pfsArm, pfsMerged, pfsObject or pfsSingle FITS file.

    Returns
    -------
    PfsInfo

    Raises
    ------
    IngestError
        With one line naming the file, what is wrong and the fix: a missing,
        empty, non-FITS or truncated file; a missing HDU; shapes of FLUX,
        MASK, COVAR, WAVELENGTH and FIBERID that do not match; a MASK that
        is not an integer bitmask; wavelengths that are not finite, strictly
        increasing and in nm; 0 spectra or pixels; or a file name that
        disagrees with the headers.
    """
    p = check_file(path, KIND)
    with open_fits(p) as hdul:
        names = hdu_names(hdul)
        kind = detect_kind(p, hdul, names)
        if kind in FIBER_ARRAY_SET_KINDS:
            return scan_fiber_array_set(p, hdul, names, kind)
        return scan_fiber_array(p, hdul, names, kind)


def check_shapes(p: Path, hdul, expected: dict[str, tuple[int, ...]]) -> None:
    """Raise naming the first HDU whose shape differs from ``expected`` (FLUX's shape given)."""
    for name, shape in expected.items():
        if hdul[name].shape != shape:
            raise _fail(
                p,
                f"has a {name} HDU of shape {hdul[name].shape} but FLUX of "
                f"{hdul['FLUX'].shape}, so {name} should be {shape}",
                "the HDUs must describe the same spectra: the file is damaged or hand-edited",
            )


def check_flux_shape(p: Path, hdul, kind: str, ndim: int) -> tuple[int, ...]:
    """Return FLUX's shape after checking its rank and that it is not empty."""
    shape = tuple(hdul["FLUX"].shape)
    layout = "(n_fiber, n_pixels)" if ndim == 2 else "(n_pixels,)"
    if shape == () or 0 in shape:
        raise _fail(
            p,
            f"contains no spectra (FLUX has shape {shape})",
            "leave empty files out of the ingest list",
        )
    if len(shape) != ndim:
        raise _fail(
            p,
            f"has a FLUX HDU of shape {shape}; a {kind} file's FLUX is {layout}",
            "check that the file name matches the product",
        )
    if hdul["MASK"].header.get("BITPIX", 0) < 0:
        raise _fail(
            p,
            f"has a floating-point MASK HDU (BITPIX {hdul['MASK'].header['BITPIX']})",
            "MASK must be the integer bitmask the pipeline writes",
        )
    return shape


def scan_fiber_array_set(p: Path, hdul, names: list[str], kind: str) -> PfsInfo:
    """Scan a pfsArm or pfsMerged (one spectrum per fibre)."""
    require_hdus(p, kind, names, ("FIBERID", "FLUX", "MASK", "COVAR"))
    shape = check_flux_shape(p, hdul, kind, ndim=2)
    n, n_pixels = shape
    check_shapes(p, hdul, {"MASK": shape, "COVAR": (n, 3, n_pixels), "FIBERID": (n,)})
    fiber_id = np.asarray(hdul["FIBERID"].data, dtype=np.int64)
    wave_nm, source = read_wavelength_nm(p, hdul, names, shape)
    check_wavelength_nm(p, wave_nm, fiber_id)
    identity = merge_identity(p, read_config(hdul, names), parse_filename(p, kind))
    missing = [k for k in ("visit", "arm", "spectrograph") if k not in identity]
    if (kind == "pfsArm" and missing) or "visit" not in identity:
        raise _fail(
            p,
            f"gives no {', '.join(missing or ['visit'])} in its CONFIG HDU or its file name",
            f"name it as the datamodel does: {FILENAME_FORMATS[kind]}",
        )
    arm = identity.get("arm")
    wavelength, shared = finish_wavelength(wave_nm)
    return PfsInfo(
        path=str(p),
        kind=kind,
        arm=None if arm in (None, "x", "") else arm,
        n_spectra=n,
        n_pixels=n_pixels,
        wavelength=wavelength,
        shared_wavelength=shared,
        wavelength_source=source,
        identity=identity,
        object_id=make_object_ids(kind, identity, fiber_id),
        fiber_id=fiber_id,
        mask_planes=read_mask_planes(hdul[0].header),
        has_norm="NORM" in names,
    )


def scan_fiber_array(p: Path, hdul, names: list[str], kind: str) -> PfsInfo:
    """Scan a pfsObject or pfsSingle (one spectrum)."""
    require_hdus(p, kind, names, ("FLUX", "MASK", "COVAR"))
    shape = check_flux_shape(p, hdul, kind, ndim=1)
    check_shapes(p, hdul, {"MASK": shape, "COVAR": (3, shape[0])})
    wave_nm, source = read_wavelength_nm(p, hdul, names, shape)
    check_wavelength_nm(p, wave_nm, None)
    identity = merge_identity(p, read_target(hdul, names), parse_filename(p, kind))
    needed = ["catId", "tract", "patch", "objId"] + (["visit"] if kind == "pfsSingle" else [])
    missing = [k for k in needed if k not in identity]
    if missing:
        raise _fail(
            p,
            f"gives no {', '.join(missing)} in its TARGET header or its file name",
            f"name it as the datamodel does: {FILENAME_FORMATS[kind]}",
        )
    planes = read_mask_planes(hdul["MASK"].header) or read_mask_planes(hdul[0].header)
    return PfsInfo(
        path=str(p),
        kind=kind,
        arm=read_observed_arms(hdul, names),
        n_spectra=1,
        n_pixels=shape[0],
        wavelength=wave_nm * 10.0,
        shared_wavelength=True,
        wavelength_source=source,
        identity=identity,
        object_id=make_object_ids(kind, identity, None),
        fiber_id=None,
        mask_planes=planes,
        has_norm=False,
    )


# --------------------------------------------------------------------------- read


def resolve_rows(p: Path, rows, n_spectra: int) -> tuple[int, int]:
    """Return ``(start, stop)`` for ``rows``: None (all), a step-1 slice, or a pair."""
    if rows is None:
        return 0, n_spectra
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise IngestError(
                f"{KIND} {str(p)!r} cannot be read in rows {rows!r} (step {rows.step}); "
                "read a contiguous block (step 1) and subsample it"
            )
        start, stop, _ = rows.indices(n_spectra)
        return start, max(start, stop)
    try:
        start, stop = rows
    except (TypeError, ValueError):
        raise IngestError(
            f"{KIND} {str(p)!r} cannot be read in rows {rows!r}; pass None, a slice or "
            "(start, stop)"
        ) from None
    check_rows(p, start, stop, n_spectra, KIND)
    return int(start), int(stop)


def ignored_bits(p: Path, info: PfsInfo, ignore_flags) -> int:
    """Return the bitmask of the mask planes named in ``ignore_flags``."""
    bits = 0
    for name in ignore_flags:
        if name not in info.mask_planes:
            raise IngestError(
                f"{KIND} {str(p)!r} does not define mask plane {name!r} (from ignore_flags); "
                f"its planes are {sorted(info.mask_planes)}"
            )
        bits |= 1 << info.mask_planes[name]
    return bits


def read_pfs(
    path: str | os.PathLike,
    rows=None,
    *,
    info: PfsInfo | None = None,
    ignore_flags: tuple[str, ...] = (),
    apply_norm: bool = False,
) -> dict[str, np.ndarray]:
    """Read spectra of a PFS file in the store schema.

    Parameters
    ----------
    path : str or path-like
    rows : None, slice or (start, stop), optional
        The spectra (fibres) to read; None reads all. Only those rows of
        FLUX, COVAR and MASK are read (FITS sections of memory-mapped HDUs).
    info : PfsInfo, optional
        The file's :func:`scan_pfs`, to skip scanning it again.
    ignore_flags : tuple of str, optional
        Mask planes (names from the ``MP_`` cards, e.g. ``"REFLINE"``) that
        do not make a pixel bad. By default any set bit does.
    apply_norm : bool, optional
        Divide flux and error by the ``NORM`` HDU (pfsArm and pfsMerged from
        DAMD_VER 2, as the datamodel's ``extractFiber`` does); a pixel whose
        norm is not finite and positive is bad. Without a NORM HDU the norm
        is 1.

    Returns
    -------
    dict
        ``flux``, ``error`` (n, n_pixels) float32; ``mask`` (n, n_pixels)
        bool; ``wavelength`` (n, n_pixels) float64 Angstrom; ``object_id``
        (n,) str; ``logg``, ``teff``, ``mh``, ``mag`` (n,) float64, NaN.

    Raises
    ------
    IngestError
        For a bad file (see :func:`scan_pfs`), rows outside the file, or an
        unknown mask plane in ``ignore_flags``.
    """
    info = scan_pfs(path) if info is None else info
    p = Path(info.path)
    start, stop = resolve_rows(p, rows, info.n_spectra)
    ignore = ignored_bits(p, info, ignore_flags)
    if start == stop:  # astropy sections collapse empty slices; nothing to read anyway
        empty = np.empty((0, info.n_pixels), dtype=np.float32)
        return make_spectra(info, start, stop, empty, empty, empty.astype(np.int32), 0, None)
    with open_fits(p) as hdul:
        if info.kind in FIBER_ARRAY_SET_KINDS:
            flux = hdul["FLUX"].section[start:stop]
            variance = hdul["COVAR"].section[start:stop, 0, :]
            bits = hdul["MASK"].section[start:stop]
            norm = hdul["NORM"].section[start:stop] if apply_norm and info.has_norm else None
        else:
            flux = hdul["FLUX"].section[:][None, :][start:stop]
            variance = hdul["COVAR"].section[0, :][None, :][start:stop]
            bits = hdul["MASK"].section[:][None, :][start:stop]
            norm = None
    return make_spectra(info, start, stop, flux, variance, bits, ignore, norm)


def make_spectra(info, start, stop, flux, variance, bits, ignore, norm) -> dict[str, np.ndarray]:
    """Convert raw (big-endian) rows to the schema's arrays; see :func:`read_pfs`."""
    flux = np.asarray(flux, dtype=np.float32)
    variance = np.asarray(variance, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.sqrt(variance)
        bad = (np.asarray(bits).astype(np.int64) & ~ignore) != 0
        bad |= ~np.isfinite(variance) | ~(variance > 0) | ~np.isfinite(flux)
        if norm is not None:
            norm = np.asarray(norm, dtype=np.float32)
            bad |= ~np.isfinite(norm) | ~(norm > 0)
            flux = flux / norm
            error = error / norm
    n = stop - start
    if info.shared_wavelength:
        wavelength = np.broadcast_to(info.wavelength, (n, info.n_pixels)).copy()
    else:
        wavelength = info.wavelength[start:stop].copy()
    out = {
        "flux": flux,
        "error": error,
        "mask": bad,
        "wavelength": wavelength,
        "object_id": info.object_id[start:stop],
    }
    out.update({name: np.full(n, np.nan) for name in STORE_LABELS})
    return out
