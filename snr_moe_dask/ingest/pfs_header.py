"""Opening a PFS file, and what it says about itself: its kind, its identity (from
headers and the datamodel's file names), the ids of its spectra and its mask planes.

The conventions are the Subaru-PFS datamodel's (``python/pfs/datamodel/``); see
:mod:`snr_moe_dask.ingest.pfs` for the layouts.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from .files import IngestError, read_head

KIND = "PFS file"
ARMS = "brmn"
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


def _fail(path: Path, what: str, fix: str) -> IngestError:
    return IngestError(f"{KIND} {str(path)!r} {what}; {fix}")


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
