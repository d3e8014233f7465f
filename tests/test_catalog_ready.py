"""The Snakemake workflow catalog's standardized usage: its files, the .test
configuration run as the catalog runs it, and the workflow used as a module."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from astropy.table import Table

from workflow_runner import ROOT, SMALL, snakemake_bin


def test_catalog_files_describe_the_workflow():
    with open(os.path.join(ROOT, ".snakemake-workflow-catalog.yml")) as f:
        usage = yaml.safe_load(f)["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["mandatory-flags"]["flags"] == "--cores all" and usage["report"] is True
    with open(os.path.join(ROOT, "config", "config.yaml")) as f:
        keys = yaml.safe_load(f)
    readme = open(os.path.join(ROOT, "config", "README.md")).read()
    for key in keys:  # every top-level key is described (a table row or a section)
        assert f"`{key}`" in readme or f"`{key}:`" in readme, key


def _snakemake(cwd, *args, timeout=600):
    proc = subprocess.run(
        [snakemake_bin(), "--cores", "2", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_dot_test_configuration_runs(tmp_path):
    """``snakemake --directory .test --configfile .test/config/config.yaml`` (on a copy):
    relative + absolute with non-default fit geometries, within a few mas of the truth."""
    test_dir = tmp_path / ".test"
    shutil.copytree(os.path.join(ROOT, ".test"), test_dir)
    console = _snakemake(
        ROOT, "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", str(test_dir),
        "--configfile", str(test_dir / "config" / "config.yaml"),
    )
    res = test_dir / "results"
    assert set(Table.read(res / "tweakreg_summary.ecsv")["status"]) == {"COMPLETE"}
    acc = Table.read(res / "demo_accuracy.ecsv")
    assert np.all(acc["output_relative_mas"] < 1.0) and np.all(acc["output_absolute_mas"] < 5.0)
    assert console.strip().splitlines()[-1].startswith("demo accuracy against the synthetic truth")
    assert (res / "refcat.ecsv").exists() or any(res.glob("*refcat*"))


MODULE_HOST = """
configfile: "host_config.yaml"


module tweakflow:
    snakefile:
        "{snakefile}"
    config:
        config["tweakflow"]


use rule * from tweakflow as tweakflow_*


rule all:
    input:
        rules.tweakflow_all.input,
        "done.txt",
    default_target: True


rule after_alignment:
    input:
        "aligned/tweakreg_summary.ecsv",
    output:
        "done.txt",
    shell:
        "wc -l {{input}} > {{output}}"
"""


@pytest.mark.slow
def test_used_as_a_module_of_another_workflow(tmp_path):
    """A host Snakefile includes the workflow as a module with a partial
    configuration (the rest from config/config.yaml) and a rule of its own
    downstream; every image is aligned to the truth within 1 mas."""
    (tmp_path / "Snakefile").write_text(MODULE_HOST.format(snakefile=os.path.join(ROOT, "Snakefile")))
    host_config = {"tweakflow": {"output_dir": "aligned", "demo": SMALL, "quality": {"report": False}}}
    (tmp_path / "host_config.yaml").write_text(yaml.safe_dump(host_config))
    console = _snakemake(tmp_path, "--force-use-threads")
    assert "tweakflow_align" in console  # the host's console: Snakemake's own, the rules renamed
    acc = Table.read(tmp_path / "aligned" / "demo_accuracy.ecsv")
    assert len(acc) == 4 and np.all(acc["output_relative_mas"] < 1.0)
    assert (tmp_path / "done.txt").exists()
    assert set(Table.read(tmp_path / "aligned" / "tweakreg_summary.ecsv")["status"]) == {"COMPLETE"}
