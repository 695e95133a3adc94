"""The settings of one fit, resolved once and frozen.

:meth:`snr_moe_dask.model.SNRBinnedRidge.fit` resolves every setting from its
parameters and ``dask.config`` (:mod:`snr_moe_dask.options`) into one
:class:`FitSettings`, before anything is read; :func:`with_data` then fills
in what depends on the training data's size and its keys' values (quantile
fine edges, packing, the gate's flux sample), still before the pass. The
fold, merge, solve and gate tasks take it as it is: workers never read a
setting themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..checks import ALPHA_METHODS
from ..kernels import cells, packed
from ..kernels.gate_features import base_names, n_components, parse_features
from ..kernels.variables import is_derived, routed_variable, store_variables
from ..options import option, resolve
from .keys import resolve_keys

GLOBAL = "global"


@dataclass(frozen=True)
class CVSettings:
    """How each expert's alpha is chosen: ``method`` "kfold" (``folds`` >= 2) or
    "gcv" (one "fold"), over the grid ``alphas``; ``alpha_fixed`` is solved alongside."""

    method: str
    folds: int
    seed: int
    alphas: tuple[float, ...]
    alpha_fixed: float


@dataclass(frozen=True)
class SearchSettings:
    """``edges="auto"``: ``bins`` coarse bins per key, chosen by ``folds``-fold CV
    (``seed``) of the oracle-routed mixture over merges of adjacent fine bins; the
    cells' alphas from ``alphas`` (``alpha="cv"``) or ``alpha`` for every model."""

    bins: tuple[int, ...]
    folds: int
    seed: int
    method: str
    alpha: float
    alphas: tuple[float, ...] | None


