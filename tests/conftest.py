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


@pytest.fixture(scope="session")
def small_alignment(small_dataset, tmp_path_factory):
    """The SMALL dataset's sources detected and aligned relatively (default
    parameters), by the steps without Snakemake: per image (``stems``) its
    catalog (``cats``), image sidecar (``metas``) and relative WCS sidecar
    (``wcs``), and the solution table (``solutions``)."""
    from tweakflow.io import output_stem
    from tweakflow.params import DEFAULT_DETECTION_PARS, RELATIVE_PARS
    from tweakflow.steps import align_step, detect_step

    work = tmp_path_factory.mktemp("small_alignment")
    images = small_dataset["images"]
    stems = [output_stem(p) for p in images]
    out = {
        "images": images, "stems": stems, "work": work, "solutions": str(work / "solutions.ecsv"),
        "cats": [str(work / f"{s}_cat.ecsv") for s in stems],
        "metas": [str(work / f"{s}_meta.json") for s in stems],
        "wcs": [str(work / f"{s}_wcs.asdf") for s in stems],
    }
    for p, c, m in zip(images, out["cats"], out["metas"]):
        detect_step(p, c, m, detection=dict(DEFAULT_DETECTION_PARS))
    align_step(out["cats"], out["metas"], out["solutions"], out["wcs"], relative=dict(RELATIVE_PARS))
    return out


#: HST-like plain FITS files with lookup-table distortions (D2IM + NPOL):
#: 2 single-chip files (one plain TAN in the primary HDU, one TAN-SIP with
#: tables) and 2 two-chip files, chips of 1024 x 512.
FITS_LUT = {"n_single": 2, "n_multi": 2, "single_shape": (512, 1024), "chip_shape": (512, 1024), "lookup_tables": True, "seed": 23}


@pytest.fixture(scope="session")
def fits_lut_dataset(tmp_path_factory):
    """The FITS_LUT dataset (generated once per session)."""
    from tweakflow.synthetic import make_fits_dataset

    return make_fits_dataset(str(tmp_path_factory.mktemp("fits_lut_dataset")), **FITS_LUT)
