"""Accumulators with packed Gram triangles equal unpacked ones: folding, buffers, merges,
pooling, and the slot accessors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stats import fold_all, make_data

from snr_moe_dask.kernels import packed, stats


def fold(x, y, snr, *, packed_, precision="float64", folds=None, buffer_rows=0, bad=None):
    """:func:`test_stats.fold_all`, with a packed accumulator when ``packed_``."""
    n_folds = 1 if folds is None else 3
    acc = (
        stats.new_accumulator(4, x.shape[1], y.shape[1], n_folds, packed=True) if packed_ else None
    )
    return fold_all(
        x, y, snr, [70, 150], precision, acc, bad=bad, folds=folds, buffer_rows=buffer_rows
    )


def assert_same(a, b, rtol=1e-12):
    """Two accumulators (packed or not) hold the same statistics."""
    for key in ("n", "mean_x", "mean_y", "sxy", "syy"):
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=1e-9)
    for k in range(a["n"].size):
        np.testing.assert_allclose(
            stats.full_gram(a["sxx"][k]), stats.full_gram(b["sxx"][k]), rtol=rtol, atol=1e-9
        )


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("buffer_rows", [0, 16])
def test_a_packed_fold_equals_the_unpacked_one(precision, buffer_rows):
    x, y, snr = make_data(0, 240, 9, t=2, offset=30.0)
    bad = np.zeros(x.shape, dtype=bool)
    bad[5, 2] = bad[90, [0, 4]] = True
    folds = np.arange(240) % 3
    kw = {"precision": precision, "folds": folds, "buffer_rows": buffer_rows, "bad": bad}
    full, tri = fold(x, y, snr, packed_=False, **kw), fold(x, y, snr, packed_=True, **kw)
    assert not stats.is_packed(full) and stats.is_packed(tri)
    assert tri["sxx"].shape == (12, packed.packed_size(9))
    assert_same(full, tri, rtol=1e-6 if precision == "float32" else 1e-12)
    for key in ("bad_pixels", "excluded_bad"):
        np.testing.assert_array_equal(full[key], tri[key])


def test_packed_and_unpacked_slots_merge_into_each_other():
    x, y, snr = make_data(1, 300, 7)
    a_rows, b_rows = slice(0, 180), slice(180, 300)
    parts = {
        (name, is_packed): fold(x[rows], y[rows], snr[rows], packed_=is_packed)
        for name, rows in (("a", a_rows), ("b", b_rows))
        for is_packed in (False, True)
    }
    whole = fold(x, y, snr, packed_=False)
    for target in (False, True):
        for source in (False, True):
            a = {k: v.copy() for k, v in parts[("a", target)].items()}
            merged = stats.merge_stats(a, parts[("b", source)])
            assert stats.is_packed(merged) == target
            assert_same(merged, whole)


def test_pooling_a_packed_accumulator_gives_unpacked_slots():
    x, y, snr = make_data(2, 300, 6)
    tri, full = fold(x, y, snr, packed_=True), fold(x, y, snr, packed_=False)
    groups = [[0, 1], [2, 3], [0, 1, 2, 3]]
    pooled = stats.pooled_stats(tri, groups)
    assert not stats.is_packed(pooled)
    assert_same(pooled, stats.pooled_stats(full, groups))


def test_slot_accessors_read_either_layout():
    x, y, snr = make_data(3, 200, 5, t=3)
    tri, full = fold(x, y, snr, packed_=True), fold(x, y, snr, packed_=False)
    w = np.random.default_rng(0).normal(size=(5, 3))
    for k in range(4):
        gram = stats.full_gram(full["sxx"][k])
        np.testing.assert_allclose(np.triu(stats.slot_gram(tri, k)), np.triu(gram), rtol=1e-12)
        np.testing.assert_allclose(stats.gram_times(tri, k, w), gram @ w, rtol=1e-10)
        np.testing.assert_allclose(stats.gram_times(full, k, w), gram @ w, rtol=1e-10)


def test_the_packed_bytes_are_about_half():
    assert packed.accumulator_bytes(16, 5, 4096, packed=True) < 5.4e9
    assert packed.accumulator_bytes(16, 5, 4096) > 10.7e9


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 600), lead=st.sampled_from([(), (1,), (3,)]), block=st.integers(1, 300))
def test_unpacking_gives_the_symmetric_matrix_and_its_fortran_triangle(p, lead, block):
    """Across the mirror's block boundaries and for stacks of triangles: ``unpack_upper``
    is the symmetric matrix, ``upper_matrix`` its upper triangle in Fortran order (what
    the solve reads), zero below."""
    rng = np.random.default_rng(p)
    m = rng.normal(size=(*lead, p, p))
    sym = m + np.swapaxes(m, -1, -2)
    tri = packed.pack_upper(sym)
    np.testing.assert_array_equal(packed.unpack_upper(tri, block=block), sym)
    for index in np.ndindex(*lead):
        upper = packed.upper_matrix(tri[index])
        assert upper.flags.f_contiguous
        np.testing.assert_array_equal(upper, np.triu(sym[index]))


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 700), block=st.integers(1, 600), scaled=st.booleans())
def test_column_norms_read_only_the_triangle(p, block, scaled):
    """``column_norms`` of a kept triangle (NaN below the diagonal, never read) are
    numpy's column norms of the symmetric matrix, scaled as the error estimate does."""
    rng = np.random.default_rng(p)
    m = rng.normal(size=(p, p))
    sym = m + m.T
    scale = rng.uniform(0.5, 2.0, p) if scaled else None
    upper = np.asfortranarray(np.triu(sym))
    upper[np.tril_indices(p, -1)] = np.nan
    ref = sym if scale is None else sym / np.outer(scale, scale)
    np.testing.assert_allclose(
        stats.column_norms(upper, scale, block=block), np.linalg.norm(ref, axis=0), rtol=1e-12
    )
