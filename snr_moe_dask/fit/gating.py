"""The fit's gate task: train the deployable gate over the experts' cells from what the
pass recorded (finalize).

It runs on the worker that holds the merged accumulator. It imports
scikit-learn's logistic regression only when it runs
(:func:`snr_moe_dask.kernels.gate.fit_gate`).
"""

from __future__ import annotations

import numpy as np

from ..kernels import stats
from ..kernels.gate_features import (
    assemble,
    feature_names,
    n_components,
    principal_components,
    project,
)
from .settings import FitSettings
from .tasks import gather


def train_gate(acc: dict, settings: FitSettings, choice: dict | None = None) -> dict | None:
    """Train the gate on the features recorded in the fit pass (graph task).

    Its classes are the experts' cells: each spectrum's cell in the pass, or,
    with a search (``choice`` from :func:`snr_moe_dask.fit.solve.choose_cells`),
    the coarse cell holding it. With ``pca:K`` features, the components are
    the leading eigenvectors of the global model's centred Gram matrix (the
    sum of every slot's), and the gate trains on the spectra whose flux the
    pass kept (every ``gate_stride``-th).

    Returns
    -------
    dict or None
        :func:`snr_moe_dask.kernels.gate.fit_gate`'s gate, with ``components``
        (K, n_pixels) and ``component_mean`` (n_pixels,) for ``pca:K``; None
        when no spectrum has finite features and a cell.
    """
    from ..kernels.gate import fit_gate

    items = settings.gate_items
    labels = gather(acc, "cell").astype(np.int64)
    n_cells = settings.n_bins
    if choice is not None:
        labels = np.where(labels >= 0, choice["mapping"][np.clip(labels, 0, None)], -1)
        n_cells = len(choice["names"])
    base, target = gather(acc, "features"), gather(acc, "target")
    if base.ndim == 1:  # no chunk recorded features
        base = base.reshape(0, 0)
    k = n_components(items)
    components = mean = projections = None
    if k:
        total = stats.total_stats(acc)
        components = principal_components(stats.slot_gram(total, 0), k)
        mean = total["mean_x"][0]
        rows = gather(acc, "sample_rows").astype(np.int64)
        flux = gather(acc, "sample_flux").reshape(len(rows), -1)
        projections = project(flux, np.isnan(flux), mean, components)
        base, labels, target = base[rows], labels[rows], target[rows]
    gate = fit_gate(
        assemble(items, base, projections),
        labels,
        target,
        n_cells,
        feature_set=settings.gate,
        max_rows=settings.gate_max_train,
        names=feature_names(items),
    )
    if gate is not None and k:
        gate.update(components=components, component_mean=mean)
    return gate
