"""Expert predictions against a direct numpy computation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from snr_moe_dask.kernels.mixture import expert_predictions


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 300),
    p=st.integers(1, 40),
    experts=st.integers(1, 5),
    targets=st.integers(1, 3),
    bad_rate=st.sampled_from([0.0, 0.1]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_predictions_equal_the_direct_formula(m, p, experts, targets, bad_rate, dtype, seed):
    """Row blocks of any remainder, float32 or float64 flux; a bad pixel takes the
    expert's training mean, so it adds nothing around that mean."""
    rng = np.random.default_rng(seed)
    x = rng.normal(5, 2, (m, p)).astype(dtype)
    bad = rng.random((m, p)) < bad_rate
    coef = rng.normal(size=(experts, p, targets))
    intercept = rng.normal(size=(experts, targets))
    mean_x = rng.normal(5, 1, (experts, p))
    got = expert_predictions(x, bad, coef, intercept, mean_x)
    for e in range(experts):
        filled = np.where(bad, mean_x[e], x.astype(np.float64))
        want = filled @ coef[e] + intercept[e]
        np.testing.assert_allclose(got[:, e, :], want, rtol=1e-12, atol=1e-10)
