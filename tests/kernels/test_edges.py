"""The edge search against explicit scikit-learn K-fold refits of every partition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_cells import MH_EDGES, TEFF_EDGES, brute_key_index, fine_accumulator, make_spectra

from snr_moe_dask.kernels import cells, cv, edge_costs, edges, runs, stats

N_FOLDS = 3
ALPHA = 10.0
GRID = np.array([0.3, 3.0, 30.0, 300.0])


class BruteForce:
    """The mixture's K-fold CV error of any partition by explicit ``Ridge`` refits.

    Every coarse cell is refitted with scikit-learn on the other folds of its
    own rows (found from the raw key values, not from the kernels), under
    the rules of the search: a cell with fewer than ``max(min_spectra, 1)``
    spectra, or a fold whose training part is empty, is scored by the
    global model refitted on the other folds of all spectra; with a grid,
    each model's alpha has the lowest mean per-fold MSE over its usable
    folds (the fixed alpha with fewer than two).
    """

    def __init__(self, x, y, fine_index, folds, *, alphas, min_spectra, standardize=False):
        self.x, self.y, self.folds, self.standardize = x, y, folds, standardize
        self.fine_index = fine_index  # (n_keys, n_spectra) per-key fine bin, -1 for no cell
        self.used = (fine_index >= 0).all(axis=0)
        self.alphas, self.min_spectra = alphas, max(min_spectra, 1)
        self.path = [ALPHA] if alphas is None else [*alphas, ALPHA]
        self.global_alpha, pred = self._model(self.used)
        self.global_sq = ((y - pred) ** 2).mean(axis=1)
        self._cache = {}

    def _held_out(self, rows, alpha):
        pred = np.full(self.y.shape, np.nan)
        for f in range(N_FOLDS):
            valid, train = rows & (self.folds == f), rows & (self.folds != f)
            if valid.any() and train.any():
                model = Ridge(alpha=alpha)
                if self.standardize:
                    model = make_pipeline(StandardScaler(), model)
                model.fit(self.x[train], self.y[train])
                pred[valid] = model.predict(self.x[valid])
        return pred

    def _model(self, rows):
        """(alpha, held-out predictions) of the model fitted on ``rows``."""
        preds = [self._held_out(rows, a) for a in self.path]
        if self.alphas is None:
            return ALPHA, preds[0]
        usable = [
            f for f in range(N_FOLDS) if np.isfinite(preds[0][rows & (self.folds == f)]).all()
        ]
        usable = [f for f in usable if (rows & (self.folds == f)).any()]
        if len(usable) < 2:
            return ALPHA, preds[-1]
        mean = [
            np.mean([((self.y - p)[rows & (self.folds == f)] ** 2).mean() for f in usable])
            for p in preds[:-1]
        ]
        best = int(np.argmin(mean))
        return self.alphas[best], preds[best]

    def rows_of(self, rect):
        rows = self.used.copy()
        for k, (first, last) in enumerate(rect):
            rows &= (self.fine_index[k] >= first) & (self.fine_index[k] <= last)
        return rows

    def cell(self, rect):
        """(sse, n, alpha, fallback) of the product cell of fine runs ``rect``."""
        if rect not in self._cache:
            rows = self.rows_of(rect)
            if rows.sum() < self.min_spectra:
                record = (self.global_sq[rows].sum(), rows.sum(), self.global_alpha, True)
            else:
                alpha, pred = self._model(rows)
                sq = ((self.y - pred) ** 2).mean(axis=1)
                sq = np.where(np.isnan(sq), self.global_sq, sq)
                record = (sq[rows].sum(), rows.sum(), alpha, False)
            self._cache[rect] = record
        return self._cache[rect]

    def error(self, cuts_per_key, shape):
        per_key = [runs.runs_of(c, k) for c, k in zip(cuts_per_key, shape)]
        total = sum(self.cell(rect)[0] for rect in itertools.product(*per_key))
        return total / self.used.sum()

    def all_errors(self, shape, n_bins):
        """{bins: {cuts: error}} for every partition into at most ``n_bins`` per key."""
        per_key = [
            [list(c) for b in range(1, nb + 1) for c in itertools.combinations(range(1, k), b - 1)]
            for k, nb in zip(shape, n_bins)
        ]
        out = {}
        for cuts in itertools.product(*per_key):
            bins = tuple(len(c) + 1 for c in cuts)
            out.setdefault(bins, {})[tuple(map(tuple, cuts))] = self.error(cuts, shape)
        return out


def setup(key_edges, *, alphas, min_spectra, seed=0, make=make_spectra, standardize=False):
    x, y, values = make(seed=seed)
    keys = {name: key_edges[name] for name in key_edges}
    shape = cells.grid_shape(keys)
    cell = cells.assign_cells(values, keys)
    folds = cv.assign_folds(np.arange(len(y)), N_FOLDS, 0)
    acc = fine_accumulator(x, y, cell, int(np.prod(shape)), folds, N_FOLDS)
    fine_index = np.array([brute_key_index(values[name], keys[name]) for name in keys])
    brute = BruteForce(
        x, y, fine_index, folds, alphas=alphas, min_spectra=min_spectra, standardize=standardize
    )
    return acc, shape, brute


def check_against_brute_force(result, brute, shape, n_bins):
    """Every computed cell, every bin count's best error and the chosen cuts."""
    computed = np.argwhere(np.isfinite(result["table_sse"]))
    assert len(computed) > 0
    for index in computed:
        rect = tuple((int(index[2 * k]), int(index[2 * k + 1])) for k in range(len(shape)))
        sse, n, alpha, fallback = brute.cell(rect)
        np.testing.assert_allclose(result["table_sse"][tuple(index)], sse, rtol=1e-8)
        assert result["table_n"][tuple(index)] == n
        assert result["table_alpha"][tuple(index)] == alpha
        assert result["table_fallback"][tuple(index)] == fallback
    everything = brute.all_errors(shape, n_bins)
    for bins, options in everything.items():
        best = min(options.values())
        np.testing.assert_allclose(
            result["errors_by_bins"][tuple(b - 1 for b in bins)], best, rtol=1e-8
        )
        found = tuple(map(tuple, result["cuts_by_bins"][bins]))
        np.testing.assert_allclose(options[found], best, rtol=1e-8)
    options = everything[tuple(n_bins)]
    ranked = sorted(options.values())
    if len(ranked) > 1:
        assert ranked[1] - ranked[0] > 1e-6 * ranked[0], "the test's optimum should be unique"
    assert tuple(map(tuple, result["cuts"])) == min(options, key=options.get)
    np.testing.assert_allclose(result["error"], ranked[0], rtol=1e-8)
    assert result["global_alpha"] == brute.global_alpha
    return everything


