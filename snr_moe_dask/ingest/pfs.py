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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import IngestError, check_file, check_rows
from .pfs_header import (  # noqa: F401  (re-exported: the reader's public names)
    ARMS,
    FILENAME_FORMATS,
    FILENAME_PATTERNS,
    KIND,
    _fail,
    detect_kind,
    hdu_names,
    make_object_ids,
    merge_identity,
    open_fits,
    parse_filename,
    read_config,
    read_mask_planes,
    read_observed_arms,
    read_target,
    require_hdus,
)
from .pfs_wave import (  # noqa: F401
    check_wavelength_nm,
    finish_wavelength,
    read_wavelength_nm,
    wavelength_from_wcs,
)

FIBER_ARRAY_SET_KINDS = ("pfsArm", "pfsMerged")
FIBER_ARRAY_KINDS = ("pfsObject", "pfsSingle")
STORE_LABELS = ("logg", "teff", "mh", "mag")


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
