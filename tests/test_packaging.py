"""Packaging metadata agrees with itself: environment.yml with pyproject.toml, LICENSE with its license.

environment.yml (conda) lists the runtime dependencies of pyproject.toml, with the
test extra, in conda's match-spec format (``photutils >=3,<4``, ``numpy =1.26``)
or, in its ``pip:`` section, as pip requirements. Names are compared after PEP 503
normalisation (case, ``-``/``_``/``.``), versions as the sets of versions they allow:
``photutils>=3.0,<4`` and ``photutils >=3,<4`` agree, ``photutils>=3`` does not.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

#: conda-only entries of environment.yml: the interpreter (compared with
#: requires-python) and pip itself
CONDA_ONLY = {"python", "pip"}

_CONDA_SPEC = re.compile(r"^(?:[^:\s]+::)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<version>[^\s\[]*)(?:\s+\S+)?$")
_OPERATOR = re.compile(r"^(===|==|!=|~=|>=|<=|>|<)")


def conda_spec(spec):
    """``(canonical name, SpecifierSet)`` of a conda match spec such as ``photutils >=3,<4``.

    Conda's fuzzy forms become PEP 440 prefix matches: ``=1.26``, ``1.26``,
    ``1.26*`` and ``1.26.*`` allow ``==1.26.*``; ``*`` allows any version. A build
    string after the version is ignored. Alternatives (``|``) and the bracket
    syntax have no PEP 440 equivalent and are refused.
    """
    m = _CONDA_SPEC.match(spec.strip())
    if m is None or "|" in spec:
        raise ValueError(f"conda spec not understood: {spec!r}")
    specifiers = []
    for part in filter(None, m["version"].split(",")):
        if _OPERATOR.match(part):
            specifiers.append(part)
        elif part != "*":
            version = part.lstrip("=").rstrip("*").rstrip(".")
            specifiers.append(f"=={version}.*")
    return canonicalize_name(m["name"]), SpecifierSet(",".join(specifiers))


def pip_spec(spec):
    """``(canonical name, SpecifierSet)`` of a pip requirement (PEP 508)."""
    req = Requirement(spec)
    if req.marker is not None or req.url:
        raise ValueError(f"requirement with a marker or a URL cannot be compared with conda's: {spec!r}")
    return canonicalize_name(req.name), req.specifier


@pytest.fixture(scope="module")
def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def environment():
    """environment.yml's dependencies: ``{canonical name: SpecifierSet}`` over its conda and pip sections."""
    with open(ROOT / "environment.yml") as f:
        env = yaml.safe_load(f)
    deps = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            parsed = [pip_spec(s) for s in entry["pip"]]
        else:
            parsed = [conda_spec(str(entry))]
        for name, specifier in parsed:
            assert name not in deps, f"environment.yml lists {name} twice"
            deps[name] = specifier
    return deps


def _disagreements(requirements, environment):
    problems = []
    for spec in requirements:
        name, specifier = pip_spec(spec)
        if name not in environment:
            problems.append(f"{spec}: missing from environment.yml")
        elif environment[name] != specifier:
            problems.append(f"{spec}: environment.yml has {name}{environment[name] or ' (any version)'}")
    return problems


@pytest.mark.parametrize(
    "conda,pip",
    [
        ("photutils >=3,<4", "photutils>=3.0,<4"),
        ("photutils>=3.0,<4", "photutils<4,>=3"),
        ("scikit_image >=0.20", "scikit-image>=0.20"),
        ("PyYAML", "pyyaml"),
        ("numpy =1.26", "numpy==1.26.*"),
        ("numpy 1.26.*", "numpy==1.26.*"),
        ("numpy 1.26 py311_0", "numpy==1.26.*"),
        ("conda-forge::asdf >=3", "asdf>=3"),
        ("tweakwcs *", "tweakwcs"),
    ],
)
def test_conda_spec_parsing(conda, pip):
    assert conda_spec(conda) == pip_spec(pip)


@pytest.mark.parametrize("conda,pip", [("photutils >=3", "photutils>=3,<4"), ("numpy =1.26", "numpy==1.26")])
def test_conda_spec_differences_are_seen(conda, pip):
    assert conda_spec(conda) != pip_spec(pip)


def test_runtime_dependencies_in_environment_yml(pyproject, environment):
    assert not _disagreements(pyproject["project"]["dependencies"], environment)


def test_test_extra_in_environment_yml(pyproject, environment):
    """environment.yml also makes the test environment (``pytest``, the lint tools, the executor plugins)."""
    assert not _disagreements(pyproject["project"]["optional-dependencies"]["test"], environment)


def test_environment_yml_has_nothing_else(pyproject, environment):
    project = pyproject["project"]
    declared = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    names = {pip_spec(s)[0] for s in declared} | CONDA_ONLY
    assert sorted(set(environment) - names) == []


def test_python_version(pyproject, environment):
    assert environment["python"] == SpecifierSet(pyproject["project"]["requires-python"])


def test_license(pyproject):
    license_ = pyproject["project"]["license"]
    # PEP 639 SPDX string, or the older {text = ...} table
    spdx = license_ if isinstance(license_, str) else license_.get("text")
    assert spdx == "BSD-3-Clause"
    text = " ".join((ROOT / "LICENSE").read_text().split())
    assert text.startswith("BSD 3-Clause License Copyright (c)")
    for clause in (
        "1. Redistributions of source code must retain the above copyright notice",
        "2. Redistributions in binary form must reproduce the above copyright notice",
        "3. Neither the name of the copyright holder nor the names of its contributors may be used to endorse",
        'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"',
    ):
        assert clause in text
    # not the 4-clause (advertising) BSD license
    assert "advertising materials" not in text


def test_report_needs_nothing_the_install_lacks(pyproject):
    """README's report command (`snakemake --report`) runs after the demo's install (`pip install -e .`):
    snakemake's report imports pygments, which snakemake itself does not install."""
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].strip().lower() for d in pyproject["project"]["dependencies"]}
    assert "pygments" in names


def test_readme_commands_for_your_own_data_carry_the_configfile():
    """The report and resume commands README shows for a run of one's own
    data repeat the run's --configfile (without it they describe the demo)."""
    readme = (ROOT / "README.md").read_text()
    report = re.findall(r"^\.venv/bin/snakemake --report .*$", readme, flags=re.M)
    assert any("--configfile my_config.yaml" in line for line in report), report
    assert ".venv/bin/snakemake --cores all --configfile my_config.yaml --rerun-incomplete" in readme
    # and it says what the demo costs on disk
    assert "1.3 GB" in readme
