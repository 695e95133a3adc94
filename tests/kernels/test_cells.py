"""Cells of a grid of keys, merges of fine cells into coarse ones, and packed triangles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from snr_moe_dask.kernels import cells, cv, packed, solve, stats

# -- shared data: two label keys, several targets --------------------------------------------

TEFF_EDGES = [4200.0, 4900.0, 5300.0, 6300.0]  # 5 fine bins, uneven (48 to 240 spectra)
MH_EDGES = [-1.2, -0.3]  # 3 fine bins


def make_spectra(n: int = 600, n_pixels: int = 12, n_targets: int = 2, seed: int = 0):
    """Flux, targets and two keys (teff, mh) whose regions need different coefficients."""
    rng = np.random.default_rng(seed)
    teff = rng.uniform(4000.0, 6500.0, n)
    mh = rng.uniform(-2.0, 0.5, n)
    x = rng.normal(size=(n, n_pixels)) * rng.uniform(0.5, 2.0, n_pixels) + 1.0
    w0, w1, w2 = (rng.normal(size=(n_pixels, n_targets)) for _ in range(3))
    hot, rich = (teff > 5000.0)[:, None], (mh > -0.6)[:, None]
    y = x @ w0 + hot * (x @ w1) + rich * (x @ w2) + 0.5 * rng.normal(size=(n, n_targets))
    teff[[3, 77, 410]] = np.nan  # no cell: excluded from every statistic
    return x, y, {"teff": teff, "mh": mh}


def fine_accumulator(x, y, cell, n_cells, folds, n_folds, chunk=170):
    """Per-(fine cell, fold) statistics from numpy arrays, in chunks.

    ``stats.fold_chunk`` routes by an SNR through right-closed bin edges, so
    routing by the cell index itself with edges ``0.5, 1.5, ..., n_cells - 1.5``
    puts cell ``k`` in bin ``k``; spectra with no cell (-1) get a NaN routing
    value and are excluded as the fit excludes a NaN SNR.
    """
    route = np.where(cell >= 0, cell, np.nan).astype(np.float64)
    edges = list(np.arange(n_cells - 1) + 0.5)
    acc = None
    for start in range(0, len(y), chunk):
        rows = slice(start, start + chunk)
        acc = stats.fold_chunk(
            acc,
            x[rows],
            y[rows],
            np.zeros(x[rows].shape, dtype=bool),
            route[rows],
            edges=edges,
            max_bad_fraction=1.0,
            precision="float64",
            folds=folds[rows],
            n_folds=n_folds,
        )
    return acc


def brute_key_index(values, edges):
    """Right-closed cell of each value by an explicit loop: the number of edges below it."""
    return np.array([-1 if np.isnan(v) else sum(e < v for e in edges) for v in values])


# -- assignment ------------------------------------------------------------------------------

edge_lists = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), max_size=6, unique=True
).map(sorted)


def key_values(data, edges, min_size, max_size):
    """Values of one key: any floats, NaN, +-inf and the edges themselves."""
    specials = [np.nan, np.inf, -np.inf, *edges]
    element = st.one_of(st.floats(-2e6, 2e6), st.sampled_from(specials))
    drawn = data.draw(st.lists(element, min_size=min_size, max_size=max_size))
    return np.array(drawn, dtype=np.float64)


@settings(max_examples=60, deadline=None)
@given(edges=edge_lists, data=st.data())
def test_one_key_assignment_equals_a_brute_force_loop(edges, data):
    values = key_values(data, edges, 0, 40)
    got = cells.assign_cells({"v": values}, {"v": edges})
    np.testing.assert_array_equal(got, brute_key_index(values, edges))
    assert got.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(edges_a=edge_lists, edges_b=edge_lists, data=st.data())
def test_two_key_assignment_is_the_c_order_product(edges_a, edges_b, data):
    a = key_values(data, edges_a, 0, 30)
    b = key_values(data, edges_b, a.size, a.size)
    keys = [("a", edges_a), ("b", edges_b)]
    ia, ib = brute_key_index(a, edges_a), brute_key_index(b, edges_b)
    expected = [-1 if i < 0 or j < 0 else i * (len(edges_b) + 1) + j for i, j in zip(ia, ib)]
    np.testing.assert_array_equal(cells.assign_cells([a, b], keys), expected)
    np.testing.assert_array_equal(cells.assign_cells({"b": b, "a": a}, keys), expected)


def test_values_on_an_edge_are_in_the_lower_cell_and_nan_has_none():
    keys = {"teff": [4500, 5250], "mh": [-1, 0]}
    values = {"teff": [4500.0, 4500.1, np.nan, 1e9], "mh": [0.0, -1.0, 0.0, -np.inf]}
    np.testing.assert_array_equal(cells.assign_cells(values, keys), [1, 3, -1, 6])
    assert cells.grid_shape(keys) == (3, 3)


# -- names -----------------------------------------------------------------------------------


def test_cell_names_follow_the_cell_index():
    keys = {"teff": [4500, 5250], "mh": [-1, 0]}
    names = cells.cell_names(keys)
    assert len(names) == 9 and len(set(names)) == 9
    assert names[0] == "teff(-inf,4500]|mh(-inf,-1]"
    assert names[4] == "teff(4500,5250]|mh(-1,0]"
    assert names[8] == "teff(5250,inf)|mh(0,inf)"
    cell = cells.assign_cells({"teff": [5000.0], "mh": [-0.5]}, keys)[0]
    assert names[cell] == "teff(4500,5250]|mh(-1,0]"
    assert cells.cell_names({"snr": []}) == ["snr(-inf,inf)"]
    assert cells.cell_names({"snr": [2.5, 1e5]}) == [
        "snr(-inf,2.5]",
        "snr(2.5,100000]",
        "snr(100000,inf)",
    ]


def test_cell_names_gain_digits_only_where_percent_g_would_collide():
    names = cells.cell_names({"x": [1.0000001, 1.0000002, 3.0]})
    assert names == ["x(-inf,1.0000001]", "x(1.0000001,1.0000002]", "x(1.0000002,3]", "x(3,inf)"]


# -- quantile edges ----------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(600, 5), (601, 7), (10, 10), (37, 4)])
def test_quantile_edges_of_distinct_values_split_them_evenly(n, k):
    sample = np.random.default_rng(n).permutation(np.arange(n) * 0.37 - 5)
    edges = cells.quantile_edges(sample, k)
    assert len(edges) == k - 1 and set(edges) <= set(sample)
    counts = np.bincount(cells.assign_cells([sample], [("x", edges)]), minlength=k)
    assert set(counts) <= {n // k, -(-n // k)}, counts


@settings(max_examples=60, deadline=None)
@given(
    sample=st.lists(st.one_of(st.integers(-3, 3).map(float), st.just(np.nan)), min_size=1),
    k=st.integers(1, 9),
)
def test_quantile_edges_with_ties_are_fewer_never_equal_and_no_bin_is_empty(sample, k):
    finite = [v for v in sample if not np.isnan(v)]
    if not finite:
        with pytest.raises(ValueError, match="no value that is not NaN"):
            cells.quantile_edges(sample, k)
        return
    edges = cells.quantile_edges(sample, k)
    assert all(b > a for a, b in zip(edges, edges[1:]))
    assert len(edges) <= min(k, len(set(finite))) - 1
    counts = np.bincount(cells.assign_cells([finite], [("x", edges)]), minlength=len(edges) + 1)
    assert counts.size == len(edges) + 1 and counts.min() >= 1


def test_quantile_edges_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"k \(number of fine bins\) must be an integer >= 1"):
        cells.quantile_edges([1.0, 2.0], 0)
    assert cells.quantile_edges([1.0, 2.0], 1) == []


# -- merges ----------------------------------------------------------------------------------


def brute_coarse_index(fine_index, cuts):
    return sum(int(c <= fine_index) for c in cuts)


@st.composite
def grids_and_cuts(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    cuts = [sorted(draw(st.sets(st.integers(1, k - 1) if k > 1 else st.nothing()))) for k in shape]
    return tuple(shape), cuts


@settings(max_examples=60, deadline=None)
@given(grid=grids_and_cuts())
def test_fine_to_coarse_equals_a_brute_force_loop(grid):
    shape, cuts = grid
    coarse_shape = tuple(len(c) + 1 for c in cuts)
    expected = [
        np.ravel_multi_index(
            tuple(brute_coarse_index(i, c) for i, c in zip(index, cuts)), coarse_shape
        )
        for index in itertools.product(*[range(k) for k in shape])
    ]
    mapping = cells.fine_to_coarse(shape, cuts)
    np.testing.assert_array_equal(mapping, expected)
    groups = cells.coarse_groups(mapping, n_folds=2)
    assert len(groups) == 2 * int(np.prod(coarse_shape))
    assert sorted(s for g in groups for s in g) == list(range(2 * int(np.prod(shape))))


def test_coarse_edges_and_keys_merge_adjacent_fine_bins():
    assert cells.coarse_edges(TEFF_EDGES, [1, 3]) == [4200.0, 5300.0]
    assert cells.coarse_edges(TEFF_EDGES, []) == []
    coarse = cells.coarse_keys({"teff": TEFF_EDGES, "mh": MH_EDGES}, [[2], []])
    assert cells.cell_names(coarse) == [
        "teff(-inf,4900]|mh(-inf,inf)",
        "teff(4900,inf)|mh(-inf,inf)",
    ]
    np.testing.assert_array_equal(cells.fine_to_coarse(5, [2]), [0, 0, 1, 1, 1])
    # a fine value's coarse cell is the cell of the same value under the coarse edges
    values = np.random.default_rng(1).uniform(4000, 6500, 200)
    fine = cells.assign_cells([values], [("teff", TEFF_EDGES)])
    np.testing.assert_array_equal(
        cells.fine_to_coarse(5, [1, 3])[fine],
        cells.assign_cells([values], [("teff", cells.coarse_edges(TEFF_EDGES, [1, 3]))]),
    )


@pytest.mark.parametrize("standardize", [False, True])
def test_coarse_cells_from_merged_fine_statistics_equal_sklearn_ridge(standardize):
    x, y, values = make_spectra()
    keys = {"teff": TEFF_EDGES, "mh": MH_EDGES}
    shape = cells.grid_shape(keys)
    cell = cells.assign_cells(values, keys)
    n_folds = 3
    folds = cv.assign_folds(np.arange(len(y)), n_folds, 0)
    acc = fine_accumulator(x, y, cell, int(np.prod(shape)), folds, n_folds)
    counts = [[np.sum((cell == c) & (folds == f)) for f in range(n_folds)] for c in range(15)]
    np.testing.assert_array_equal(acc["n"].reshape(15, n_folds), counts)

    cuts = [[1, 3], [2]]
    coarse = stats.bin_stats(
        stats.pooled_stats(acc, cells.coarse_groups(cells.fine_to_coarse(shape, cuts), n_folds)),
        n_folds,
    )
    teff_i = brute_key_index(values["teff"], TEFF_EDGES)
    mh_i = brute_key_index(values["mh"], MH_EDGES)
    for g, (a, b) in enumerate(itertools.product(range(3), range(2))):
        rows = (teff_i >= 0) & (np.array([brute_coarse_index(i, cuts[0]) for i in teff_i]) == a)
        rows &= np.array([brute_coarse_index(i, cuts[1]) for i in mh_i]) == b
        assert coarse["n"][g] == rows.sum() > 10
        coef, intercept, _ = solve.solve_ridge(
            coarse["n"][g],
            coarse["mean_x"][g],
            coarse["mean_y"][g],
            stats.gram_upper(coarse["sxx"][g]),
            coarse["sxy"][g],
            3.0,
            standardize=standardize,
            refine=False,
        )
        xs = x[rows]
        scale = xs.std(axis=0) if standardize else np.ones(x.shape[1])
        ref = Ridge(alpha=3.0).fit(xs / scale, y[rows])
        np.testing.assert_allclose(coef, (ref.coef_ / scale).T, rtol=0, atol=1e-9 * y.std())
        np.testing.assert_allclose(intercept, ref.intercept_, rtol=0, atol=1e-9 * y.std())


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: cells.Key("teff", [5000, 4500]),
            "edges of key 'teff' must be finite and strictly",
        ),
        (lambda: cells.Key("teff", [1.0, np.inf]), "must be finite and strictly increasing"),
        (lambda: cells.Key("a|b", [1.0]), "without '|'"),
        (lambda: cells.check_keys([("a", [1]), ("a", [2])]), "key names must be unique"),
        (lambda: cells.check_keys({}), "keys is empty"),
        (
            lambda: cells.assign_cells({"teff": [1.0]}, {"teff": [0], "mh": [0]}),
            "values has no variable 'mh'",
        ),
        (lambda: cells.assign_cells([[1.0]], {"teff": [0], "mh": [0]}), "1 arrays for 2 keys"),
        (
            lambda: cells.assign_cells([[1.0], [1.0, 2.0]], {"a": [0], "b": [0]}),
            "must have one shape",
        ),
        (
            lambda: cells.fine_to_coarse((4,), [[0, 2]]),
            r"strictly increasing positions in 1 \.\.\. 3",
        ),
        (lambda: cells.fine_to_coarse((4,), [[2, 2]]), "strictly increasing positions"),
        (lambda: cells.fine_to_coarse((4, 2), [[2]]), "1 lists for 2 keys"),
        (lambda: cells.coarse_edges([1.0, 2.0], [1.5]), "cuts must be integers"),
    ],
)
def test_errors_name_the_parameter_and_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- packed triangles ----------------------------------------------------------------------

shapes = st.tuples(st.lists(st.integers(1, 3), max_size=2), st.integers(0, 13))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_pack_and_unpack_round_trip_exactly(shape, seed):
    batch, p = shape
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(*batch, p, p)) * 10.0 ** rng.integers(-8, 8)
    sym = m + np.swapaxes(m, -1, -2)
    packed_sym = packed.pack_upper(sym)
    assert packed_sym.shape == (*batch, p * (p + 1) // 2)
    np.testing.assert_array_equal(packed.unpack_upper(packed_sym, p), sym)
    np.testing.assert_array_equal(packed.pack_upper(packed.unpack_upper(packed_sym)), packed_sym)
    # an accumulator's sxx keeps one triangle: unpacking gives stats.full_gram
    full = packed.unpack_upper(packed.pack_upper(m), p)
    for index in np.ndindex(*batch):
        np.testing.assert_array_equal(full[index], stats.full_gram(m[index]))


def test_merge_packed_equals_the_gram_matrix_of_the_concatenated_data():
    rng = np.random.default_rng(2)
    xa, xb = rng.normal(size=(30, 9)) + 3.0, rng.normal(size=(17, 9)) - 1.0
    acc_a = stats.fold_chunk(
        None,
        xa,
        np.zeros((30, 1)),
        np.zeros(xa.shape, bool),
        np.zeros(30),
        edges=[],
        max_bad_fraction=1.0,
        precision="float64",
    )
    both = np.vstack([xa, xb]) - np.vstack([xa, xb]).mean(axis=0)
    gb = (xb - xb.mean(axis=0)).T @ (xb - xb.mean(axis=0))
    merged = packed.merge_packed(
        packed.pack_upper(acc_a["sxx"][0]), packed.pack_upper(gb), 30, 17, xa.mean(0), xb.mean(0)
    )
    np.testing.assert_allclose(packed.unpack_upper(merged), both.T @ both, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(
        packed.add_packed(merged, merged), 2 * merged
    )  # same-centre merge


def test_accumulator_bytes_matches_the_arrays_and_the_documented_bound():
    acc = stats.new_accumulator(4, 7, 2, n_folds=3)
    core = sum(acc[k].nbytes for k in ("n", "mean_x", "mean_y", "sxx", "sxy", "syy"))
    assert packed.accumulator_bytes(4, 3, 7, 2) == core
    gram = 16 * 5 * 4096**2 * 8
    assert abs(gram / 1e9 - 10.7) < 0.05
    assert packed.accumulator_bytes(16, 5, 4096, packed=True) < 0.51 * gram


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: packed.pack_upper(np.zeros((3, 4))), r"shape \(\.\.\., P, P\)"),
        (lambda: packed.unpack_upper(np.zeros(5)), "not of that form"),
        (lambda: packed.unpack_upper(np.zeros(6), 4), "n_pixels=4 needs packed triangles of"),
        (lambda: packed.add_packed(np.zeros(3), np.zeros(6)), "one shape to add"),
    ],
)
def test_packed_errors_name_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()
