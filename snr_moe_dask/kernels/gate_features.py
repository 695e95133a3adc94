"""The gate's features: quality feature sets, per-spectrum variables and the leading
principal components of the spectra (numpy kernels).

A feature spec is a comma-separated list of items (``"snr"``, ``"snr,pca:4"``,
``"error,mag"``):

``snr``, ``error``
    The quality feature sets of :mod:`snr_moe_dask.kernels.quality`.
``pca:K``
    The projections of the centred flux on the ``K`` leading principal
    components of the training spectra: the top eigenvectors of the global
    model's centred Gram matrix ``S_xx``, which the fit's pass already holds
    (no extra pass over the data). A bad pixel is imputed with the training
    mean, so its centred value is zero, as the experts impute it.
any other name
    A per-spectrum variable (:mod:`snr_moe_dask.kernels.variables`): a store
    variable such as ``mag``, or a derived one such as ``error_median``.

The features are the items' columns in the spec's order.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .quality import FEATURE_SETS

PCA = "pca"


def parse_features(spec) -> tuple[str, ...]:
    """The items of a feature spec, canonical (``pca:K`` with K >= 1), without repeats.

    Parameters
    ----------
    spec : str or sequence of str

    Raises
    ------
    ValueError
        For an empty spec, a malformed ``pca:K`` or a repeated item.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item.startswith(PCA + ":") or item == PCA:
            count = item.partition(":")[2]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"gate feature {item!r}: expected pca:K with K >= 1 leading components"
                )
            item = f"{PCA}:{int(count)}"
        out.append(item)
    if not out or len(set(out)) != len(out) or sum(i.startswith(PCA) for i in out) > 1:
        raise ValueError(
            f"gate features must be a non-empty list without repeats (one pca:K at most), e.g. "
            f"snr,pca:4; got {spec!r}"
        )
    return tuple(out)


def n_components(items) -> int:
    """The number of principal components the items ask for (0 without ``pca:K``)."""
    return sum(int(i.partition(":")[2]) for i in items if i.startswith(PCA + ":"))


def variables_needed(items) -> list[str]:
    """The per-spectrum variables among the items (neither feature sets nor ``pca:K``)."""
    return [i for i in items if i not in FEATURE_SETS and not i.startswith(PCA + ":")]


def feature_names(items) -> list[str]:
    """One name per feature column: sets expanded, ``pc1 ... pcK`` for ``pca:K``."""
    names: list[str] = []
    for item in items:
        if item in FEATURE_SETS:
            names.extend(FEATURE_SETS[item])
        elif item.startswith(PCA + ":"):
            names.extend(f"pc{j + 1}" for j in range(n_components([item])))
        else:
            names.append(item)
    return names


def base_names(items) -> list[str]:
    """The variables of the columns that are not principal components, in order."""
    return [n for n in feature_names(items) if not _is_pc(n)]


def _is_pc(name: str) -> bool:
    return name.startswith("pc") and name[2:].isdigit()


def principal_components(gram: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading eigenvectors of a centred Gram matrix, shape (k, n_pixels).

    Only the top ``k`` eigenpairs are computed (LAPACK ``syevr``). Each
    vector's sign makes its largest-magnitude entry positive, so the result
    does not depend on the LAPACK build.

    Parameters
    ----------
    gram : ndarray of shape (n_pixels, n_pixels)
        Valid on and above the diagonal.
    k : int
    """
    p = gram.shape[0]
    k = min(int(k), p)
    _, vectors = scipy.linalg.eigh(
        gram, lower=False, subset_by_index=[p - k, p - 1], driver="evr", check_finite=False
    )
    vectors = vectors[:, ::-1].T.copy()  # leading first
    peak = np.argmax(np.abs(vectors), axis=1)
    vectors *= np.sign(vectors[np.arange(k), peak])[:, None]
    return vectors


def project(flux: np.ndarray, bad: np.ndarray, mean: np.ndarray, components: np.ndarray):
    """Centred flux projected on the components, shape (m, k); bad pixels count as
    the mean (centred value zero)."""
    centred = flux.astype(np.float64) - mean
    if bad.any():
        centred[bad] = 0.0
    return centred @ components.T


def assemble(items, base: np.ndarray, projections: np.ndarray | None) -> np.ndarray:
    """The feature matrix in :func:`feature_names` order, from the base columns
    (:func:`base_names` order) and the projections (all ``pca`` columns, in order)."""
    names = feature_names(items)
    if projections is None or not projections.shape[1]:
        return base
    out = np.empty((len(base), len(names)))
    pcs = [j for j, n in enumerate(names) if _is_pc(n)]
    rest = [j for j, n in enumerate(names) if not _is_pc(n)]
    out[:, pcs], out[:, rest] = projections, base
    return out


def gate_matrix(items, base: np.ndarray, flux: np.ndarray, bad: np.ndarray, gate: dict):
    """The gate's feature matrix for a block: the base columns (:func:`base_names`
    order) and, for ``pca`` features, the block's projections on the gate's
    components."""
    projections = None
    if gate.get("components") is not None:
        projections = project(flux, bad, gate["component_mean"], gate["components"])
    return assemble(items, base, projections)