@pytest.mark.parametrize("alphas", [None, GRID], ids=["fixed", "grid"])
@pytest.mark.parametrize("min_spectra", [1, 60], ids=["experts", "fallback"])
def test_one_key_search_equals_sklearn_refits_of_every_merge(alphas, min_spectra):
    acc, shape, brute = setup({"teff": TEFF_EDGES}, alphas=alphas, min_spectra=min_spectra)
    result = edges.search_edges(
        acc, shape, 3, n_folds=N_FOLDS, alpha=ALPHA, alphas=alphas, min_spectra=min_spectra
    )
    check_against_brute_force(result, brute, shape, (3,))
    assert result["table_sse"][np.triu_indices(5)].size == np.isfinite(result["table_sse"]).sum()
    fallback = result["table_fallback"][np.triu_indices(5)]
    # fine bins 0 and 4 hold 48 and 44 spectra: alone they fall back under 60, merged they do not
    assert fallback.any() == (min_spectra == 60) and not fallback.all()
    if min_spectra == 1:
        assert result["solves"] == edges.count_solves(shape, 3, N_FOLDS, grid=alphas is not None)
    else:
        assert result["solves"] < edges.count_solves(shape, 3, N_FOLDS, grid=alphas is not None)
    coarse = result["coarse"]
    assert coarse["n"].sum() == result["n_spectra"] == brute.used.sum()
    np.testing.assert_allclose(coarse["sse"].sum() / result["n_spectra"], result["error"])


