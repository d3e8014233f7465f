"""Building the DAG of many images: what keeps it linear in the number of images.

Snakemake checks each input file of a job against every output of the rule
that makes it, and against every input of the job that makes it; it checks
every group of jobs against the whole DAG. So that a dry run of thousands of
images takes seconds, not minutes (README, "Performance"):

* no rule has explicit outputs in proportion to the number of images (the
  alignment stages write their WCS sidecars as one folder each);
* no per-image job depends on a job whose inputs grow with the number of
  images (the final stage's sidecars reach the per-image jobs through the
  one-input job ``final_wcs``);
* groups are set in the cluster profiles, not in the rules (a local run or
  dry run then checks none), and the three profiles group the same rules.

``benchmarks/dryrun.py`` measures the times; these tests check the structure,
which does not depend on the machine.
"""

import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

from tweakflow.steps import final_wcs_step

ROOT = Path(__file__).resolve().parents[1]

#: images of the dry runs: more than any number of files a gather job has per kind
N_IMAGES = 40
#: what the profiles must group, and into which groups
GROUPS = {
    "detect_sources": "detect",
    "apply_wcs": "apply",
    "publish_catalog": "apply",
    "global_wcs": "apply",
    "transfer_wcs": "apply",
    "match_pairs": "match_pairs",
}
PER_IMAGE_RULES = {"detect_sources", "apply_wcs", "publish_catalog", "global_wcs"}


def test_final_wcs_links_the_stage_sidecars(tmp_path):
    stage = tmp_path / "relative" / "wcs"
    stage.mkdir(parents=True)
    for k in range(3):
        (stage / f"im{k}_wcs.asdf").write_bytes(bytes([k]) * 100)
    (stage / ".snakemake_timestamp").write_text("")  # Snakemake's, in a directory() output
    out = tmp_path / "final_wcs"
    final_wcs_step(str(stage), str(out))
    assert sorted(os.listdir(out)) == ["im0_wcs.asdf", "im1_wcs.asdf", "im2_wcs.asdf"]
    for k in range(3):
        a, b = stage / f"im{k}_wcs.asdf", out / f"im{k}_wcs.asdf"
        assert b.read_bytes() == a.read_bytes()
        assert os.stat(a).st_ino == os.stat(b).st_ino  # a hard link: no data copied
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def _profile(name):
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def test_groups_are_set_in_the_cluster_profiles_only():
    rules = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    defined = set(re.findall(r"^\s*rule (\w+):", rules, flags=re.MULTILINE))
    assert not re.search(r"^\s*group:", rules, flags=re.MULTILINE), "a rule sets its group: set it in the cluster profiles"
    assert set(GROUPS) <= defined, set(GROUPS) - defined
    for name in ("slurm", "slurm-ci", "cluster-generic"):
        prof = _profile(name)
        assert prof["groups"] == GROUPS, name
        assert set(prof["group-components"]) == set(GROUPS.values()), name
    assert "groups" not in _profile("default")  # local runs and dry runs check no group


@pytest.fixture(scope="module")
def fake_inputs(tmp_path_factory):
    """``N_IMAGES`` bare FITS primary headers with a FILENAME (all a dry run reads of its
    inputs), and a reference catalog file."""
    root = tmp_path_factory.mktemp("dag_scale")
    (root / "data").mkdir()
    for i in range(N_IMAGES):
        hdr = fits.Header()
        hdr["FILENAME"] = f"img{i:03d}_cal.fits"
        fits.PrimaryHDU(header=hdr).writeto(root / "data" / f"img{i:03d}_cal.fits")
    Table({"RA": [10.0, 10.1], "DEC": [-20.0, -20.1]}).write(root / "refcat.ecsv")
    return root


def _snakemake(root, config, *args):
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump({"inputs": ["data/*_cal.fits"], "output_dir": "out", **config}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(root),
         "--configfile", str(cfg), *args],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _dag(dot):
    """Jobs of ``snakemake --dag``: ``{node: rule}`` and ``{node: [predecessor nodes]}``."""
    rules = {m.group(1): m.group(2) for m in re.finditer(r'^\s*(\d+)\[label = "(\w+)', dot, flags=re.MULTILINE)}
    preds = defaultdict(list)
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.MULTILINE):
        preds[b].append(a)
    return rules, preds


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"tweakreg": {"abs_refcat": "refcat.ecsv", "save_catalogs": True}},
        {"relative_solver": "global", "tweakreg": {"abs_refcat": "refcat.ecsv"}},
    ],
    ids=["relative", "absolute+save_catalogs", "global"],
)
def test_dag_is_linear_in_the_number_of_images(fake_inputs, config):
    rules, preds = _dag(_snakemake(fake_inputs, config, "--dag"))
    jobs = Counter(rules.values())
    assert jobs["detect_sources"] == jobs["apply_wcs"] == N_IMAGES, jobs
    if config.get("tweakreg", {}).get("save_catalogs"):
        assert jobs["publish_catalog"] == N_IMAGES, jobs
    # a per-image job never depends on a job with inputs from every image
    for node, rule in rules.items():
        if rule in PER_IMAGE_RULES:
            for p in preds[node]:
                assert len(preds[p]) < N_IMAGES // 2, f"{rule} depends on {rules[p]}, which has {len(preds[p])} inputs"
    # a job of a rule without wildcards (a gather job) has a few output files, not one per image
    summary = _snakemake(fake_inputs, config, "--summary").splitlines()
    header = next(i for i, line in enumerate(summary) if line.startswith("output_file\t"))
    outputs = Counter(line.split("\t")[2] for line in summary[header + 1 :] if line.strip())
    for rule, n in outputs.items():
        if rule not in PER_IMAGE_RULES and jobs[rule] == 1:
            assert n <= 6, f"{rule} has {n} output files"
