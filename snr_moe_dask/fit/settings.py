"""The settings of one fit, resolved once and frozen.

:meth:`snr_moe_dask.model.SNRBinnedRidge.fit` resolves every setting from its
parameters and ``dask.config`` (:mod:`snr_moe_dask.options`) into one
:class:`FitSettings`, before anything is read. The fold, merge, solve and
gate tasks take it as it is: workers never read a setting themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..checks import ALPHA_METHODS
from ..kernels.binning import check_bins
from ..options import option, resolve

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
class FitSettings:
    """Every setting of a fit (see :class:`snr_moe_dask.model.SNRBinnedRidge`)."""

    edges: tuple[float, ...]
    names: tuple[str, ...]
    targets: tuple[str, ...]
    routing: str
    precision: str
    standardize: bool
    min_spectra: int
    max_bad_fraction: float
    alphas: tuple[float, ...]  # per expert: global, then the bins
    cv: CVSettings | None
    gate: str  # the gate's feature set, "" for no gate
    strict: bool
    partitions: int | None
    buffer_mb: float
    gate_max_train: int
    checkpoint_every: int
    calibration: int = 0  # about this many training spectra for the error model; 0: none
    calibration_bins: int = 16

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    @property
    def n_folds(self) -> int:
        """Statistics are kept per (bin, fold) slot; 1 without K-fold CV."""
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
        return self.cv.seed if self.cv else 0

    @property
    def experts(self) -> list[str]:
        return [GLOBAL, *self.names]

    def pass_fields(self) -> dict:
        """What changes the statistics of the pass (a checkpoint must match them)."""
        return {
            "edges": list(self.edges),
            "routing": self.routing,
            "max_bad_fraction": self.max_bad_fraction,
            "precision": self.precision,
            "strict": self.strict,
            "n_folds": self.n_folds,
            "cv_seed": self.cv_seed,
            "gate": self.gate,
            "buffer_mb": self.buffer_mb,
            "targets": list(self.targets),
        }

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_settings(params: dict) -> FitSettings:
    """Every setting of a fit from the estimator's parameters (``get_params()``),
    ``None`` resolved from ``dask.config``, each checked by its row of the option
    table (:mod:`snr_moe_dask.options`), before anything is read."""
    edges, names = check_bins(
        resolve("bins", params.get("bins")), resolve("bin_names", params.get("bin_names"))
    )
    routing = resolve("routing", params.get("routing"))
    given = params.get("gate")
    gate = resolve("gate", given)
    if gate and routing != "oracle" and given:
        raise ValueError(
            "gate=True needs oracle routing: the gate learns each spectrum's true SNR bin"
        )
    if gate and routing == "oracle":
        gate = given if isinstance(given, str) else resolve("gate_features")
    else:
        gate = ""
    alphas, cv = resolve_alphas(params, names)
    return FitSettings(
        edges=tuple(edges),
        names=tuple(names),
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
    )


def resolve_alphas(params: dict, names) -> tuple[list[float], CVSettings | None]:
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
    return values, cv
