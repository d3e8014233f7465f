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
