"""Sufficient statistics: merging equals concatenating, and neither chunking nor order matters."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from snr_moe_dask.kernels import stats
from snr_moe_dask.kernels.snr import find_bad_pixels, snr_statistics

EDGES = [2.0, 4.0, 7.0]


def make_data(seed, n, p, t=1, offset=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, p)) * rng.uniform(0.5, 2, p) + offset).astype(np.float32)
    y = rng.normal(size=(n, t)) * 3 + 10
    snr = rng.uniform(0, 9, n)
    return x, y, snr


def fold_all(
    x, y, snr, splits, precision="float64", acc=None, *, bad=None, folds=None, buffer_rows=0
):
    """Fold chunk by chunk (through slot buffers of ``buffer_rows``, flushed with
    the last chunk), with 3 CV folds when ``folds`` is given."""
    bad = np.zeros(x.shape, dtype=bool) if bad is None else bad
    parts = np.split(np.arange(len(x)), splits)
    for i, part in enumerate(parts):
        acc = stats.fold_chunk(
            acc,
            x[part],
            y[part],
            bad[part],
            snr[part],
            edges=EDGES,
            max_bad_fraction=0.2,
            precision=precision,
            folds=None if folds is None else folds[part],
            n_folds=1 if folds is None else 3,
            buffer_rows=buffer_rows,
            flush=i == len(parts) - 1,
        )
    return acc


def direct(x, y, snr):
    """Two-pass reference: per-bin means, then centred products in float64."""
    bins = np.digitize(snr, EDGES, right=True)
    out = []
    for k in range(4):
        xs, ys = x[bins == k].astype(np.float64), y[bins == k]
        if len(xs) == 0:
            out.append(None)
            continue
        xc, yc = xs - xs.mean(0), ys - ys.mean(0)
        out.append((len(xs), xs.mean(0), ys.mean(0), xc.T @ xc, xc.T @ yc, yc.T @ yc))
    return out


def assert_matches(acc, ref, rtol=1e-10):
    for k, r in enumerate(ref):
        if r is None:
            assert acc["n"][k] == 0
            continue
        n, mx, my, sxx, sxy, syy = r
        assert acc["n"][k] == n
        scale = np.abs(sxx).max()
        np.testing.assert_allclose(acc["mean_x"][k], mx, rtol=rtol, atol=rtol * np.abs(mx).max())
        np.testing.assert_allclose(acc["mean_y"][k], my, rtol=rtol)
        np.testing.assert_allclose(stats.full_gram(acc["sxx"][k]), sxx, atol=rtol * scale)
        np.testing.assert_allclose(acc["sxy"][k], sxy, atol=rtol * np.abs(sxy).max() + 1e-12)
        np.testing.assert_allclose(acc["syy"][k], syy, rtol=rtol)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 120),
    p=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 120), max_size=6),
)
def test_fold_equals_direct_whatever_the_chunking(seed, n, p, cuts):
    x, y, snr = make_data(seed, n, p, t=2)
    splits = sorted({c for c in cuts if 0 < c < n})
    assert_matches(fold_all(x, y, snr, splits), direct(x, y, snr))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 100), cut=st.integers(1, 99))
def test_merge_equals_concatenation(seed, n, cut):
    x, y, snr = make_data(seed, n, 5)
    cut = min(cut, n - 1)
    a = fold_all(x[:cut], y[:cut], snr[:cut], [])
    b = fold_all(x[cut:], y[cut:], snr[cut:], [])
    assert_matches(stats.merge_stats(a, b), direct(x, y, snr))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 100))
def test_permuting_spectra_changes_nothing(seed, n):
    x, y, snr = make_data(seed, n, 6)
    perm = np.random.default_rng(seed).permutation(n)
    assert_matches(fold_all(x[perm], y[perm], snr[perm], [n // 3]), direct(x, y, snr))


def test_badly_centred_features_stay_accurate():
    """Feature means 1e4 x their spread: per-chunk centring keeps float64 exact."""
    x, y, snr = make_data(0, 400, 8, offset=1e4)
    assert_matches(fold_all(x, y, snr, [100, 250]), direct(x, y, snr), rtol=1e-9)


def test_float32_products_within_documented_bound():
    x, y, snr = make_data(1, 3000, 32, offset=50.0)
    acc = fold_all(x, y, snr, [1000, 2000], precision="float32")
    ref = direct(x, y, snr)
    for k, r in enumerate(ref):
        rel = np.abs(stats.full_gram(acc["sxx"][k]) - r[3]).max() / np.abs(r[3]).max()
        assert rel < 1e-5


def test_total_is_sum_of_bins():
    x, y, snr = make_data(2, 300, 5)
    total = stats.total_stats(fold_all(x, y, snr, [77]))
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    np.testing.assert_allclose(stats.full_gram(total["sxx"][0]), xc.T @ xc, rtol=1e-10)
    assert total["n"][0] == 300


def test_exclusions_are_counted_not_used():
    x, y, snr = make_data(3, 50, 10)
    bad = np.zeros(x.shape, dtype=bool)
    bad[0, :5] = True  # 50 % bad pixels: excluded
    bad[1, :1] = True  # 10 %: used, imputed
    y[2] = np.nan  # no label
    snr[3] = np.nan  # no bin
    acc = stats.fold_chunk(
        None, x, y, bad, snr, edges=EDGES, max_bad_fraction=0.2, precision="float64"
    )
    assert acc["n"].sum() == 47
    assert acc["excluded_bad"].sum() == 1 and acc["excluded_label"].sum() == 1
    assert acc["excluded_no_snr"][-1] == 1
    assert acc["bad_pixels"].sum() == 1


def test_observed_snr_skips_bad_pixels():
    flux = np.array([[1.0, 2.0, 3.0, np.nan], [4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    error = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    bad = find_bad_pixels(flux, error)
    snr = snr_statistics(flux, error, bad)[0]
    np.testing.assert_allclose(snr[:2], [2.0, 4.0])
    assert np.isnan(snr[2])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 150),
    p=st.integers(1, 10),
    cuts=st.lists(st.integers(0, 150), max_size=6),
    buffer_rows=st.integers(1, 40),
)
def test_buffered_fold_equals_direct(seed, n, p, cuts, buffer_rows):
    """Rows collected over chunks in slot buffers of any size give the same statistics."""
    x, y, snr = make_data(seed, n, p, t=2)
    splits = sorted({c for c in cuts if 0 < c < n})
    acc = fold_all(x, y, snr, splits, buffer_rows=buffer_rows)
    assert not any(key.startswith("buffer") for key in acc)  # flushed and dropped
    assert_matches(acc, direct(x, y, snr))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 150),
    cuts=st.lists(st.integers(0, 150), max_size=5),
    buffer_rows=st.integers(1, 60),
    precision=st.sampled_from(["float32", "float64"]),
)
def test_buffered_fold_imputes_each_chunk_as_unbuffered(seed, n, cuts, buffer_rows, precision):
    """Bad pixels are imputed per chunk and slot before rows wait in a buffer, so
    buffering changes only the grouping of products (round-off); CV slots too."""
    rng = np.random.default_rng(seed)
    x, y, snr = make_data(seed, n, 8, t=1, offset=3.0)
    bad = rng.random(x.shape) < 0.1
    folds = rng.integers(0, 3, n)
    splits = sorted({c for c in cuts if 0 < c < n})
    kw = {"bad": bad, "precision": precision, "folds": folds}
    buffered = fold_all(x, y, snr, splits, buffer_rows=buffer_rows, **kw)
    plain = fold_all(x, y, snr, splits, **kw)
    tol = 1e-10 if precision == "float64" else 1e-5
    for key in ("n", "bad_pixels", "excluded_bad"):
        np.testing.assert_array_equal(buffered[key], plain[key])
    for key in ("mean_x", "mean_y", "sxy", "syy", "sxx"):
        scale = np.abs(plain[key]).max() + 1e-12
        np.testing.assert_allclose(buffered[key], plain[key], rtol=0, atol=tol * scale)


def test_buffer_rows_fit_the_budget():
    assert stats.buffer_rows(128, 4, 4096, "float32") == 2048
    assert stats.buffer_rows(128, 20, 4096, "float32") == 409
    assert stats.buffer_rows(1024, 4, 64, "float64") == stats.MAX_BUFFER_ROWS
    assert stats.buffer_rows(1, 20, 4096, "float32") == 0  # too few rows to help
    assert stats.buffer_rows(0, 4, 4096, "float32") == 0
