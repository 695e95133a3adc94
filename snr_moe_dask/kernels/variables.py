"""Per-spectrum variables that key the experts or feed the gate (numpy kernels).

A variable is either read from the store (a label such as ``teff``, ``mh``,
``mag``, the true ``snr``, or any other variable of dims ``(spectrum,)``),
or *derived* from the spectra in the task that reads them:

``observed_snr``
    The median of flux / error over good pixels (what observed routing bins by).
``snr_median``, ``snr_mean``, ``error_mean``, ..., ``error_kurtosis``
    The gate's quality features (:mod:`snr_moe_dask.kernels.quality`).

Routing a key the ``observed`` way uses the key's observed version: the
observed SNR for ``snr``; a derived variable is observed already. Labels
have no observed version.
"""

from __future__ import annotations

import numpy as np

from .quality import FEATURE_SETS, error_features, quality_features

#: Variables with an observed version, and its name.
OBSERVED = {"snr": "observed_snr"}
#: Variables computed from flux and error, not read from the store.
DERIVED = ("observed_snr", *FEATURE_SETS["snr"], *FEATURE_SETS["error"])


def is_derived(name: str) -> bool:
    """Whether ``name`` is computed from the spectra rather than read from the store."""
    return name in DERIVED


def routed_variable(name: str, routing: str) -> str:
    """The variable that routes key ``name`` under ``routing`` (oracle or observed).

    Raises
    ------
    ValueError
        For observed routing of a key with no observed version.
    """
    if routing == "oracle" or is_derived(name):
        return name
    if name in OBSERVED:
        return OBSERVED[name]
    raise ValueError(
        f"routing {routing!r} needs an observed version of key {name!r}, and only "
        f"{sorted(OBSERVED)} have one ({', '.join(OBSERVED.values())}); route by "
        "'oracle', 'learned' or 'soft', or key the experts by an observed variable "
        "(observed_snr or a quality feature)"
    )


def store_variables(names) -> list[str]:
    """The variables among ``names`` that are read from the store, in order."""
    return [n for n in dict.fromkeys(names) if not is_derived(n)]


def spectrum_values(
    names,
    *,
    flux: np.ndarray,
    error: np.ndarray,
    bad: np.ndarray,
    snr: np.ndarray,
    snr_mean: np.ndarray | None,
    stored: dict,
) -> dict[str, np.ndarray]:
    """The values of ``names`` for one block of spectra.

    Parameters
    ----------
    names : iterable of str
    flux, error : ndarray of shape (m, n_pixels)
    bad : ndarray of bool, shape (m, n_pixels)
    snr : ndarray of shape (m,)
        The observed SNR (:func:`snr_moe_dask.kernels.snr.snr_statistics`).
    snr_mean : ndarray of shape (m,) or None
        The mean of flux / error, when already computed.
    stored : dict of str to ndarray of shape (m,)
        The store's variables read with the block (the true SNR as ``snr``).

    Returns
    -------
    dict of str to ndarray of float64, shape (m,)
    """
    names = list(dict.fromkeys(names))
    out: dict[str, np.ndarray] = {}
    errors = None
    for name in names:
        if not is_derived(name):
            if stored.get(name) is None:
                raise ValueError(f"variable {name!r} was not read with the spectra")
            out[name] = np.asarray(stored[name], dtype=np.float64)
        elif name in ("observed_snr", "snr_median"):
            out[name] = np.asarray(snr, dtype=np.float64)
        elif name == "snr_mean":
            out[name] = quality_features("snr", flux, error, bad, snr, snr_mean)[:, 1]
        else:
            if errors is None:
                errors = error_features(error, bad)
            out[name] = errors[:, FEATURE_SETS["error"].index(name)]
    return out
