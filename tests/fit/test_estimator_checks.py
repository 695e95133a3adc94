"""scikit-learn's own estimator checks, and the honest tags they rely on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import check_estimator

from snr_moe_dask.model import SNRBinnedRidge


def _estimator(**kw):
    return SNRBinnedRidge(alpha=1.0, routing="observed", gate=False, min_spectra=1, **kw)


def test_check_estimator_passes_every_check():
    results = check_estimator(_estimator(), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert len(results) > 40


def test_tags_say_nan_is_imputed_and_sparse_is_not_taken():
    tags = get_tags(_estimator())
    assert tags.input_tags.allow_nan
    assert not tags.input_tags.sparse
    assert tags.target_tags.multi_output
    assert tags.target_tags.required


def test_nan_in_x_is_imputed_as_documented():
    """A NaN pixel is replaced by its column's mean over the good rows of the chunk's
    bin, so the fit equals Ridge on the imputed matrix."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = x @ rng.normal(size=5) + rng.normal(size=60)
    x_nan = x.copy()
    x_nan[[3, 10, 41], [1, 4, 1]] = np.nan
    imputed = x_nan.copy()
    for col in range(5):
        bad = np.isnan(imputed[:, col])
        imputed[bad, col] = imputed[~bad, col].mean()
    # One bin (all SNRs below the first edge) and one chunk: one imputation group.
    model = _estimator(bins=[1e6], bin_names=["A", "B"], precision="float64").fit(x_nan, y)
    ref = Ridge(alpha=1.0).fit(imputed, y)
    np.testing.assert_allclose(model.coef_[0, :, 0], ref.coef_, rtol=0, atol=1e-10)
    assert sum(model.excluded_["bad_pixels"].values()) == 3


@pytest.mark.parametrize(
    "bad, kind, match",
    [
        (sparse.csr_array(np.ones((10, 3))), TypeError, "[Ss]parse data .*dense"),
        (np.ones((10, 3)) + 1j, ValueError, "Complex data not supported"),
        (np.empty((0, 3)), ValueError, "0 sample"),
        (np.empty((10, 0)), ValueError, "0 feature"),
    ],
)
def test_unsupported_input_says_what_is_supported(bad, kind, match):
    with pytest.raises(kind, match=match) as info:
        _estimator().fit(bad, np.ones(bad.shape[0]))
    assert "float32 or float64" in str(info.value)


def test_predict_before_fit_and_wrong_pixel_count():
    with pytest.raises(NotFittedError):
        _estimator().predict(np.ones((3, 4)))
    rng = np.random.default_rng(1)
    model = _estimator().fit(rng.normal(size=(20, 4)), rng.normal(size=20))
    with pytest.raises(ValueError, match="X has 3 features, but SNRBinnedRidge is expecting 4"):
        model.predict(np.ones((2, 3)))
    with pytest.raises(ValueError, match="requires y to be passed"):
        _estimator().fit(np.ones((5, 4)), None)