@pytest.mark.parametrize("alphas", [None, GRID], ids=["fixed", "grid"])
@pytest.mark.parametrize("min_spectra", [1, 70], ids=["experts", "fallback"])
def test_two_key_exact_search_equals_sklearn_refits_of_every_merge(alphas, min_spectra):
    key_edges = {"teff": [4800.0, 5600.0], "mh": MH_EDGES}
    acc, shape, brute = setup(key_edges, alphas=alphas, min_spectra=min_spectra)
    result = edges.search_edges(
        acc, shape, (2, 3), n_folds=N_FOLDS, alpha=ALPHA, alphas=alphas, min_spectra=min_spectra
    )
    everything = check_against_brute_force(result, brute, shape, (2, 3))
    assert len(everything) == 6 and result["errors_by_bins"].shape == (2, 3)
    assert result["table_fallback"].any() == (min_spectra == 70)
    bound = edges.count_solves(shape, (2, 3), N_FOLDS, grid=alphas is not None)
    assert bound == N_FOLDS * (5 * 6 + (2 if alphas is not None else 1))
    assert result["solves"] == bound if min_spectra == 1 else result["solves"] < bound
    names = cells.cell_names(
        cells.coarse_keys({"teff": key_edges["teff"], "mh": MH_EDGES}, result["cuts"])
    )
    assert len(names) == len(result["coarse"]["sse"]) == 6


def test_standardized_search_equals_scaler_pipeline_refits():
    acc, shape, brute = setup({"teff": TEFF_EDGES}, alphas=GRID, min_spectra=60, standardize=True)
    result = edges.search_edges(
        acc, shape, 3, n_folds=N_FOLDS, alpha=ALPHA, alphas=GRID, min_spectra=60, standardize=True
    )
    check_against_brute_force(result, brute, shape, (3,))


def test_a_run_extended_by_several_fine_bins_pools_like_a_fresh_merge():
    acc, shape, _ = setup({"teff": TEFF_EDGES}, alphas=None, min_spectra=1)
    costs = edge_costs.CellCosts(acc, shape, N_FOLDS, ALPHA, None, 1, False)
    costs.sse(((1, 1),))
    costs.sse(((1, 4),))  # extends the pooled run (1, 1) by three fine bins in place
    pooled = costs._running[1]
    fresh = cv.expert_folds(acc, [1, 2, 3, 4], N_FOLDS)
    for key in ("n", "mean_x", "mean_y", "sxy", "syy"):
        np.testing.assert_allclose(pooled[key], fresh[key], rtol=1e-12, atol=1e-12)
    for f in range(N_FOLDS):
        np.testing.assert_allclose(
            stats.full_gram(pooled["sxx"][f]), stats.full_gram(fresh["sxx"][f]), rtol=1e-12
        )
    again = edge_costs.CellCosts(acc, shape, N_FOLDS, ALPHA, None, 1, False)
    np.testing.assert_allclose(costs.sse(((1, 4),)), again.sse(((1, 4),)), rtol=1e-12)


def test_coordinate_search_is_a_coordinate_wise_optimum_of_the_true_errors():
    key_edges = {"teff": TEFF_EDGES[:3], "mh": MH_EDGES}  # 4 x 3 fine cells
    acc, shape, brute = setup(key_edges, alphas=None, min_spectra=1)
    result = edges.search_edges(
        acc, shape, (2, 2), n_folds=N_FOLDS, alpha=ALPHA, method="coordinate"
    )
    assert result["method"] == "coordinate"
    cuts = result["cuts"]
    np.testing.assert_allclose(result["error"], brute.error(cuts, shape), rtol=1e-8)
    options = brute.all_errors(shape, (2, 2))[(2, 2)]
    assert result["error"] >= min(options.values()) * (1 - 1e-8)
    for axis in range(2):  # no change of one key's cuts alone does better
        for key_cuts in itertools.combinations(range(1, shape[axis]), 1):
            other = [list(key_cuts) if k == axis else cuts[k] for k in range(2)]
            assert brute.error(other, shape) >= result["error"] * (1 - 1e-8)
    exact = edges.search_edges(acc, shape, (2, 2), n_folds=N_FOLDS, alpha=ALPHA)
    assert exact["error"] <= result["error"] * (1 + 1e-12)
    np.testing.assert_allclose(exact["error"], min(options.values()), rtol=1e-8)


