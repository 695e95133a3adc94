"""``SNRBinnedRidge``: a global ridge model plus one ridge expert per SNR bin, or per cell
of any per-spectrum variables and grids of them.

The estimator follows scikit-learn's conventions: ``__init__`` stores its
arguments unchanged, ``None`` means "from :mod:`dask.config`", validation
happens in ``fit``, and fitted attributes end in ``_``. The fit itself is
:mod:`snr_moe_dask.fit`'s graph, predictions :mod:`snr_moe_dask.predict`'s;
a fitted model is saved by :mod:`snr_moe_dask.persist` as a Zarr store that
``xarray.open_zarr`` reads, with no pickle anywhere.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from . import inputs, persist
from .fit.graph import FitRecord, default_partitions, run_fit
from .fit.settings import FitSettings, resolve_settings, with_data
from .fitted import estimator_params, fitted_attributes


class SNRBinnedRidge(RegressorMixin, BaseEstimator):
    """Ridge regression with one expert per SNR bin (or per cell of any keys), fitted
    in one pass with Dask.

    Parameters
    ----------
    alpha : float, dict, "cv" or "gcv", optional
        Penalty. A dict maps expert names (``"global"`` and the bin names) to
        their own alpha. ``"cv"`` picks each expert's alpha by exact K-fold
        cross-validation over ``alphas``, ``"gcv"`` by generalized
        cross-validation (one eigendecomposition per expert), both from the
        same single pass (see :mod:`snr_moe_dask.kernels.cv`). Default
        ``snr-moe.fit.alpha`` (1e5).
    bins : sequence of float, optional
        SNR bin edges, right-closed. Default ``snr-moe.bins.edges`` (2, 4, 7).
    bin_names : sequence of str, optional
        One name per bin. Default ``snr-moe.bins.names`` (X, L, M, H).
    routing : {"oracle", "observed"}, optional
        Bin by the store's true ``snr`` or by the observed median flux/error.
    target : str or sequence of str, optional
        Label(s) to predict. Default ``["logg"]``.
    precision : {"refined", "float32", "float64"}, optional
        ``refined`` (default): float32 products, then one float64 refinement
        pass over the data, within 1e-6 x std(y) of a float64 fit; ``float32``:
        the float32 products alone (faster; 1e-6 to 1e-4 x std(y) off on
        ill-conditioned or badly centred data); ``float64``: float64 products.
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
        Also train the deployable gate (:mod:`snr_moe_dask.kernels.gate`) over
        the experts' cells, in the same pass; a string gives its features
        (``"snr"``, ``"error"``, ``"snr,pca:4"``, ``"snr,mag"``: see
        :mod:`snr_moe_dask.kernels.gate_features`). Needs oracle routing (the
        gate learns the true cell). Default ``snr-moe.fit.gate.enabled`` with
        ``snr-moe.fit.gate.features``.
    by : sequence, optional
        Key the experts by per-spectrum variables instead of ``bins``: e.g.
        ``[("teff", [4500, 5250]), ("mh", [-1, 0])]`` (a 3 x 3 grid of
        cells, named like ``teff(4500,5250]|mh(-1,0]``). A variable is a store
        variable (a label, the true ``snr``), ``observed_snr`` or a quality
        feature (:mod:`snr_moe_dask.kernels.variables`); edges are
        right-closed with open outer cells. ``bins=[2, 4, 7]`` is
        ``by=[("snr", [2, 4, 7])]`` with the cells named ``bin_names``.
    fine_bins : int, dict or list, optional
        With ``edges="auto"``: each key's fine bins, ``K`` quantile bins of its
        training values (an int for every key, or ``{"teff": 8}``), or its
        fine edges (``{"snr": [1, 2, 3, ...]}``). Default
        ``snr-moe.bins.fine-bins`` (8); a key's edges in ``by`` are its fine edges.
    edges : {"auto", "auto:B", "auto:B1,B2"}, optional
        Choose each key's coarse edges, runs of adjacent fine bins, by
        ``cv``-fold cross-validation of the oracle-routed mixture from the
        same pass (:mod:`snr_moe_dask.kernels.edges`): ``B`` bins per key
        (default ``snr-moe.bins.search-bins``, 4). ``edge_search_`` keeps the
        chosen edges and the CV error of the alternatives.

    Attributes
    ----------
    coef_ : ndarray of shape (n_experts, n_pixels, n_targets)
        Expert 0 is the global model; a fallback expert holds its coefficients.
    intercept_ : ndarray of shape (n_experts, n_targets)
    mean_x_ : ndarray of shape (n_experts, n_pixels)
    experts_ : list of str
        ``["global", *bin_names]``.
    keys_ : list of (str, list of float)
        The experts' keys and edges (``[("snr", [2, 4, 7])]`` for the SNR split).
    bin_edges_, bin_names_ : list
        The one key's edges (empty for a grid of keys), and the cells' names.
    edge_search_ : dict or None
        With ``edges="auto"``: the fine and chosen edges per key, the CV error
        of the chosen partition and of the best one for every number of bins,
        and of every run of fine bins (see :func:`snr_moe_dask.fit.solve.search_record`).
    n_train_ : ndarray of shape (n_experts,)
    alpha_ : ndarray of shape (n_experts,)
    fallback_ : dict of str to str
        Experts served by the global model, with the reason.
    solver_ : dict of str to dict
        Solver used per expert, and the reason for any fallback to ``eigh``.
    excluded_ : dict
        Counts of excluded spectra and bad pixels per bin.
    cv_ : dict or None
        With ``alpha="cv"``: ``alphas`` (n_alphas,), ``mse`` (n_experts,
        n_folds, n_alphas) per-fold held-out MSE, ``mean`` and ``se``
        (n_experts, n_alphas) across folds, ``n_valid`` (n_experts, n_folds),
        ``folds``, ``seed``, and the fixed-alpha solution from the same
        statistics for comparison (``alpha_fixed``, ``coef_fixed``,
        ``intercept_fixed``).
    gate_ : dict or None
        The trained gate (see :func:`snr_moe_dask.kernels.gate.fit_gate`), or None.
    calibration_ : dict or None
        Each expert's error model (see :mod:`snr_moe_dask.kernels.calibration`):
        ``snr_edges`` (n_experts, n_cal + 1), ``snr_centre`` (n_experts,
        n_cal), ``variance`` (n_experts, n_cal, n_targets) of the exact
        leave-one-out error, ``count`` (n_experts, n_cal), ``n_spectra``,
        ``chunks`` (those read again), ``task_seconds`` and ``method``; None
        without calibration.
    n_features_in_ : int
    wavelength_ : ndarray of shape (n_pixels,) or None
        The training grid (None for array input).
    train_store_, train_fingerprint_, train_content_ : str
        The training store, its fingerprint and the digest of what the fit read.
    train_reads_ : dict
        What the fit read from the store (targets, ``snr``, ``mask``).
    train_snr_hist_ : (ndarray, ndarray)
        Edges and counts of the SNR that routed the training spectra.
    timings_ : dict
        Seconds of the pass, the solve and the whole fit (and the refinement's).
    accuracy_ : dict
        With float32 products, per expert: ``estimate``, a conservative a-priori
        estimate of the float32 error of the training predictions (in units of
        the target's spread); with ``precision="refined"`` and an estimate above
        1e-6, also ``correction``, how far the float32 solution was off, and
        ``remaining``, the estimated error after the refinement rounds.
    path_ : str
        Where the model was saved or loaded from ("" before).

    The attributes are listed in :data:`snr_moe_dask.persist.FITTED`; a loaded
    model has them all, with the values the fitted one had. What only the fit
    that just ran knows (each training spectrum's SNR, the checkpoint counts)
    is in :attr:`fit_record`.
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
        calibration=None,
        by=None,
        fine_bins=None,
        edges=None,
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
        self.calibration = calibration
        self.by = by
        self.fine_bins = fine_bins
        self.edges = edges

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Non-finite pixels are bad pixels, imputed by design (see fit), and NaN
        # targets are excluded and counted, so NaN input is allowed.
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = False
        tags.target_tags.multi_output = True
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------ settings

    def _resolved(self) -> FitSettings:
        """Every setting of the fit, from the parameters or ``dask.config``, checked
        (see :mod:`snr_moe_dask.options`) before anything is read."""
        return resolve_settings(self.get_params())

    def open_training_store(self, path: str | os.PathLike) -> xr.Dataset:
        """Check the settings and open a training store lazily, with the variables this
        fit needs (its targets, and ``snr`` for oracle routing); nothing heavy is read."""
        return self._source(path, self._resolved())[1]

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X,
        y=None,
        *,
        snr=None,
        error=None,
        mask=None,
        variables=None,
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
        variables : dict of str to array-like of shape (n_spectra,), optional
            With array input: the store variables the keys (``by``) and the
            gate's features name, e.g. ``{"teff": ..., "mh": ...}``.
        checkpoint : path, optional
            With a store path: save each partition's accumulator to this
            directory as the pass goes (see :mod:`snr_moe_dask.store.checkpoint`).
            The checkpoints are kept; delete them with
            :func:`snr_moe_dask.store.checkpoint.remove` once the model is
            saved (``snr-moe fit`` does).
        resume : bool
            Continue from the checkpoints in ``checkpoint``: only the chunks
            they do not hold are read; :attr:`fit_record` says how many.
        overwrite_checkpoint : bool
            Start over when ``checkpoint`` already holds checkpoints.

        Returns
        -------
        self
        """
        t0 = time.perf_counter()
        settings = self._resolved()
        if not isinstance(X, str | os.PathLike | xr.Dataset):
            X, y = self._check_array_input(X, y, reset=True, require_y=True)
        arrays = {"y": y, "snr": snr, "error": error, "mask": mask, "variables": variables}
        source, ds = self._source(X, settings, **arrays)
        if source.path == "" and not isinstance(X, xr.Dataset):
            settings = replace(settings, targets=tuple(inputs.target_names(y)))
        settings = with_data(
            settings, source.n_pixels, sum(source.rows), inputs.values_reader(ds, snr, variables)
        )
        partitions = int(settings.partitions or default_partitions())
        solved, gate, record = run_fit(
            source,
            settings,
            partitions,
            checkpoint=checkpoint,
            resume=resume,
            overwrite_checkpoint=overwrite_checkpoint,
        )
        for name, value in fitted_attributes(solved, gate, settings, source).items():
            setattr(self, name, value)
        self.train_snr_hist_ = persist.snr_histogram(record.route_snr)
        self.timings_ = {
            "pass": solved["pass_seconds"],
            "solve": solved["seconds"],
            "total": time.perf_counter() - t0,
        }
        if "refine_seconds" in solved:  # the refinement's reads (task seconds) and its solve
            self.timings_["refine"] = solved["refine_seconds"]
        self._fit_record = record
        return self

    def _source(self, X, settings: FitSettings, **arrays) -> tuple[inputs.Source, object]:
        """The fit's input, checked: a store path, a Dataset or arrays."""
        with_snr, variables = settings.with_snr, settings.store_variables
        if isinstance(X, str | os.PathLike):
            return inputs.from_store(X, settings.targets, with_snr=with_snr, variables=variables)
        if isinstance(X, xr.Dataset):
            source = inputs.from_dataset(
                X, settings.targets, with_snr=with_snr, variables=variables
            )
            return source, X
        inputs.check_array_keys(with_snr, variables, arrays.get("snr"), arrays.get("variables"))
        return inputs.from_arrays(X, **arrays), None

    @property
    def fit_record(self) -> FitRecord | None:
        """What the fit that just ran knows and a loaded model does not: each
        training spectrum's SNR and routing SNR, and the chunks folded and
        restored from checkpoints (see :class:`snr_moe_dask.fit.graph.FitRecord`)."""
        return getattr(self, "_fit_record", None)

    def _check_array_input(self, X, y, *, reset: bool, require_y: bool):
        return inputs.check_arrays(self, X, y, reset=reset, require_y=require_y)

    # ------------------------------------------------------------------ predict

    def predict(self, X, *, snr=None, error=None, mask=None, routing=None, variables=None):
        """Predict with each spectrum's expert.

        Parameters
        ----------
        X : xarray.Dataset or array-like of shape (n_spectra, n_pixels)
        snr : array-like of shape (n_spectra,), optional
            With array input and oracle routing: the true SNR.
        error, mask : array-like, optional
            With array input: errors (for observed routing and bad pixels) and mask.
        variables : dict of str to array-like of shape (n_spectra,), optional
            With array input: the store variables the keys and the gate need.
        routing : {"oracle", "observed", "learned", "soft"}, optional
            Defaults to the routing the model was fitted with; ``learned``
            and ``soft`` use the model's gate.

        Returns
        -------
        ndarray or dask array of shape (n_spectra,) or (n_spectra, n_targets)
            Dask when the input is lazy.
        """
        from .predict.graph import needed_reads, parse_routings, prediction_arrays

        check_is_fitted(self)
        routing = parse_routings(routing, self.routing_)[0]
        with_snr, needed = needed_reads(self, [routing])
        if isinstance(X, xr.Dataset):
            source = inputs.from_dataset(X, with_snr=with_snr, variables=needed)
        else:
            X, _ = self._check_array_input(X, None, reset=False, require_y=False)
            inputs.check_array_keys(with_snr, needed, snr, variables)
            source = inputs.from_arrays(X, snr=snr, error=error, mask=mask, variables=variables)
        out = prediction_arrays(self, source, routing)["y_moe_all"]
        if len(self.targets_) == 1:
            out = out[:, 0]
        return out if isinstance(X, xr.Dataset | da.Array) else out.compute()

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

    def fitted_state(self) -> dict:
        """The fitted attributes (:data:`snr_moe_dask.persist.FITTED`) by name."""
        check_is_fitted(self)
        return {name: getattr(self, name) for name in persist.FITTED}

    def to_dataset(self) -> xr.Dataset:
        """Return the fitted model as an xarray Dataset (what ``save`` writes)."""
        return persist.to_dataset(self.fitted_state())

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model to a Zarr store atomically (temporary path, then rename).

        ``overwrite`` replaces only a model store this tool wrote, and never the
        training store.
        """
        written = persist.write_model(self.fitted_state(), path, overwrite=overwrite)
        self.path_ = str(path)
        return written


def load_model(path: str | os.PathLike) -> SNRBinnedRidge:
    """Read a model written by :meth:`SNRBinnedRidge.save` (arrays and JSON only)."""
    state = persist.read_model(path)
    model = SNRBinnedRidge(**estimator_params(state))
    for name, value in state.items():
        setattr(model, name, value)
    return model
