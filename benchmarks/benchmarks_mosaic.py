"""A large synthetic mosaic as catalogs + image sidecars only (no pixels).

For scale benchmarks of the gather steps: ``n_images`` detector images of a
NIRCam-like mosaic (2 detectors per exposure, exposures on a grid with
overlaps), each with a catalog of the stars it sees (true positions plus
0.03 px noise, 200 brightest) and an image sidecar in the format the
``detect_sources`` rule writes: `tweakflow.synthetic.make_catalog_mosaic`
with this layout.
"""

from __future__ import annotations

import numpy as np


def mosaic_config(n_images, seed=1, step_arcsec=55.0):
    """The `tweakflow.synthetic.SyntheticConfig` of the benchmark mosaic.

    2048 x 2048 images of ``nrca1`` and ``nrca3`` (one exposure, one
    alignment group, each pair), the exposures on a grid of step
    ``step_arcsec``, ``ceil(sqrt(n_exposures))`` columns and as many rows
    as ``n_images`` need; 400 stars per square arcminute; the reference
    catalog keeps the brightest fifth of the stars (magnitudes to 22.68).
    """
    from tweakflow.synthetic import SyntheticConfig

    n_exp = int(np.ceil(n_images / 2))
    columns = int(np.ceil(np.sqrt(n_exp)))
    return SyntheticConfig.mosaic(
        columns, -(-n_exp // columns), shape=(2048, 2048), seed=seed, detectors=["nrca1", "nrca3"], n_stars=400,
        grid_step=step_arcsec, ra=150.0, dec=2.0, pa_v3=0.0, refcat_maglim=22.68,
    )


def make_catalog_mosaic(workdir, n_images, seed=1, step_arcsec=55.0, refcat=None):
    """Write the catalogs and image sidecars; returns the paths of the first ``n_images`` of each (two lists).

    The images of the grid's last row beyond ``n_images`` are written too,
    and left out of the lists. With ``refcat`` (a path), the mosaic's
    reference catalog (RA/DEC with 5 mas of noise) is moved there.
    """
    import shutil

    from tweakflow.synthetic import make_catalog_mosaic as make

    out = make(workdir, mosaic_config(n_images, seed, step_arcsec), maglim=99.0, max_sources=200)
    if refcat:
        shutil.move(out["refcat"], refcat)
    return out["catalogs"][:n_images], out["sidecars"][:n_images]
