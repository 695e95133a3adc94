"""``SNRBinnedRidge``: a global ridge model plus one ridge expert per SNR bin.

The estimator follows scikit-learn's conventions: ``__init__`` stores its
arguments unchanged, ``None`` means "from :mod:`dask.config`", validation
happens in ``fit``, and fitted attributes end in ``_``. A fitted model is saved
as a Zarr store that ``xarray.open_zarr`` reads, with no pickle anywhere.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from . import options
from .binning import bin_ranges, check_bins
from .cluster import run_graph
from .config import get_setting
from .experts import GLOBAL, solve_experts, train_gate
from .io import (
    EXPERT,
    TARGET,
    WAVELENGTH,
    content_hash,
    is_checksummed,
    open_spectra,
    open_zarr_quietly,
    store_fingerprint,
    store_row_chunks,
    write_zarr,
)
from .options import resolve
from .outputs import atomic_path
from .reduce import ReduceSpec, array_chunks, build_fit_graph, store_chunks
from .rows import StoreError

MODEL_FORMAT_VERSION = 1
ROUTINGS = ("oracle", "observed")
_SUPPORTED_INPUT = (
    "(SNRBinnedRidge fits dense, real-valued spectra: float32 or float64 arrays of shape "
    "(n_spectra, n_pixels) with at least one spectrum and one pixel, dask arrays, an "
    "xarray Dataset or the path of a spectra store)"
)


class SNRBinnedRidge(RegressorMixin, BaseEstimator):
    """Ridge regression with one expert per SNR bin, fitted in one pass with Dask.

    Parameters
    ----------
    alpha : float, dict, "cv" or "gcv", optional
        Penalty. A dict maps expert names (``"global"`` and the bin names) to
        their own alpha. ``"cv"`` picks each expert's alpha by exact K-fold
        cross-validation over ``alphas``, ``"gcv"`` by generalized
        cross-validation (one eigendecomposition per expert), both from the
        same single pass (see :mod:`snr_moe_dask.cv`). Default
        ``snr-moe.fit.alpha`` (1e5).
    bins : sequence of float, optional
        SNR bin edges, right-closed. Default ``snr-moe.bins.edges`` (2, 4, 7).
    bin_names : sequence of str, optional
        One name per bin. Default ``snr-moe.bins.names`` (X, L, M, H).
    routing : {"oracle", "observed"}, optional
        Bin by the store's true ``snr`` or by the observed median flux/error.
    target : str or sequence of str, optional
        Label(s) to predict. Default ``["logg"]``.
    precision : {"float32", "float64"}, optional
        Dtype of the centred products (accumulation is always float64).
    standardize : bool, optional
        Penalize standardized coefficients.
    min_spectra : int, optional
        Experts with fewer training spectra fall back to the global model.
    max_bad_fraction : float, optional
        Spectra with more bad pixels than this fraction are excluded.
    partitions : int, optional
        Number of fold chains; default one per worker thread.
    strict : bool, optional
        Fail on the first bad pixel (naming the variable and the spectrum)
        instead of imputing it.
    alphas : sequence of float, optional
        The alpha grid for ``alpha="cv"``. Default
        ``snr-moe.fit.cv.grid``: 28 values from 1e0 to 1e9, log-spaced.
    cv : int, optional
        Number of folds for ``alpha="cv"``. Default ``snr-moe.fit.cv.folds`` (5).
    cv_seed : int, optional
        Seed of the fold assignment. Default ``snr-moe.fit.cv.seed`` (0).
    gate : bool or str, optional
        Also train the deployable gate (:mod:`snr_moe_dask.gate`) on quality
        features, in the same pass; a string names the feature set
        (``"snr"`` or ``"error"``, see :mod:`snr_moe_dask.quality`). Needs
        oracle routing (the gate learns the true SNR bin). Default
        ``snr-moe.fit.gate.enabled`` with ``snr-moe.fit.gate.features``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_experts, n_pixels, n_targets)
        Expert 0 is the global model; a fallback expert holds its coefficients.
    intercept_ : ndarray of shape (n_experts, n_targets)
    mean_x_ : ndarray of shape (n_experts, n_pixels)
    experts_ : list of str
        ``["global", *bin_names]``.
    n_train_ : ndarray of shape (n_experts,)
    alpha_ : ndarray of shape (n_experts,)
    fallback_ : dict of str to str
        Experts served by the global model, with the reason.
    solver_ : dict of str to dict
        Solver used per expert, and the reason for any fallback to ``eigh``.
    excluded_ : dict
        Counts of excluded spectra and bad pixels per bin.
    snr_ : ndarray of shape (n_spectra,)
        Observed SNR of every training spectrum.
    route_snr_ : ndarray of shape (n_spectra,)
        The SNR that routed each training spectrum (the true SNR for oracle routing).
    cv_ : dict or None
        With ``alpha="cv"``: ``alphas`` (n_alphas,), ``mse`` (n_experts,
        n_folds, n_alphas) per-fold held-out MSE, ``mean`` and ``se``
        (n_experts, n_alphas) across folds, ``n_valid`` (n_experts, n_folds),
        ``folds``, ``seed``, and the fixed-alpha solution from the same
        statistics for comparison (``alpha_fixed``, ``coef_fixed``,
        ``intercept_fixed``).
    gate_ : dict or None
        The trained gate (see :func:`snr_moe_dask.gate.fit_gate`), or None.
    n_features_in_ : int
    """

    def __init__(
        self,
        alpha=None,
        bins=None,
        bin_names=None,
        routing=None,
        target=None,
        precision=None,
        standardize=None,
        min_spectra=None,
        max_bad_fraction=None,
        partitions=None,
        strict=None,
        alphas=None,
        cv=None,
        cv_seed=None,
        gate=None,
    ):
        self.alpha = alpha
        self.bins = bins
        self.bin_names = bin_names
        self.routing = routing
        self.target = target
        self.precision = precision
        self.standardize = standardize
        self.min_spectra = min_spectra
        self.max_bad_fraction = max_bad_fraction
        self.partitions = partitions
        self.strict = strict
        self.alphas = alphas
        self.cv = cv
        self.cv_seed = cv_seed
        self.gate = gate

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Non-finite pixels are bad pixels, imputed by design (see fit), and NaN
        # targets are excluded and counted, so NaN input is allowed.
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = False
        tags.target_tags.multi_output = True
        tags.target_tags.required = True
        return tags

    def _check_array_input(self, X, y, *, reset: bool, require_y: bool):
        """Validate array input as scikit-learn does (dense, real, 2-D, at least one
        spectrum and one pixel, the fitted pixel count); dask arrays are checked by
        shape only, so nothing is computed."""
        if require_y and y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; "
                "pass y=<array of shape (n_spectra,) or (n_spectra, n_targets)>, or fit a "
                "store path or Dataset that holds the target labels"
            )
        if isinstance(X, da.Array):
            _check_dask_shape(self, X, reset)
            return X, y
        try:
            X = validate_data(
                self,
                X,
                reset=reset,
                accept_sparse=False,
                dtype=(np.float64, np.float32),
                ensure_all_finite=False,
            )
            if y is not None and not isinstance(y, da.Array):
                y = check_array(
                    y, ensure_2d=False, dtype=np.float64, ensure_all_finite=False, input_name="y"
                )
                check_consistent_length(X, y)
        except (ValueError, TypeError) as exc:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"{exc} {_SUPPORTED_INPUT}") from exc
        return X, y

    # ------------------------------------------------------------------ settings

    def _resolved(self) -> dict:
        """Every setting of the fit, from the parameters or ``dask.config``, checked
        (see :mod:`snr_moe_dask.options`) before anything is read."""
        edges, names = check_bins(resolve("bins", self.bins), resolve("bin_names", self.bin_names))
        targets = resolve("target", self.target)
        routing = resolve("routing", self.routing)
        precision = resolve("precision", self.precision)
        max_bad = resolve("max_bad_fraction", self.max_bad_fraction)
        alphas, cv = self._alphas(names)
        gate = resolve("gate", self.gate)
        if gate and routing != "oracle" and self.gate:
            raise ValueError(
                "gate=True needs oracle routing: the gate learns each spectrum's true SNR bin"
            )
        gate = gate and routing == "oracle"
        if gate:
            gate = self.gate if isinstance(self.gate, str) else resolve("gate_features")
        return {
            "gate": gate or "",
            "cv": cv,
            "edges": edges,
            "names": names,
            "targets": targets,
            "routing": routing,
            "precision": precision,
            "standardize": bool(resolve("standardize", self.standardize)),
            "min_spectra": resolve("min_spectra", self.min_spectra),
            "max_bad_fraction": max_bad,
            "alphas": alphas,
            "strict": bool(resolve("strict", self.strict)),
            "partitions": resolve("partitions", self.partitions),
            "buffer_mb": resolve("buffer_mb"),
            "gate_max_train": resolve("gate_max_train"),
            "checkpoint_every": resolve("checkpoint_every"),
        }

    def open_training_store(self, path: str | os.PathLike) -> xr.Dataset:
        """Check the settings and open a training store lazily, with the variables this
        fit needs (its targets, and ``snr`` for oracle routing); nothing heavy is read."""
        settings = self._resolved()
        require = list(settings["targets"])
        if settings["routing"] == "oracle":
            require.append("snr")
        return open_spectra(path, require=require)

    def _alphas(self, names: list[str]) -> tuple[np.ndarray, dict | None]:
        """Per-expert alphas (the fixed ones, for ``"cv"``), and the CV settings or None."""
        alpha = get_setting("fit.alpha", self.alpha)
        experts = [GLOBAL, *names]
        cv = None
        if isinstance(alpha, str) and alpha.strip() not in options.ALPHA_METHODS:
            raise ValueError(f'alpha must be a number, a dict or "cv" (or "gcv"); got {alpha!r}')
        if isinstance(alpha, str):
            cv = self._cv_settings(alpha.strip())
            alpha = cv["alpha_fixed"]
        if isinstance(alpha, dict):
            unknown = set(alpha) - set(experts)
            if unknown:
                raise ValueError(
                    f"alpha names experts {sorted(unknown)} that do not exist; "
                    f"expected keys among {experts}"
                )
            default = float(get_setting("fit.alpha"))
            values = [alpha.get(e, default) for e in experts]
        else:
            values = [alpha] * len(experts)
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be >= 0 and finite; got {alpha!r}") from None
        if not all(np.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"alpha must be >= 0 and finite; got {values}")
        return np.array(values), cv

    def _cv_settings(self, method: str = "cv") -> dict:
        folds = 1 if method == "gcv" else resolve("cv", self.cv)
        grid = np.asarray(resolve("alphas", self.alphas), dtype=np.float64).ravel()
        return {
            "method": "gcv" if method == "gcv" else "kfold",
            "folds": folds,
            "seed": resolve("cv_seed", self.cv_seed),
            "alphas": grid,
            "alpha_fixed": resolve("compare_alpha"),
        }

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X,
        y=None,
        *,
        snr=None,
        error=None,
        mask=None,
        checkpoint=None,
        resume=False,
        overwrite_checkpoint=False,
    ):
        """Fit the global model and every expert in one pass over the data.

        Parameters
        ----------
        X : str, path, xarray.Dataset or array-like of shape (n_spectra, n_pixels)
            The path of a spectra store (read chunk by chunk inside the fold
            tasks: the fastest way), a Dataset following the store schema
            (see :func:`snr_moe_dask.open_spectra`), or flux.
        y : array-like of shape (n_spectra,) or (n_spectra, n_targets), optional
            Targets, when ``X`` is an array.
        snr : array-like of shape (n_spectra,), optional
            With array input: the SNR that routes each spectrum (needed for
            oracle routing; observed routing computes it from ``error``).
        error, mask : array-like of shape (n_spectra, n_pixels), optional
            With array input: flux errors (default ones) and bad-pixel mask.
        checkpoint : path, optional
            With a store path: save each partition's accumulator to this
            directory as the pass goes (see :mod:`snr_moe_dask.checkpoint`).
            The checkpoints are kept; delete them with
            :func:`snr_moe_dask.checkpoint.remove` once the model is saved
            (``snr-moe fit`` does).
        resume : bool
            Continue from the checkpoints in ``checkpoint``: only the chunks
            they do not hold are read. ``checkpoint_`` reports how many.
        overwrite_checkpoint : bool
            Start over when ``checkpoint`` already holds checkpoints.

        Returns
        -------
        self
        """
        settings = self._resolved()
        t0 = time.perf_counter()
        spec = ReduceSpec(
            edges=tuple(settings["edges"]),
            routing=settings["routing"],
            max_bad_fraction=settings["max_bad_fraction"],
            precision=settings["precision"],
            strict=settings["strict"],
            n_folds=settings["cv"]["folds"] if settings["cv"] else 1,
            cv_seed=settings["cv"]["seed"] if settings["cv"] else 0,
            gate=settings["gate"],
            buffer_mb=float(settings["buffer_mb"]),
        )
        if isinstance(X, str | os.PathLike):
            source = str(X)
            ds = self.open_training_store(source)
            reads = {
                "targets": list(settings["targets"]),
                "with_snr": settings["routing"] == "oracle",
                "with_mask": "mask" in ds,
            }
            chunks = store_chunks(source, store_row_chunks(ds), **reads)
            n_pixels, wavelength = ds.sizes[WAVELENGTH], ds[WAVELENGTH].values
        else:
            reads = {}
            if isinstance(X, xr.Dataset):
                arrays = _arrays_from_dataset(X, settings)
                source = X.encoding.get("source", "")
            else:
                X, y = self._check_array_input(X, y, reset=True, require_y=True)
                arrays = _arrays_from_input(X, y, snr, error, mask, settings)
                source = ""
            chunks = array_chunks(
                arrays["flux"], arrays["error"], arrays["y"], arrays.get("snr"), arrays.get("mask")
            )
            n_pixels, wavelength = arrays["flux"].shape[1], arrays.get("wavelength")
        partitions = int(settings["partitions"] or _default_partitions())
        ckpt = None
        if checkpoint is not None:
            ckpt = self._prepare_checkpoint(
                checkpoint,
                source,
                chunks,
                spec,
                settings,
                partitions,
                resume,
                overwrite_checkpoint,
            )
        total, _, folded = build_fit_graph(
            chunks, spec=spec, partitions=partitions, checkpoint=ckpt
        )
        self.checkpoint_ = {
            "chunks": len(chunks),
            "folded": folded,
            "restored": len(chunks) - folded,
            "directory": str(checkpoint) if checkpoint is not None else "",
        }
        solved = dask.delayed(solve_experts, pure=True)(total, settings, cv_graph(total, settings))
        tasks = [solved]
        if settings["gate"]:
            tasks.append(dask.delayed(train_gate, pure=True)(total, settings))
        solved, *gate = run_graph(*tasks, label="fit: one pass over the spectra, then the solve")
        self.gate_ = gate[0] if gate else None
        snr_values = solved["snr"]
        self.route_snr_ = solved["route_snr"]
        elapsed = time.perf_counter() - t0
        self._finish_fit(solved, settings)
        self.snr_ = snr_values
        self.n_features_in_ = int(n_pixels)
        self.wavelength_ = wavelength
        self.targets_ = settings["targets"]
        self.train_store_ = str(source)
        self.train_fingerprint_ = store_fingerprint(source) if source else ""
        # What the pass read, as per-chunk digests: the store's content, for the
        # evaluation's check that a test store is not the training store.
        self.train_content_ = content_hash(solved["digest"]) if len(solved["digest"]) else ""
        self.train_reads_ = reads
        self.timings_ = {
            "pass": elapsed - solved["seconds"],
            "solve": solved["seconds"],
            "total": time.perf_counter() - t0,
        }
        return self

    def _prepare_checkpoint(
        self, directory, source, chunks, spec, settings, partitions, resume, overwrite
    ) -> dict:
        from . import checkpoint as ckpt

        if not source or not chunks or chunks[0][0].__name__ != "fold_rows":
            raise ValueError(
                "checkpoints need a training store path: fit('train.zarr', checkpoint=...)"
            )
        meta = self._checkpoint_meta(source, chunks, spec, settings, partitions)
        done = ckpt.prepare(directory, meta, resume=resume, overwrite=overwrite)
        if done and not is_checksummed(source):
            # The fingerprint sees only metadata and sizes of unchecksummed chunks:
            # read the restored chunks again and compare what they hold.
            ckpt.verify_restored(directory, source, chunks, partitions, done)
        return {"directory": str(directory), "every": settings["checkpoint_every"], "done": done}

    @staticmethod
    def _checkpoint_meta(source, chunks, spec, settings, partitions) -> dict:
        """What a checkpoint belongs to: store, fingerprint, settings and partitions."""
        from .reduce import chain_layout

        spec_fields = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
        return {
            "store": str(Path(source).resolve()),
            "fingerprint": store_fingerprint(source),
            **spec_fields,
            "targets": settings["targets"],
            "chunks": [[a.start, a.stop] for (_, (a,)) in chunks],
            "partitions": chain_layout(len(chunks), partitions),
        }

    def _finish_fit(self, solved: dict, settings: dict) -> None:
        """Set the fitted attributes from :func:`solve_experts`' result."""
        for key in (
            "coef",
            "intercept",
            "mean_x",
            "experts",
            "n_train",
            "fallback",
            "solver",
            "excluded",
            "cv",
        ):
            setattr(self, f"{key}_", solved[key])
        self.alpha_ = solved["alpha"]
        self.bin_edges_ = settings["edges"]
        self.bin_names_ = settings["names"]
        self.routing_ = settings["routing"]
        self.precision_ = settings["precision"]
        self.standardize_ = settings["standardize"]
        self.min_spectra_ = settings["min_spectra"]
        self.max_bad_fraction_ = settings["max_bad_fraction"]

    # ------------------------------------------------------------------ predict

    def bin_to_expert(self) -> np.ndarray:
        """Index of the expert serving each bin (bins that fell back still map to
        their own slot, which holds the global model's coefficients)."""
        return np.arange(1, len(self.experts_))

    def predict(self, X, *, snr=None, error=None, mask=None, routing=None):
        """Predict with each spectrum's expert.

        Parameters
        ----------
        X : xarray.Dataset or array-like of shape (n_spectra, n_pixels)
        snr : array-like of shape (n_spectra,), optional
            With array input and oracle routing: the true SNR.
        error, mask : array-like, optional
            With array input: errors (for observed routing and bad pixels) and mask.
        routing : {"oracle", "observed", "learned", "soft"}, optional
            Defaults to the routing the model was fitted with; ``learned``
            and ``soft`` use the model's gate.

        Returns
        -------
        ndarray or dask array of shape (n_spectra,) or (n_spectra, n_targets)
            Dask when the input is lazy.
        """
        from .evaluate import parse_routings, prediction_arrays

        check_is_fitted(self)
        routing = parse_routings(routing, self.routing_)[0]
        if not isinstance(X, xr.Dataset):
            X, _ = self._check_array_input(X, None, reset=False, require_y=False)
        arrays = self._predict_inputs(X, snr, error, mask, routing)
        out = prediction_arrays(self, arrays, routing)["y_moe_all"]
        if len(self.targets_) == 1:
            out = out[:, 0]
        lazy = isinstance(X, xr.Dataset | da.Array)
        return out if lazy else out.compute()

    def _predict_inputs(self, X, snr, error, mask, routing) -> dict:
        settings = {"targets": [], "routing": routing}
        if isinstance(X, xr.Dataset):
            return _arrays_from_dataset(X, settings, need_targets=False)
        return _arrays_from_input(X, None, snr, error, mask, settings)

    def score(self, X, y=None, sample_weight=None, **predict_kwargs):
        """R^2 of the routed predictions (scikit-learn's ``r2_score``).

        ``predict_kwargs`` (``snr``, ``error``, ``mask``, ``routing``) go to
        :meth:`predict`.
        """
        from sklearn.metrics import r2_score

        pred = np.asarray(self.predict(X, **predict_kwargs))
        if isinstance(X, xr.Dataset):
            y = np.column_stack([X[t].values for t in self.targets_])
        y = np.asarray(y)
        return r2_score(y.reshape(pred.shape), pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------ persistence

    def to_dataset(self) -> xr.Dataset:
        """Return the fitted model as an xarray Dataset (what ``save`` writes)."""
        wave = self.wavelength_ if self.wavelength_ is not None else np.arange(self.n_features_in_)
        edges = self.bin_edges_
        ranges = bin_ranges(edges)
        ds = xr.Dataset(
            {
                "coef": ((EXPERT, WAVELENGTH, TARGET), self.coef_),
                "intercept": ((EXPERT, TARGET), self.intercept_),
                "mean_x": ((EXPERT, WAVELENGTH), self.mean_x_),
                "n_train": ((EXPERT,), self.n_train_),
                "alpha": ((EXPERT,), self.alpha_),
            },
            coords={
                EXPERT: (EXPERT, np.array(self.experts_, dtype=object)),
                WAVELENGTH: (WAVELENGTH, np.asarray(wave, dtype=np.float64)),
                TARGET: (TARGET, np.array(self.targets_, dtype=object)),
            },
        )
        ds.attrs.update(
            format_version=MODEL_FORMAT_VERSION,
            package="snr_moe_dask",
            package_version=_package_version(),
            bin_edges=list(edges),
            bin_names=list(self.bin_names_),
            bin_ranges=[list(r) for r in ranges],
            routing=self.routing_,
            precision=self.precision_,
            standardize=bool(self.standardize_),
            min_spectra=int(self.min_spectra_),
            max_bad_fraction=float(self.max_bad_fraction_),
            fallback=json.dumps(self.fallback_),
            solver=json.dumps(self.solver_),
            excluded=json.dumps(self.excluded_),
            train_store=self.train_store_,
            train_fingerprint=self.train_fingerprint_,
            train_content=getattr(self, "train_content_", ""),
            train_reads=json.dumps(getattr(self, "train_reads_", {})),
            timings=json.dumps(self.timings_),
        )
        gate = getattr(self, "gate_", None)
        if gate:
            ds = ds.assign_coords(
                gate_feature=("gate_feature", np.array(gate["features"], dtype=object))
            )
            ds["gate_mean"] = (("gate_feature",), gate["mean"])
            ds["gate_scale"] = (("gate_feature",), gate["scale"])
            ds["gate_coef"] = (("bin", "gate_feature"), gate["coef"])
            ds["gate_intercept"] = (("bin",), gate["intercept"])
            ds["gate_leak_coef"] = (("gate_feature",), gate["leak_coef"])
            ds.attrs["gate"] = json.dumps(
                {
                    k: gate[k]
                    for k in (
                        "leak_intercept",
                        "n_train",
                        "train_accuracy",
                        "leak_r2_train",
                        "feature_set",
                    )
                }
                | {"classes": [int(c) for c in gate["classes"]]}
            )
        cv = getattr(self, "cv_", None)
        if cv:
            ds = ds.assign_coords(alpha_grid=("alpha_grid", cv["alphas"]))
            ds["cv_mse"] = ((EXPERT, "cv_fold", "alpha_grid"), cv["mse"])
            ds["cv_mean"] = ((EXPERT, "alpha_grid"), cv["mean"])
            ds["cv_se"] = ((EXPERT, "alpha_grid"), cv["se"])
            ds["cv_n_valid"] = ((EXPERT, "cv_fold"), cv["n_valid"])
            ds["coef_fixed"] = ((EXPERT, WAVELENGTH, TARGET), cv["coef_fixed"])
            ds["intercept_fixed"] = ((EXPERT, TARGET), cv["intercept_fixed"])
            ds.attrs.update(
                cv_folds=int(cv["folds"]),
                cv_seed=int(cv["seed"]),
                cv_alpha_fixed=cv["alpha_fixed"],
                cv_method=cv["method"],
            )
        return ds

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model to a Zarr store atomically (temporary path, then rename).

        ``overwrite`` replaces only a model store this tool wrote, and never the
        training store.
        """
        check_is_fitted(self)
        ds = self.to_dataset()
        # The histogram of the SNR that routed the training spectra, for the report
        # (a loaded model keeps the histogram, not the SNRs).
        if hasattr(self, "route_snr_"):
            snr = self.route_snr_[np.isfinite(self.route_snr_)]
            hist_edges = np.linspace(0.0, max(12.0, float(snr.max(initial=0)) + 0.5), 121)
            counts, _ = np.histogram(snr, bins=hist_edges)
        else:
            hist_edges, counts = self.train_snr_hist_
        ds["train_snr_hist"] = (("snr_hist_bin",), counts.astype(np.int64))
        ds["train_snr_edges"] = (("snr_hist_edge",), hist_edges)
        with atomic_path(
            path, overwrite=overwrite, kind="model", inputs=[self.train_store_]
        ) as tmp:
            write_zarr(ds, tmp)
        return Path(path)


def cv_graph(total, settings: dict) -> list | None:
    """Per expert, one task pooling its statistics per fold, then one task per fold
    computing the held-out error over the alpha grid; None without cross-validation.

    The fold tasks depend only on their expert's pooled statistics (K x P²),
    not on the whole accumulator, so the scheduler spreads them over workers.
    """
    from .cv import expert_folds, fold_sse_task, gcv_task

    cv = settings["cv"]
    if not cv:
        return None
    n_bins = len(settings["names"])
    groups = [list(range(n_bins))] + [[k] for k in range(n_bins)]
    out = []
    for slots in groups:
        folds = dask.delayed(expert_folds, pure=True)(total, slots, cv["folds"])
        if cv["method"] == "gcv":  # one eigendecomposition per expert
            out.append(
                [dask.delayed(gcv_task, pure=True)(folds, cv["alphas"], settings["standardize"])]
            )
            continue
        out.append(
            [
                dask.delayed(fold_sse_task, pure=True)(
                    folds, f, cv["alphas"], settings["standardize"]
                )
                for f in range(cv["folds"])
            ]
        )
    return out


def load_model(path: str | os.PathLike) -> SNRBinnedRidge:
    """Read a model written by :meth:`SNRBinnedRidge.save` (arrays and JSON only)."""
    name = str(path)
    if not Path(name).exists():
        raise FileNotFoundError(f"model store {name!r} does not exist; fit one with `snr-moe fit`")
    import zarr

    from .rows import check_complete

    try:
        check_complete(name, zarr.open_group(name, mode="r"))
        ds = open_zarr_quietly(name).load()
    except StoreError as exc:
        raise StoreError(f"model {exc}") from None
    except Exception as exc:  # any zarr failure (a chunk failing its checksum...): name the store
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ValueError(f"cannot read model store {name!r}: {detail}") from exc
    version = ds.attrs.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"model store {name!r} has format_version {version!r}, but this snr_moe_dask "
            f"reads versions up to {MODEL_FORMAT_VERSION}; upgrade snr_moe_dask to read it"
        )
    _check_model_store(ds, name)
    a = ds.attrs
    model = SNRBinnedRidge(
        alpha={e: float(v) for e, v in zip(ds[EXPERT].values.tolist(), ds["alpha"].values)},
        bins=list(a["bin_edges"]),
        bin_names=list(a["bin_names"]),
        routing=a["routing"],
        target=[str(t) for t in ds[TARGET].values],
        precision=a["precision"],
        standardize=a["standardize"],
        min_spectra=a["min_spectra"],
        max_bad_fraction=a["max_bad_fraction"],
    )
    model.coef_ = ds["coef"].values
    model.intercept_ = ds["intercept"].values
    model.mean_x_ = ds["mean_x"].values
    model.experts_ = [str(e) for e in ds[EXPERT].values]
    model.n_train_ = ds["n_train"].values
    model.alpha_ = ds["alpha"].values
    model.fallback_ = json.loads(a["fallback"])
    model.solver_ = json.loads(a["solver"])
    model.excluded_ = json.loads(a["excluded"])
    model.bin_edges_ = list(a["bin_edges"])
    model.bin_names_ = list(a["bin_names"])
    model.routing_ = a["routing"]
    model.precision_ = a["precision"]
    model.standardize_ = a["standardize"]
    model.min_spectra_ = a["min_spectra"]
    model.max_bad_fraction_ = a["max_bad_fraction"]
    model.targets_ = [str(t) for t in ds[TARGET].values]
    model.n_features_in_ = ds.sizes[WAVELENGTH]
    model.wavelength_ = ds[WAVELENGTH].values
    model.train_store_ = a.get("train_store", "")
    model.train_fingerprint_ = a.get("train_fingerprint", "")
    model.train_content_ = a.get("train_content", "")
    model.train_reads_ = json.loads(a.get("train_reads", "{}"))
    model.timings_ = json.loads(a.get("timings", "{}"))
    model.train_snr_hist_ = (ds["train_snr_edges"].values, ds["train_snr_hist"].values)
    model.gate_ = None
    if "gate_coef" in ds:
        model.gate_ = {
            "features": [str(f) for f in ds["gate_feature"].values],
            "mean": ds["gate_mean"].values,
            "scale": ds["gate_scale"].values,
            "coef": ds["gate_coef"].values,
            "intercept": ds["gate_intercept"].values,
            "leak_coef": ds["gate_leak_coef"].values,
            **json.loads(a["gate"]),
        }
        model.gate_["classes"] = np.array(model.gate_["classes"])
    model.cv_ = None
    if "cv_mse" in ds:
        model.cv_ = {
            "alphas": ds["alpha_grid"].values,
            "folds": int(a["cv_folds"]),
            "seed": int(a["cv_seed"]),
            "method": a.get("cv_method", "kfold"),
            "alpha_fixed": float(a["cv_alpha_fixed"]),
            "mse": ds["cv_mse"].values,
            "mean": ds["cv_mean"].values,
            "se": ds["cv_se"].values,
            "n_valid": ds["cv_n_valid"].values,
            "coef_fixed": ds["coef_fixed"].values,
            "intercept_fixed": ds["intercept_fixed"].values,
        }
    model.path_ = name
    return model


_MODEL_VARS = (
    "coef",
    "intercept",
    "mean_x",
    "n_train",
    "alpha",
    "train_snr_hist",
    "train_snr_edges",
)
_MODEL_ATTRS = (
    "bin_edges",
    "bin_names",
    "routing",
    "precision",
    "standardize",
    "min_spectra",
    "max_bad_fraction",
    "fallback",
    "solver",
    "excluded",
)
_GATE_VARS = ("gate_mean", "gate_scale", "gate_intercept", "gate_leak_coef")
_CV_VARS = ("cv_mean", "cv_se", "cv_n_valid", "coef_fixed", "intercept_fixed")


def _check_model_store(ds: xr.Dataset, name: str) -> None:
    """Name what a damaged or incomplete model store lacks, instead of a KeyError."""
    missing = [v for v in _MODEL_VARS if v not in ds.variables]
    missing += [v for v in _GATE_VARS if "gate_coef" in ds and v not in ds]
    missing += [v for v in _CV_VARS if "cv_mse" in ds and v not in ds]
    if "gate_coef" in ds and "gate" not in ds.attrs:
        missing.append("attribute 'gate'")
    missing += [f"attribute {a!r}" for a in _MODEL_ATTRS if a not in ds.attrs]
    if EXPERT not in ds.coords or TARGET not in ds.coords or WAVELENGTH not in ds.coords:
        missing.append("coordinates 'expert', 'target' and 'wavelength'")
    if missing:
        raise StoreError(
            f"model store {name!r} is damaged or incomplete: it lacks {', '.join(missing)}; "
            "fit the model again (`snr-moe fit`) or restore the store from a copy"
        )


# ---------------------------------------------------------------------- inputs


def _arrays_from_dataset(ds: xr.Dataset, settings: dict, need_targets: bool = True) -> dict:
    from .io import validate_spectra

    name = ds.encoding.get("source", "<in-memory dataset>")
    require = list(settings["targets"]) if need_targets else []
    if settings["routing"] == "oracle":
        require.append("snr")
    validate_spectra(ds, name, require=require)
    out = {
        "flux": _as_dask(ds["flux"].data),
        "error": _as_dask(ds["error"].data),
        "wavelength": ds[WAVELENGTH].values,
    }
    if "mask" in ds:
        out["mask"] = _as_dask(ds["mask"].data)
    if "snr" in ds:
        out["snr"] = _as_dask(ds["snr"].data)
    if settings["targets"]:
        out["y"] = da.stack([_as_dask(ds[t].data) for t in settings["targets"]], axis=1)
    return out


def _as_dask(a) -> da.Array:
    if isinstance(a, da.Array):
        return a
    a = np.asarray(a)
    return da.from_array(a, chunks=(2048,) + a.shape[1:])


def _arrays_from_input(X, y, snr, error, mask, settings) -> dict:
    flux = _as_dask(X) if not isinstance(X, da.Array) else X
    if flux.ndim != 2:
        raise ValueError(f"X must have shape (n_spectra, n_pixels); got shape {flux.shape}")
    rows = flux.chunks[0]
    out = {"flux": flux}
    out["error"] = (
        da.ones(flux.shape, chunks=flux.chunks, dtype=flux.dtype)
        if error is None
        else _as_dask(error).rechunk(flux.chunks)
    )
    if mask is not None:
        out["mask"] = _as_dask(mask).rechunk(flux.chunks)
    if snr is not None:
        out["snr"] = _as_dask(snr).rechunk((rows,))
    elif settings["routing"] == "oracle":
        raise ValueError(
            "oracle routing needs the true SNR: pass snr=<array of shape (n_spectra,)>, "
            "or routing='observed' with error=<array>"
        )
    if settings["targets"] or y is not None:
        if y is None:
            raise ValueError("y is required when X is an array")
        y = _as_dask(y)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape[0] != flux.shape[0]:
            raise ValueError(f"X has {flux.shape[0]} spectra but y has {y.shape[0]}")
        out["y"] = y.rechunk((rows, -1))
        settings["targets"] = [f"y{i}" for i in range(y.shape[1])] if y.shape[1] > 1 else ["y"]
    return out


def _check_dask_shape(model, X: da.Array, reset: bool) -> None:
    """The checks ``validate_data`` makes, by shape, for a lazy array."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2D array of shape (n_spectra, n_pixels), got shape {X.shape}; "
            "Reshape your data"
        )
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with shape {X.shape}; {_SUPPORTED_INPUT}")
    if not reset and X.shape[1] != model.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(model).__name__} is expecting "
            f"{model.n_features_in_} features as input"
        )


def _default_partitions() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def _package_version() -> str:
    from . import __version__

    return __version__
