"""Experts keyed by any variables and grids of them, and edges chosen from the same pass,
against scikit-learn's Ridge refitted on each cell's rows and on every merge of fine bins."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from snr_moe_dask import open_spectra
from snr_moe_dask.kernels import cv
from snr_moe_dask.model import SNRBinnedRidge

TEFF, MH = [4500.0, 5250.0], [-1.0, 0.0]


def right_closed(values, edges):
    return np.digitize(values, edges, right=True)


@pytest.fixture(scope="module")
def train(store_pair):
    ds = open_spectra(store_pair[0])
    return {
        "path": str(store_pair[0]),
        "x": ds["flux"].values.astype(np.float64),
        "y": ds["logg"].values,
        **{v: ds[v].values for v in ("teff", "mh", "snr", "mag")},
    }


def test_each_cell_of_a_two_key_grid_equals_ridge_on_its_rows(train):
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=30.0,
            by=[("teff", TEFF), ("mh", MH)],
            precision="float64",
            min_spectra=1,
            gate=False,
        ).fit(train["path"])
    x, y = train["x"], train["y"]
    cell = right_closed(train["teff"], TEFF) * 3 + right_closed(train["mh"], MH)
    assert model.experts_[5] == "teff(4500,5250]|mh(-1,0]"
    assert model.keys_ == [("teff", TEFF), ("mh", MH)] and model.bin_edges_ == []
    scale = 1e-9 * np.std(y)
    refs = [Ridge(alpha=30.0).fit(x, y)]
    refs += [Ridge(alpha=30.0).fit(x[cell == k], y[cell == k]) for k in range(9)]
    for e, ref in enumerate(refs):
        rows = np.ones(len(y), bool) if e == 0 else cell == e - 1
        assert model.n_train_[e] == rows.sum()
        ours = x @ model.coef_[e, :, 0] + model.intercept_[e, 0]
        np.testing.assert_allclose(ours, ref.predict(x), atol=scale, rtol=0, err_msg=str(e))
        np.testing.assert_allclose(model.coef_[e, :, 0], ref.coef_, rtol=1e-7, atol=1e-12)


def test_a_key_on_a_derived_variable_and_array_input(train):
    x, y = train["x"][:1200], train["y"][:1200]
    edges = [10.0, 20.0]
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=5.0,
            by=[("mag", [21.0]), ("observed_snr", edges)],
            precision="float64",
            min_spectra=1,
            gate=False,
        ).fit(x, y, variables={"mag": train["mag"][:1200]})
    observed = np.median(x, axis=1)  # the errors default to one: flux / error is flux
    cell = right_closed(train["mag"][:1200], [21.0]) * 3 + right_closed(observed, edges)
    for k in np.unique(cell):
        ref = Ridge(alpha=5.0).fit(x[cell == k], y[cell == k])
        np.testing.assert_allclose(
            model.coef_[k + 1, :, 0], ref.coef_, rtol=1e-7, atol=1e-12, err_msg=str(k)
        )
    pred = model.predict(x, variables={"mag": train["mag"][:1200]})
    expert = model.coef_[cell + 1, :, 0]
    np.testing.assert_allclose(
        pred, np.einsum("np,np->n", x, expert) + model.intercept_[cell + 1, 0], rtol=1e-10
    )


# -- the edge search against refits of every merge of adjacent fine bins ---------------------


def brute_force(x, y, fine_index, folds, n_folds, alphas):
    """CV error of every partition by explicit K-fold ``Ridge`` refits of its cells: each
    cell takes the alpha of ``alphas`` with the lowest mean per-fold MSE."""
    cache = {}

    def cell_sse(rect):
        if rect not in cache:
            rows = np.ones(len(y), bool)
            for k, (lo, hi) in enumerate(rect):
                rows &= (fine_index[k] >= lo) & (fine_index[k] <= hi)
            per_alpha = []
            for alpha in alphas:
                sse = np.zeros(n_folds)
                for f in range(n_folds):
                    fit, held = rows & (folds != f), rows & (folds == f)
                    ridge = Ridge(alpha=alpha).fit(x[fit], y[fit])
                    sse[f] = ((y[held] - ridge.predict(x[held])) ** 2).sum()
                n_f = np.array([(rows & (folds == f)).sum() for f in range(n_folds)])
                per_alpha.append((np.mean(sse / n_f), sse.sum()))
            cache[rect] = min(per_alpha)[1]
        return cache[rect]

    def runs(cuts, n_fine):
        bounds = [0, *cuts, n_fine]
        return [(a, b - 1) for a, b in zip(bounds[:-1], bounds[1:])]

    return cell_sse, runs


@pytest.mark.parametrize(
    "by, fine, bins, alpha",
    [
        ([("snr", None)], 5, (3,), 20.0),
        ([("teff", None), ("mh", None)], 3, (2, 2), 20.0),
        ([("snr", None)], 4, (2,), "cv"),
    ],
    ids=["snr-5-fine", "teff-mh-3x3-fine", "snr-alpha-cv"],
)
def test_auto_edges_equal_a_brute_force_refit_over_every_merge(train, by, fine, bins, alpha):
    grid = [3.0, 300.0]
    params = {"alphas": grid} if alpha == "cv" else {}
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=alpha,
            by=by,
            fine_bins=fine,
            edges="auto:" + ",".join(map(str, bins)),
            cv=3,
            precision="float64",
            min_spectra=1,
            gate=False,
            **params,
        ).fit(train["path"])
    search = model.edge_search_
    fine_edges = [k["fine_edges"] for k in search["keys"]]
    index = [right_closed(train[name], e) for (name, _), e in zip(by, fine_edges)]
    folds = cv.assign_folds(np.arange(len(train["y"])), 3, 0)
    cell_sse, runs = brute_force(
        train["x"], train["y"], index, folds, 3, grid if alpha == "cv" else [alpha]
    )
    shapes = [len(e) + 1 for e in fine_edges]
    per_key = [
        [list(c) for b in range(1, nb + 1) for c in itertools.combinations(range(1, k), b - 1)]
        for k, nb in zip(shapes, bins)
    ]
    errors = {}
    for cuts in itertools.product(*per_key):
        rects = itertools.product(*[runs(c, k) for c, k in zip(cuts, shapes)])
        counts = tuple(len(c) + 1 for c in cuts)
        error = sum(cell_sse(r) for r in rects) / len(train["y"])
        errors.setdefault(counts, []).append((error, [list(c) for c in cuts]))
    best, cuts = min(errors[bins])
    assert [k["cuts"] for k in search["keys"]] == cuts
    np.testing.assert_allclose(search["error"], best, rtol=1e-8)
    for counts, options in errors.items():
        got = search["errors_by_bins"][tuple(b - 1 for b in counts)]
        np.testing.assert_allclose(got, min(options)[0], rtol=1e-8, err_msg=str(counts))
    chosen = [[e[c - 1] for c in k_cuts] for e, k_cuts in zip(fine_edges, cuts)]
    assert model.keys_ == [(name, edges) for (name, _), edges in zip(by, chosen)]
    assert len(model.experts_) == 1 + int(np.prod(bins))
