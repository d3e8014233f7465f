"""Shared fixtures: small synthetic datasets (helpers live in workflow_runner.py)."""

import pytest

from workflow_runner import SMALL


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """The SMALL synthetic dataset (generated once per session)."""
    from tweakflow.synthetic import SyntheticConfig, make_dataset

    out = tmp_path_factory.mktemp("small_dataset")
    paths = make_dataset(str(out), SyntheticConfig.from_dict(SMALL))
    return paths


#: HST-like plain FITS files with lookup-table distortions (D2IM + NPOL):
#: 2 single-chip files (one plain TAN in the primary HDU, one TAN-SIP with
#: tables) and 2 two-chip files, chips of 1024 x 512.
FITS_LUT = {"n_single": 2, "n_multi": 2, "single_shape": (512, 1024), "chip_shape": (512, 1024), "lookup_tables": True, "seed": 23}


@pytest.fixture(scope="session")
def fits_lut_dataset(tmp_path_factory):
    """The FITS_LUT dataset (generated once per session)."""
    from tweakflow.synthetic import make_fits_dataset

    return make_fits_dataset(str(tmp_path_factory.mktemp("fits_lut_dataset")), **FITS_LUT)
