"""The plan of an ingest, made on the client before any compute: every source scanned,
one wavelength grid chosen, the labels read, and each output chunk's rows.

Every source is scanned first (headers, shapes, grids and label tables; no flux),
and every bad one is named in one error line, so nothing is computed or written
for a list with a bad file in it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .files import IngestError

FORMATS = ("pfsspec", "pfs")
PFS_GLOB = ("pfsArm-*.fits", "pfsMerged-*.fits", "pfsObject-*.fits", "pfsSingle-*.fits")


@dataclass(frozen=True)
class SourceFile:
    """One scanned source file.

    Attributes
    ----------
    path : str
    n_spectra, n_pixels : int
    info : ShardInfo or None
        pfsspec: the shard's scan (small), handed to the tasks. PFS files are
        scanned again by the task that reads them (a pfsArm's per-fibre
        wavelengths are as large as its flux).
    kind : str
        ``"pfsspec shard"`` or the PFS product (``"pfsArm"``, ...).
    arm : str or None
    shared_grid : bool
        Whether every spectrum of the file has the same wavelengths.
    """

    path: str
    n_spectra: int
    n_pixels: int
    info: object
    kind: str
    arm: str | None
    shared_grid: bool


@dataclass
class IngestPlan:
    """What the ingest graph writes (see :func:`make_plan`).

    Attributes
    ----------
    format : {"pfsspec", "pfs"}
    files : list of SourceFile
    wavelength : ndarray of shape (n_pixels,)
        The store's grid, Angstrom.
    resample : str
        ``""`` (the sources' own common grid), or the method onto ``wavelength``.
    grid_source : str
        The store or model ``--wavelength-grid`` named, or "".
    settings : dict
        What the tasks need: ``noise_level``, ``seed``, ``snr_definition``,
        ``ignore_flags``, ``apply_norm``.
    chunk_size : int
    per_spectrum : dict of str to ndarray of shape (n_spectra,)
        Written by the client into the template: labels (NaN for PFS),
        ``object_id`` (PFS), ``source_file`` (index into ``files``) and
        ``source_row``.
    """

    format: str
    files: list[SourceFile]
    wavelength: np.ndarray
    resample: str
    grid_source: str
    settings: dict
    chunk_size: int
    per_spectrum: dict = field(default_factory=dict)

    @property
    def n_spectra(self) -> int:
        return int(sum(f.n_spectra for f in self.files))

    @property
    def has_mask(self) -> bool:
        """PFS files carry a mask; resampled spectra get one (uncovered pixels)."""
        return self.format == "pfs" or bool(self.resample)

    def chunks(self) -> list[tuple[int, list[tuple[int, int, int]]]]:
        """Each output chunk: its first row, and the ``(file, start, stop)`` rows
        of the source files that fill it, in order."""
        bounds = np.cumsum([0] + [f.n_spectra for f in self.files])
        out = []
        for start in range(0, self.n_spectra, self.chunk_size):
            stop = min(start + self.chunk_size, self.n_spectra)
            pieces = []
            for i in range(len(self.files)):
                lo, hi = max(start, bounds[i]), min(stop, bounds[i + 1])
                if hi > lo:
                    pieces.append((i, int(lo - bounds[i]), int(hi - bounds[i])))
            out.append((start, pieces))
        return out


def expand_sources(sources, fmt: str) -> list[str]:
    """The files to ingest: each file as given, each folder's matching files sorted
    (``*.h5`` for pfsspec, the datamodel's ``pfs*-*.fits`` for PFS)."""
    files = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            patterns = ("*.h5", "*.hdf5") if fmt == "pfsspec" else PFS_GLOB
            found = sorted({str(q) for pat in patterns for q in p.glob(pat) if q.is_file()})
            if not found:
                raise IngestError(
                    f"folder {str(p)!r} holds no {fmt} files ({', '.join(patterns)}); pass the "
                    "files themselves, or the folder that holds them"
                )
            files += found
        else:
            files.append(str(p))
    if not files:
        raise IngestError("no source files given; pass one or more files or folders")
    duplicates = sorted({f for f in files if files.count(f) > 1})
    if duplicates:
        raise IngestError(
            f"source {duplicates[0]!r} is given more than once; each file may be ingested once"
        )
    return files


def scan_all(files: list[str], fmt: str) -> list[SourceFile]:
    """Scan every file; raise one :class:`IngestError` naming every bad one."""
    scanned, errors = [], []
    for path in files:
        try:
            scanned.append(scan_one(path, fmt))
        except IngestError as exc:
            errors.append(str(exc))
    if errors:
        head = f"{len(errors)} of {len(files)} source files cannot be ingested, so nothing was"
        raise IngestError(f"{head} written: " + " | ".join(errors))
    return scanned


def scan_one(path: str, fmt: str) -> SourceFile:
    """Scan one source (the readers' ``scan_*``) and keep what the plan needs."""
    if fmt == "pfsspec":
        from .pfsspec import scan_shard

        info = scan_shard(path)
        return SourceFile(path, info.n_spectra, info.n_pixels, info, "pfsspec shard", None, True)
    from .pfs import scan_pfs

    info = scan_pfs(path)
    shared = info.shared_wavelength
    if not shared:  # per-fibre grids are as large as the flux: the task reads them again
        info = replace(info, wavelength=info.wavelength[:1])
    return SourceFile(path, info.n_spectra, info.n_pixels, info, info.kind, info.arm, shared)


def read_grid(path: str | os.PathLike) -> np.ndarray:
    """The wavelength grid (Angstrom) of a spectra store or a model store.

    Raises
    ------
    ValueError
        Naming the path, when it is not a Zarr store with a finite, strictly
        increasing ``wavelength`` coordinate (a model fitted on arrays has none).
    """
    import zarr

    name = str(path)
    fix = "pass a spectra store or a model store (snr-moe fit --model) as --wavelength-grid"
    if not (Path(name) / "zarr.json").is_file():
        raise ValueError(f"--wavelength-grid {name!r} is not a Zarr store; {fix}")
    group = zarr.open_group(name, mode="r")
    if "wavelength" not in group or group.attrs.get("has_wavelength", True) is False:
        raise ValueError(f"--wavelength-grid {name!r} has no wavelength grid; {fix}")
    wave = np.asarray(group["wavelength"][...], dtype=np.float64)
    steps = np.diff(wave)
    if wave.ndim != 1 or wave.size < 2 or not (np.isfinite(wave).all() and (steps > 0).all()):
        raise ValueError(
            f"--wavelength-grid {name!r} has a wavelength coordinate that is not a finite, "
            f"strictly increasing 1-D grid; {fix}"
        )
    return wave


def describe_grid(wave: np.ndarray) -> str:
    """``4096 pixels, 7100.00-8849.80 A``."""
    return f"{wave.size} pixels, {wave[0]:.2f}-{wave[-1]:.2f} A"


def common_grid(files: list[SourceFile], fmt: str) -> np.ndarray:
    """The one grid every spectrum of every file shares, or an error saying to resample."""
    fix = (
        "the store has one wavelength grid: pass --wavelength-grid STORE_OR_MODEL (the "
        "training store, or the model you will predict with) to resample every spectrum onto it"
    )
    for f in files:
        if not f.shared_grid:
            what = "fibre" if f.kind in ("pfsArm", "pfsMerged") else "spectrum"
            raise IngestError(
                f"PFS file {f.path!r} ({f.kind}) samples each {what} on its own wavelength "
                f"grid; {fix}"
            )
    first = files[0]
    grid = np.asarray(first.info.wavelength, dtype=np.float64)
    for f in files[1:]:
        other = np.asarray(f.info.wavelength, dtype=np.float64)
        if other.shape != grid.shape or not np.array_equal(other, grid):
            raise IngestError(
                f"{f.kind} {f.path!r} has a wavelength grid of {describe_grid(other)} but "
                f"{first.path!r} has {describe_grid(grid)}; {fix}"
            )
    return grid


def check_format_settings(fmt: str, given: dict) -> None:
    """Refuse settings that do not apply to the format, naming the flag."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}; got {fmt!r}")
    other = {
        "pfsspec": ("ignore_flags", "apply_norm"),
        "pfs": ("noise_level", "seed", "snr_definition"),
    }[fmt]
    for name in other:
        if given.get(name) not in (None, False, ()):
            flag = "--" + name.replace("_", "-")
            why = {
                "pfsspec": "applies to PFS pipeline files (--format pfs)",
                "pfs": "applies to pfsspec's noiseless model spectra; PFS pipeline spectra are "
                "already observed, with their own noise and no true SNR",
            }[fmt]
            raise ValueError(f"{flag} {why}: drop it, or ingest with the other --format")


def read_per_spectrum(plan: IngestPlan) -> dict[str, np.ndarray]:
    """Labels, ids and provenance of every spectrum, in store order (client side:
    pfsspec label tables are read with pandas here, never on a worker)."""
    from .pfs import STORE_LABELS

    parts: dict[str, list] = {}
    for i, f in enumerate(plan.files):
        if plan.format == "pfsspec":
            from .pfsspec import read_labels

            values = read_labels(Path(f.path), 0, f.n_spectra, f.info)
        else:
            values = {name: np.full(f.n_spectra, np.nan) for name in STORE_LABELS}
            values["object_id"] = np.asarray(f.info.object_id, dtype=object)
        values["source_file"] = np.full(f.n_spectra, i, dtype=np.int32)
        values["source_row"] = np.arange(f.n_spectra, dtype=np.int64)
        for name, value in values.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(v) for name, v in parts.items()}


def make_plan(sources, fmt: str, settings: dict, *, grid=None, method="linear", chunk_size=4096):
    """Scan every source and plan the store (no flux is read).

    Parameters
    ----------
    sources : list of path
        Files, or folders of them.
    fmt : {"pfsspec", "pfs"}
    settings : dict
        ``noise_level``, ``seed``, ``snr_definition`` (pfsspec);
        ``ignore_flags``, ``apply_norm`` (PFS).
    grid : path, optional
        A spectra or model store whose wavelength grid the spectra are
        resampled onto; None keeps the sources' own grid, which they must share.
    method : {"linear", "flux"}
    chunk_size : int

    Returns
    -------
    IngestPlan
    """
    files = scan_all(expand_sources(sources, fmt), fmt)
    if grid is not None:
        wavelength, resample = read_grid(grid), method
    else:
        wavelength, resample = common_grid(files, fmt), ""
    plan = IngestPlan(fmt, files, wavelength, resample, str(grid or ""), settings, chunk_size)
    plan.per_spectrum = read_per_spectrum(plan)
    return plan


def plan_attrs(plan: IngestPlan) -> dict:
    """The store's attributes: where its spectra came from and what was done to them."""
    from ..version import __version__

    arms = sorted({f.arm for f in plan.files if f.arm})
    pfsspec = plan.format == "pfsspec"
    resampling = "none: the sources' own grid"
    if plan.resample:
        grid = describe_grid(plan.wavelength)
        resampling = f"{plan.resample} onto the grid of {plan.grid_source!r} ({grid})"
    return {
        "instrument": "Subaru PFS",
        "arm": ",".join(arms) if arms else "unknown",
        "generator": "snr_moe_dask.ingest",
        "generator_version": __version__,
        "format": plan.format,
        "sources": [f.path for f in plan.files],
        "source_kinds": sorted({f.kind for f in plan.files}),
        "noise_level": float(plan.settings["noise_level"]) if pfsspec else 0.0,
        "noise": (
            "flux = max(noiseless, 0) + noise_level * error * N(0, 1), spectrum i of the store "
            "drawing from its own stream (seed, i); error is the shard's (noise level 1)"
            if pfsspec
            else "observed: the pipeline's own noise, none added"
        ),
        "seed": int(plan.settings["seed"]) if pfsspec else -1,
        "snr_definition": plan.settings["snr_definition"]
        if pfsspec
        else "none: observed spectra have no true SNR (snr is NaN; oracle routing is impossible)",
        "resampling": resampling,
        "wavelength_grid_source": plan.grid_source,
        "ignore_flags": list(plan.settings.get("ignore_flags") or []),
        "apply_norm": bool(plan.settings.get("apply_norm")),
        "chunk_size": plan.chunk_size,
        "ingest_settings": json.dumps(plan.settings),
    }
