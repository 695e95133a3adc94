"""A fit's results as the estimator's fitted attributes, and a loaded model's parameters.

:meth:`snr_moe_dask.model.SNRBinnedRidge.fit` sets :func:`fitted_attributes`;
:func:`snr_moe_dask.model.load_model` builds the estimator from
:func:`estimator_params` of the stored state. Every attribute is one of
:data:`snr_moe_dask.persist.FITTED`.
"""

from __future__ import annotations

from . import inputs
from .fit.settings import FitSettings
from .store.fingerprint import content_hash, store_fingerprint


def fitted_attributes(solved: dict, gate, settings: FitSettings, source) -> dict:
    """The fitted attributes from the solve's result, the gate, the settings and the
    source (all but ``train_snr_hist_`` and ``timings_``)."""
    out = {f"{key}_": solved[key] for key in ("coef", "intercept", "mean_x", "experts")}
    out.update({f"{key}_": solved[key] for key in ("n_train", "alpha", "fallback", "solver")})
    out.update(excluded_=solved["excluded"], cv_=solved["cv"], gate_=gate)
    out["calibration_"] = solved.get("calibration")
    refined = solved.get("accuracy", {})
    out["accuracy_"] = {
        name: {"estimate": estimate, **refined.get(name, {})}
        for name, estimate in solved.get("estimate", {}).items()
    }
    keys = [(str(name), [float(e) for e in edges]) for name, edges in solved["keys"]]
    path = source.path or (source.name if source.name not in (inputs.IN_MEMORY, "<arrays>") else "")
    out.update(
        keys_=keys,
        edge_search_=solved["search"],
        bin_edges_=list(keys[0][1]) if len(keys) == 1 else [],
        bin_names_=list(solved["experts"][1:]),
        routing_=settings.routing,
        precision_=settings.precision,
        standardize_=settings.standardize,
        min_spectra_=settings.min_spectra,
        max_bad_fraction_=settings.max_bad_fraction,
        targets_=list(settings.targets),
        n_features_in_=int(source.n_pixels),
        wavelength_=source.wavelength,
        train_store_=str(path),
        train_fingerprint_=source.fingerprint or (store_fingerprint(path) if path else ""),
        # What the pass read, as per-chunk digests: the store's content, for the
        # evaluation's check that a test store is not the training store.
        train_content_=content_hash(solved["digest"]) if len(solved["digest"]) else "",
        train_reads_=dict(source.reads),
        path_="",
    )
    return out


def is_snr_split(state: dict) -> bool:
    """Whether a model is the SNR split of ``bins`` (one key ``snr``, given edges)."""
    keys = state.get("keys_") or [("snr", state["bin_edges_"])]
    return [k[0] for k in keys] == ["snr"] and not state.get("edge_search_")


def estimator_params(state: dict) -> dict:
    """The parameters of a loaded model, so that ``SNRBinnedRidge(**params)`` fits
    the same experts: ``bins`` for the SNR split, else ``by`` (with a search, its
    fine keys and ``edges="auto:B..."``)."""
    params = {
        "alpha": dict(zip(state["experts_"], (float(a) for a in state["alpha_"]))),
        "routing": state["routing_"],
        "target": list(state["targets_"]),
        "precision": state["precision_"],
        "standardize": state["standardize_"],
        "min_spectra": state["min_spectra_"],
        "max_bad_fraction": state["max_bad_fraction_"],
    }
    search = state.get("edge_search_")
    if search:
        params["by"] = [(k["name"], list(k["fine_edges"])) for k in search["keys"]]
        params["edges"] = "auto:" + ",".join(str(int(b)) for b in search["n_bins"])
        params["alpha"] = float(search["alpha"])
    elif is_snr_split(state):
        params.update(bins=list(state["bin_edges_"]), bin_names=list(state["bin_names_"]))
    else:
        params.update(by=[(n, list(e)) for n, e in state["keys_"]])
        params["bin_names"] = list(state["bin_names_"])
    return params
