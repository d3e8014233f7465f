"""Helpers shared by the tests: run the workflow, hash files, the small dataset's parameters.

A plain module (not conftest.py): tests import it by name, which stays
unambiguous although tests/cluster has a conftest.py of its own.
"""

import hashlib
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A small dataset for tests: 2 exposures x 2 detectors of 1024x1024.
SMALL = {"n_exposures": 2, "detectors": ["nrca1", "nrca3"], "shape": [1024, 1024], "seed": 7, "n_stars": 900}


def snakemake_bin():
    return os.path.join(os.path.dirname(sys.executable), "snakemake")


def run_workflow(workdir, config, *args, check=True, timeout=900):
    """Run the workflow in ``workdir`` with ``config`` merged over the defaults.

    Returns the CompletedProcess (stdout+stderr in ``.stdout``).
    """
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "test_config.yaml")
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    cmd = [
        snakemake_bin(),
        "--snakefile", os.path.join(ROOT, "Snakefile"),
        "--directory", str(workdir),
        "--configfile", cfg,
        "--cores", "2",
        *args,
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detected_entries(paths):
    """Alignment entries of images, with sources detected at default parameters."""
    from tweakflow.detection import detect_sources
    from tweakflow.grouping import resolve_group_id
    from tweakflow.io import read_image

    out = []
    for p in paths:
        im = read_image(p)
        cat, _ = detect_sources(im.data, im.dq)
        gid = resolve_group_id(im.meta["observation"], im.meta["group_id"])
        out.append(dict(name=os.path.basename(p), wcs=im.wcs, wcsinfo=im.wcsinfo, catalog=cat, group_id=gid, shape=im.shape))
    return out


class CallableWCS:
    """An astropy WCS called like a GWCS (full distortion), for `tweakflow.metrics`."""

    def __init__(self, wcs):
        self.wcs = wcs

    def __call__(self, x, y, with_bounding_box=False):
        return self.wcs.all_pix2world(x, y, 0)


def fits_sci_hdus(hdul):
    """Indices of the science image HDUs of a plain FITS file (as the synthetic FITS generator writes them)."""
    return [i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS") == 2 and h.name in ("PRIMARY", "SCI")]


def max_sky_distance_mas(w1, w2, shape, n=16):
    """Largest sky distance (mas) between two astropy WCSs over an n x n pixel grid."""
    import numpy as np

    ny, nx = shape
    y, x = np.mgrid[0 : ny - 1 : complex(n), 0 : nx - 1 : complex(n)]
    r1, d1 = w1.all_pix2world(x.ravel(), y.ravel(), 0)
    r2, d2 = w2.all_pix2world(x.ravel(), y.ravel(), 0)
    return 3.6e6 * float(np.max(np.hypot((r1 - r2) * np.cos(np.deg2rad(d2)), d1 - d2)))


def check_fits_product_is_input_copy(src, prod, wcsname):
    """A FITS output is its input but for the science chips' WCS keywords; 'O' is the input WCS.

    Every HDU, array and non-WCS keyword carried over (lookup tables
    included); ``WCSNAME`` is ``wcsname`` and the original name is archived.
    """
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(src, do_not_scale_image_data=True) as a, fits.open(prod, do_not_scale_image_data=True) as b:
        b.verify("exception")
        assert [(h.name, h.ver) for h in a] == [(h.name, h.ver) for h in b]
        for ha, hb in zip(a, b):
            if ha.data is not None:
                assert ha.data.dtype == hb.data.dtype and np.array_equal(ha.data, hb.data)
            for k in ha.header:
                if not k.startswith(("CRVAL", "CD", "PC", "LATPOLE", "WCSNAME")):
                    assert hb.header[k] == ha.header[k], (prod, ha.name, k)
        for i in fits_sci_hdus(a):
            hdr = b[i].header
            assert hdr["WCSNAME"] == wcsname and hdr["WCSNAMEO"] == a[i].header.get("WCSNAME", "ORIGINAL")
            wo = WCS(hdr, fobj=b, key="O")
            assert max_sky_distance_mas(wo, WCS(a[i].header, fobj=a), a[i].data.shape) < 1e-6


def without_lookup_tables(w):
    """The astropy WCS with its lookup tables dropped (SIP kept): what ignoring them gives."""
    w = w.deepcopy()
    w.det2im1 = w.det2im2 = w.cpdis1 = w.cpdis2 = None
    w.wcs.set()
    return w