@dataclass(frozen=True)
class FitSettings:
    """Every setting of a fit (see :class:`snr_moe_dask.model.SNRBinnedRidge`).

    ``keys`` are the keys of the pass, ``(variable, edges)``: the experts'
    keys, or with a search the fine keys (``edges`` None until
    :func:`with_data` computes ``fine[k]`` quantile edges). ``names`` are the
    experts' cell names, empty until a search chooses the cells.
    """

    keys: tuple[tuple[str, tuple[float, ...] | None], ...]
    names: tuple[str, ...]
    targets: tuple[str, ...]
    routing: str
    precision: str
    standardize: bool
    min_spectra: int
    max_bad_fraction: float
    alphas: tuple[float, ...]  # per expert: global, then the cells (one with a search)
    cv: CVSettings | None
    gate: str  # the gate's feature spec, "" for no gate
    strict: bool
    partitions: int | None
    buffer_mb: float
    gate_max_train: int
    checkpoint_every: int
    calibration: int = 0  # about this many training spectra for the error model; 0: none
    calibration_bins: int = 16
    search: SearchSettings | None = None
    fine: tuple[int | None, ...] = ()
    gate_sample: int = 20000
    pack_above: float = 0.0
    packed: bool = False
    gate_stride: int = 0

    @property
    def grid(self) -> list[cells.Key]:
        """The pass keys as :class:`~snr_moe_dask.kernels.cells.Key` (edges resolved)."""
        return [cells.Key(name, edges) for name, edges in self.keys]

    @property
    def n_bins(self) -> int:
        """Cells of the pass (fine cells with a search)."""
        return math.prod(len(edges) + 1 for _, edges in self.keys)

    @property
    def edges(self) -> tuple[float, ...]:
        """The one key's edges (SNR bins); () for a grid of keys."""
        return self.keys[0][1] if len(self.keys) == 1 else ()

    @property
    def route_variables(self) -> list[str]:
        """The variable that routes each key in the pass."""
        return [routed_variable(name, self.routing) for name, _ in self.keys]

    @property
    def gate_items(self) -> tuple[str, ...]:
        return parse_features(self.gate) if self.gate else ()

    @property
    def pass_variables(self) -> list[str]:
        """Every per-spectrum variable the fold task needs: keys, then gate features."""
        return list(dict.fromkeys([*self.route_variables, *base_names(self.gate_items)]))

    @property
    def store_variables(self) -> list[str]:
        """The variables the pass reads from the store besides the targets and ``snr``."""
        return [v for v in store_variables(self.pass_variables) if v != "snr"]

    @property
    def with_snr(self) -> bool:
        return "snr" in self.pass_variables

    @property
    def n_folds(self) -> int:
        """Statistics are kept per (cell, fold) slot; 1 without K-fold CV or a search."""
        if self.search:
            return self.search.folds
        return self.cv.folds if self.cv else 1

    @property
    def products(self) -> str:
        """The dtype of the pass's products: float32 unless ``precision`` is float64."""
        return "float64" if self.precision == "float64" else "float32"

    @property
    def refine(self) -> bool:
        """Whether a float64 refinement pass follows the solve (``precision="refined"``)."""
        return self.precision == "refined"

    @property
    def cv_seed(self) -> int:
        if self.search:
            return self.search.seed
        return self.cv.seed if self.cv else 0

    @property
    def experts(self) -> list[str]:
        return [GLOBAL, *self.names]

    def pass_fields(self) -> dict:
        """What changes the statistics of the pass (a checkpoint must match them)."""
        return {
            "keys": [[name, list(edges)] for name, edges in self.keys],
            "routing": self.routing,
            "max_bad_fraction": self.max_bad_fraction,
            "precision": self.precision,
            "strict": self.strict,
            "n_folds": self.n_folds,
            "cv_seed": self.cv_seed,
            "gate": self.gate,
            "gate_stride": self.gate_stride,
            "packed": self.packed,
            "buffer_mb": self.buffer_mb,
            "targets": list(self.targets),
        }

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_settings(params: dict) -> FitSettings:
    """Every setting of a fit from the estimator's parameters (``get_params()``),
    ``None`` resolved from ``dask.config``, each checked by its row of the option
    table (:mod:`snr_moe_dask.options`), before anything is read."""
    keys, names, fine, bins = resolve_keys(params)
    routing = resolve("routing", params.get("routing"))
    for name, _ in keys:
        routed_variable(name, routing)  # observed routing of a label fails here
    gate = _resolve_gate(params, routing)
    alphas, cv = resolve_alphas(params, names, searched=bins is not None)
    search = None
    if bins is not None:
        search = _search_settings(params, bins, alphas[0], cv)
    return FitSettings(
        keys=keys,
        names=names,
        targets=tuple(resolve("target", params.get("target"))),
        routing=routing,
        precision=resolve("precision", params.get("precision")),
        standardize=bool(resolve("standardize", params.get("standardize"))),
        min_spectra=resolve("min_spectra", params.get("min_spectra")),
        max_bad_fraction=resolve("max_bad_fraction", params.get("max_bad_fraction")),
        alphas=tuple(float(a) for a in alphas),
        cv=cv,
        gate=gate,
        strict=bool(resolve("strict", params.get("strict"))),
        partitions=resolve("partitions", params.get("partitions")),
        buffer_mb=float(resolve("buffer_mb")),
        gate_max_train=resolve("gate_max_train"),
        checkpoint_every=resolve("checkpoint_every"),
        calibration=resolve("calibration", params.get("calibration")),
        calibration_bins=resolve("calibration_bins"),
        search=search,
        fine=fine,
        gate_sample=resolve("gate_sample"),
        pack_above=float(resolve("pack_above")),
    )


def _resolve_gate(params: dict, routing: str) -> str:
    """The gate's feature spec, or "" for no gate."""
    given = params.get("gate")
    gate = resolve("gate", given)
    if gate and routing != "oracle" and given:
        raise ValueError(
            "gate=True needs oracle routing: the gate learns each spectrum's true cell"
        )
    if not (gate and routing == "oracle"):
        return ""
    if isinstance(gate, str):
        return gate
    return resolve("gate_features", params.get("gate_features"))


def _search_settings(params: dict, bins, alpha: float, cv: CVSettings | None) -> SearchSettings:
    if cv is not None and cv.method == "gcv":
        raise ValueError(
            "edges='auto' chooses the edges by K-fold cross-validation; alpha='gcv' has no "
            "folds: pass alpha=<number> or alpha='cv'"
        )
    return SearchSettings(
        bins=bins,
        folds=cv.folds if cv else resolve("cv", params.get("cv")),
        seed=cv.seed if cv else resolve("cv_seed", params.get("cv_seed")),
        method=resolve("search_method"),
        alpha=cv.alpha_fixed if cv else float(alpha),
        alphas=cv.alphas if cv else None,
    )


