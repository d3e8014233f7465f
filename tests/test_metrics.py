"""tweakflow.metrics: accuracy of a WCS against the truth."""

import numpy as np
import pytest

from tweakflow.metrics import absolute_errors, relative_errors
from tweakflow.synthetic import make_fits_chip_wcs


class _Callable:
    """An astropy WCS called like a GWCS (what the metrics evaluate)."""

    def __init__(self, w):
        self.w = w

    def __call__(self, x, y, with_bounding_box=False):
        return self.w.all_pix2world(x, y, 0)


def test_a_common_shift_is_absolute_error_only():
    shape = (100, 100)
    true = [make_fits_chip_wcs(shape, (10.0 + 0.01 * k, 20.0), 0.0, 0.1) for k in range(3)]
    moved = [make_fits_chip_wcs(shape, (10.0 + 0.01 * k, 20.0 + 0.1 / 3600.0), 0.0, 0.1) for k in range(3)]
    t, m = [_Callable(w) for w in true], [_Callable(w) for w in moved]
    assert np.allclose(absolute_errors(m, t, [shape] * 3), 100.0, rtol=1e-3)  # 0.1 arcsec
    assert np.all(relative_errors(m, t, [shape] * 3) < 0.01)


def test_one_image_off_is_relative_error():
    shape = (100, 100)
    true = [make_fits_chip_wcs(shape, (10.0 + 0.01 * k, 20.0), 0.0, 0.1) for k in range(4)]
    moved = list(true[:3]) + [make_fits_chip_wcs(shape, (10.03, 20.0 + 0.02 / 3600.0), 0.0, 0.1)]
    m, t = [_Callable(w) for w in moved], [_Callable(w) for w in true]
    ab = absolute_errors(m, t, [shape] * 4)
    assert ab[3] == pytest.approx(20.0, rel=1e-3) and np.all(ab[:3] < 1e-6)
    rel = relative_errors(m, t, [shape] * 4)
    # the common shift + rotation takes part of the 20 mas; the image off stands out
    assert 2.0 < rel[3] < 20.0 and rel[3] > 2.0 * np.max(rel[:3])
