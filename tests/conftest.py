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