def resolve_alphas(
    params: dict, names, *, searched: bool = False
) -> tuple[list[float], CVSettings | None]:
    """Per-expert alphas (the fixed ones, for ``"cv"``), and the CV settings or None."""
    alpha = params.get("alpha")
    alpha = option("alpha").default() if alpha is None else alpha
    experts = [GLOBAL, *names]
    cv = None
    if isinstance(alpha, str) and alpha.strip() not in ALPHA_METHODS:
        raise ValueError(f'alpha must be a number, a dict or "cv" (or "gcv"); got {alpha!r}')
    if isinstance(alpha, str):
        method = alpha.strip()
        cv = CVSettings(
            method="gcv" if method == "gcv" else "kfold",
            folds=1 if method == "gcv" else resolve("cv", params.get("cv")),
            seed=resolve("cv_seed", params.get("cv_seed")),
            alphas=tuple(float(a) for a in resolve("alphas", params.get("alphas"))),
            alpha_fixed=resolve("compare_alpha"),
        )
        alpha = cv.alpha_fixed
    if isinstance(alpha, dict):
        if searched:
            raise ValueError(
                "alpha cannot name experts with edges='auto': the search chooses the cells; "
                "pass one alpha for every model, or alpha='cv'"
            )
        unknown = set(alpha) - set(experts)
        if unknown:
            raise ValueError(
                f"alpha names experts {sorted(unknown)} that do not exist; "
                f"expected keys among {experts}"
            )
        default = float(option("alpha").default())
        values = [alpha.get(e, default) for e in experts]
    else:
        values = [alpha] * len(experts)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be >= 0 and finite; got {alpha!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"alpha must be >= 0 and finite; got {values}")
    if searched and not values[0] > 0:
        raise ValueError(f"edges='auto' needs alpha > 0 (the CV fits every run); got {values[0]}")
    return values, cv


def with_data(settings: FitSettings, n_pixels: int, n_spectra: int, values) -> FitSettings:
    """The settings with what depends on the training data, before the pass.

    Parameters
    ----------
    settings : FitSettings
    n_pixels, n_spectra : int
    values : callable
        ``values(name)`` returns a store variable's values, shape (n_spectra,):
        read for the quantile fine edges of a searched key (one small 1-D
        array per key, not a pass over the spectra).

    Returns
    -------
    FitSettings
        With the keys' quantile fine edges, ``packed`` (one chain's statistics
        would exceed ``pack_above`` GB unpacked) and ``gate_stride`` (every
        ``gate_stride``-th spectrum's flux is kept for the gate's principal
        components; 0 without them).
    """
    keys = list(settings.keys)
    for k, (name, edges) in enumerate(keys):
        if edges is not None:
            continue
        routed = routed_variable(name, settings.routing)
        if is_derived(routed):
            raise ValueError(
                f"key {name!r} routes by {routed!r}, which the pass computes from the "
                "spectra, so its quantile fine bins cannot be known before the pass: give its "
                f"fine edges (--fine-bins {name}:e1,e2,... or fine_bins={{{name!r}: [...]}})"
            )
        keys[k] = (name, tuple(cells.quantile_edges(values(routed), settings.fine[k])))
    _check_fine_counts(settings, keys)
    settings = replace(settings, keys=tuple(keys))
    n_slots = settings.n_bins * settings.n_folds
    size = packed.accumulator_bytes(n_slots, 1, n_pixels, len(settings.targets))
    stride = 0
    if n_components(settings.gate_items):
        stride = max(1, math.ceil(n_spectra / settings.gate_sample))
    return replace(settings, packed=size > settings.pack_above * 1e9, gate_stride=stride)


def _check_fine_counts(settings: FitSettings, keys) -> None:
    if settings.search is None:
        return
    for (name, edges), b in zip(keys, settings.search.bins):
        if len(edges) + 1 < b:
            raise ValueError(
                f"key {name!r} has {len(edges) + 1} fine bins (edges {list(edges)}), fewer "
                f"than the {b} coarse bins asked for: ask for fewer (--edges auto:"
                f"{len(edges) + 1}) or give more fine bins (--fine-bins)"
            )
