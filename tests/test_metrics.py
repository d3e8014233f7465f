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
    """The centre of a 3 x 3 grid off by 20 mas: the common shift takes 1/9 of it."""
    shape = (100, 100)
    centres = [(10.0 + 0.01 * i, 20.0 + 0.01 * j) for j in range(3) for i in range(3)]
    true = [make_fits_chip_wcs(shape, c, 0.0, 0.1) for c in centres]
    moved = [make_fits_chip_wcs(shape, (c[0], c[1] + (0.02 / 3600.0 if k == 4 else 0.0)), 0.0, 0.1) for k, c in enumerate(centres)]
    m, t = [_Callable(w) for w in moved], [_Callable(w) for w in true]
    ab = absolute_errors(m, t, [shape] * 9)
    assert ab[4] == pytest.approx(20.0, rel=1e-3) and np.all(np.delete(ab, 4) < 1e-6)
    rel = relative_errors(m, t, [shape] * 9)
    assert rel[4] == pytest.approx(20.0 * 8 / 9, rel=0.02)
    assert np.allclose(np.delete(rel, 4), 20.0 / 9, rtol=0.05)