def one_fold_cell_spectra(seed=0):
    """Spectra of :func:`make_spectra`, with four fold-0 spectra moved below 3500 K."""
    x, y, values = make_spectra(seed=seed)
    in_fold_0 = np.flatnonzero(cv.assign_folds(np.arange(len(y)), N_FOLDS, 0) == 0)
    values["teff"][in_fold_0[10:14]] = 3000.0
    return x, y, values


@pytest.mark.parametrize("alphas", [None, GRID], ids=["fixed", "grid"])
def test_a_cell_whose_spectra_are_all_in_one_fold_is_scored_by_the_global_model(alphas):
    key_edges = {"teff": [3500.0, *TEFF_EDGES[1:]]}
    acc, shape, brute = setup(key_edges, alphas=alphas, min_spectra=1, make=one_fold_cell_spectra)
    result = edges.search_edges(acc, shape, 3, n_folds=N_FOLDS, alpha=ALPHA, alphas=alphas)
    check_against_brute_force(result, brute, shape, (3,))
    rows = brute.rows_of(((0, 0),))
    assert rows.sum() == 4 and result["table_fallback"][0, 0] == False  # noqa: E712
    np.testing.assert_allclose(result["table_sse"][0, 0], brute.global_sq[rows].sum(), rtol=1e-8)
    assert result["table_alpha"][0, 0] == ALPHA  # fewer than 2 usable folds: fixed alpha


def test_a_one_value_grid_equals_the_fixed_alpha_cholesky_path():
    acc, shape, _ = setup({"teff": TEFF_EDGES}, alphas=None, min_spectra=1)
    fixed = edges.search_edges(acc, shape, 3, n_folds=N_FOLDS, alpha=ALPHA)
    grid = edges.search_edges(acc, shape, 3, n_folds=N_FOLDS, alpha=1.0, alphas=[ALPHA])
    np.testing.assert_allclose(grid["table_sse"], fixed["table_sse"], rtol=1e-10)
    assert grid["cuts"] == fixed["cuts"]


def test_partition_cv_error_scores_a_given_partition_like_the_search():
    acc, shape, brute = setup({"teff": TEFF_EDGES}, alphas=GRID, min_spectra=60)
    given = edges.partition_cv_error(
        acc, shape, [1, 3], n_folds=N_FOLDS, alpha=ALPHA, alphas=GRID, min_spectra=60
    )
    np.testing.assert_allclose(given["error"], brute.error([[1, 3]], shape), rtol=1e-8)
    assert given["coarse"]["fallback"].tolist() == [True, False, False]
    assert runs.n_runs(5, 1) == 1 and runs.n_runs(5, 2) == 9 and runs.n_runs(5, 3) == 15
    assert edges.count_solves(16, 4, 5) == 685


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_bins": 6}, r"n_bins\[0\]=6 must be an integer in 1 \.\.\. 5"),
        ({"n_bins": (2, 2)}, "n_bins has 2 entries for 1 keys"),
        ({"fine_shape": 4}, "acc has 15 slots; 4 fine cells x 3 folds need 12"),
        ({"n_folds": 1}, "n_folds must be an integer >= 2"),
        ({"alpha": 0.0}, "alpha must be a positive finite number"),
        ({"alphas": [1.0, -2.0]}, "alphas must be a non-empty grid of positive"),
        ({"method": "greedy"}, "method must be one of"),
    ],
)
def test_bad_search_arguments_name_the_parameter(kwargs, message):
    acc, _, _ = setup({"teff": TEFF_EDGES}, alphas=None, min_spectra=1)
    args = {"fine_shape": 5, "n_bins": 3, "n_folds": N_FOLDS, "alpha": ALPHA, **kwargs}
    with pytest.raises(ValueError, match=message):
        edges.search_edges(acc, args.pop("fine_shape"), args.pop("n_bins"), **args)
