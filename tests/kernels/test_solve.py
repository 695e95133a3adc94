"""The ridge solvers: float32 Cholesky with float64 refinement against float64 and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from snr_moe_dask.kernels import solve


def centred_problem(rng, n, p, spread):
    """Rows with feature scales over ``spread`` decades, and their centred statistics."""
    x = rng.standard_normal((n, p)) * np.logspace(0, spread, p)
    y = x[:, : min(p, 5)].sum(axis=1, keepdims=True) + rng.standard_normal((n, 1))
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    upper = np.asfortranarray(np.triu(xc.T @ xc))  # only the upper triangle is read
    return x, y, upper, xc.T @ yc


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(5, 120),
    p=st.integers(1, 60),
    spread=st.floats(0, 3),
    log_alpha=st.floats(-3, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_refined_solution_equals_float64_cholesky(n, p, spread, log_alpha, seed):
    """Where refinement succeeds it is a float64-accurate solution; where it gives
    up (None), the float64 factor takes over."""
    _, _, upper, b = centred_problem(np.random.default_rng(seed), n, p, spread)
    a = upper.copy(order="F")
    a[np.diag_indices(p)] += 10.0**log_alpha
    reference = solve._solve_cholesky(a, b)
    refined = solve._solve_cholesky_refined(a, b)
    np.testing.assert_array_equal(a, upper + np.diag(np.full(p, 10.0**log_alpha)))  # not modified
    if refined is not None:
        cond = np.linalg.cond(a + np.triu(a, 1).T)
        tol = 50 * cond * np.finfo(np.float64).eps * np.abs(reference).max()
        np.testing.assert_allclose(refined, reference, rtol=0, atol=tol)


def test_refinement_gives_up_where_float32_cannot_factor():
    """A matrix that is positive definite only in float64 goes to the float64 factor."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    a = np.asfortranarray(q @ np.diag(np.logspace(0, -12, 50)) @ q.T)  # condition 1e12
    assert solve._solve_cholesky_refined(a, rng.standard_normal((50, 1))) is None
    huge = np.asfortranarray(np.eye(4) * 1e39)  # outside float32's range
    assert solve._solve_cholesky_refined(huge, np.ones((4, 1))) is None


def test_inf_norm_of_the_upper_triangle():
    rng = np.random.default_rng(1)
    full = rng.standard_normal((70, 70))
    full = full + full.T
    upper = np.asfortranarray(np.triu(full) + np.tril(rng.standard_normal((70, 70)), -1))
    for block in (7, 16, 64, 512):
        assert solve._sym_inf_norm(upper, block=block) == pytest.approx(
            np.abs(full).sum(axis=1).max(), rel=1e-14
        )


@pytest.mark.parametrize("refine", [True, False])
@pytest.mark.parametrize("alpha", [1e-2, 10.0, 1e4])
def test_solve_ridge_matches_sklearn(refine, alpha):
    rng = np.random.default_rng(2)
    x, y, upper, b = centred_problem(rng, 400, 80, 2)
    coef, intercept, info = solve.solve_ridge(
        len(x), x.mean(axis=0), y.mean(axis=0), upper, b, alpha, refine=refine
    )
    ref = Ridge(alpha=alpha, solver="cholesky").fit(x, y)
    assert info["solver"] == "cholesky"
    pred = ref.predict(x).reshape(-1, 1)
    np.testing.assert_allclose(x @ coef + intercept, pred, rtol=0, atol=1e-9 * y.std())
