"""memory.zeros is np.zeros: values, dtype and layout."""

from __future__ import annotations

import numpy as np
import pytest

from snr_moe_dask.kernels.memory import zeros


@pytest.mark.parametrize("shape", [(0,), (7,), (3, 5), (2, 300, 301)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, bool])
@pytest.mark.parametrize("order", ["C", "F"])
def test_zeros_is_numpys(shape, dtype, order):
    got, expected = zeros(shape, dtype, order), np.zeros(shape, dtype, order)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.flags.c_contiguous == expected.flags.c_contiguous
    assert got.flags.f_contiguous == expected.flags.f_contiguous
    np.testing.assert_array_equal(got, expected)
