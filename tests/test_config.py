"""tweakflow.config: the configuration checked against the schema (defaults
filled as Snakemake fills them, every problem on one line with a close
match), and tweakreg.pars_file read under the user's own keys."""

import copy
import os
import subprocess

import asdf
import pytest
import yaml

from tweakflow import config as tfconfig
from tweakflow.errors import ConfigError
from tweakflow.params import RELATIVE_PARS
from workflow_runner import ROOT, snakemake_bin

SCHEMA_PATH = os.path.join(ROOT, "workflow", "schemas", "config.schema.yaml")
SCHEMA = tfconfig.load_schema(SCHEMA_PATH)


def _shipped():
    """config/config.yaml, as Snakemake's ``configfile:`` reads it."""
    with open(os.path.join(ROOT, "config", "config.yaml")) as f:
        return yaml.safe_load(f)


def _merged(override):
    """config.yaml with ``override`` merged in (as Snakemake merges --configfile)."""
    cfg = _shipped()
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        _shipped(),
        {"inputs": "demo", "output_dir": "x", "tweakreg": {}},
        {"inputs": ["a.fits"], "output_dir": "x", "tweakreg": {"searchrad": 3}, "quality": {"min_matches": 3}, "fits": {"sci_ext": "SCI"}},
    ],
)
def test_defaults_filled_as_snakemake_validate_fills_them(cfg):
    from snakemake.utils import validate

    theirs, ours = copy.deepcopy(cfg), copy.deepcopy(cfg)
    validate(theirs, SCHEMA_PATH)
    assert tfconfig.validate_config(ours, SCHEMA) is ours
    assert ours == theirs
    assert ours["tweakreg"]["searchrad"] == cfg["tweakreg"].get("searchrad", 2.0)
    assert ours["quality"]["recovery_searchrad"] == [6.0, 12.0]


def test_filled_defaults_are_copies_of_the_schema():
    cfg = {"inputs": "demo", "output_dir": "x", "tweakreg": {}}
    tfconfig.validate_config(cfg, SCHEMA)
    cfg["quality"]["recovery_searchrad"].append(99.0)
    assert SCHEMA["properties"]["quality"]["properties"]["recovery_searchrad"]["default"] == [6.0, 12.0]


@pytest.mark.parametrize(
    "override,line",
    [
        ({"tweakreg": {"serchrad": 3}}, "tweakreg.serchrad: unknown key (value 3); did you mean tweakreg.searchrad?"),
        ({"inptus": ["a.fits"]}, "inptus: unknown key (value ['a.fits']); did you mean inputs?"),
        ({"tweakreg": {"zzzz": 1}}, "tweakreg.zzzz: unknown key (value 1)"),
        ({"searchrad": 3}, "searchrad: unknown key (value 3); did you mean tweakreg.searchrad?"),
        ({"tweakreg": {"min_matches": 3}}, "tweakreg.min_matches: unknown key (value 3); did you mean quality.min_matches?"),
        ({"tweakreg": {"searchrad": "wide"}}, "tweakreg.searchrad: 'wide' is not a number"),
        ({"tweakreg": {"use2dhist": "yes"}}, "tweakreg.use2dhist: 'yes' is not true or false"),
        ({"tweakreg": {"brightest": "all"}}, "tweakreg.brightest: 'all' is not an integer or null"),
        ({"tweakreg": {"fitgeometry": "rshfit"}}, "tweakreg.fitgeometry: 'rshfit' is not one of 'shift', 'rshift', 'rscale', 'general'; did you mean rshift?"),
        ({"tweakreg": {"fitgeometry": "affine"}}, "tweakreg.fitgeometry: 'affine' is not one of 'shift', 'rshift', 'rscale', 'general'"),
        ({"on_bad_input": "ignore"}, "on_bad_input: 'ignore' is not one of 'fail', 'skip'"),
        ({"tweakreg": {"minobj": 0}}, "tweakreg.minobj: 0 is below the minimum 1"),
        ({"tweakreg": {"sigma": -1.0}}, "tweakreg.sigma: -1.0 must be greater than 0"),
        ({"refcat": {"retries": 50}}, "refcat.retries: 50 is above the maximum 20"),
        ({"tweakreg": {"kron_params": [1]}}, "tweakreg.kron_params: [1] needs at least 2 item(s)"),
        ({"inputs": 3}, "inputs: 3 is not a string or a list"),
        ({"inputs": ["a.fits", ""]}, "inputs[1]: '' must not be empty"),
        ({"demo": {"detectors": ["nrca3", "nrac1"]}}, "demo.detectors[1]: 'nrac1' is not one of 'nrca1', 'nrca2', 'nrca3', 'nrca4', 'nrcb1', 'nrcb2', 'nrcb3', 'nrcb4'"),
        ({"tweakreg": 5}, "tweakreg: 5 is not a block of keys"),
    ],
)
def test_each_problem_is_one_line_with_the_key_the_value_and_a_close_match(override, line):
    cfg = _merged(override)
    assert tfconfig.config_problems(cfg, SCHEMA) == [line]
    with pytest.raises(ConfigError) as exc:
        tfconfig.validate_config(cfg, SCHEMA)
    assert str(exc.value) == f"invalid configuration: {line}"


def test_missing_required_key():
    assert tfconfig.config_problems({"output_dir": "x", "tweakreg": {}}, SCHEMA) == ["inputs: missing (required)"]


def test_every_problem_at_once_and_no_schema_dump():
    cfg = _merged({"inptus": "x", "tweakreg": {"serchrad": 3, "fitgeometry": "rshfit"}, "quality": {"enabled": "yes"}})
    with pytest.raises(ConfigError) as exc:
        tfconfig.validate_config(cfg, SCHEMA)
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid configuration (4 problems):"
    assert sorted(lines[1:]) == sorted(
        [
            "  inptus: unknown key (value 'x'); did you mean inputs?",
            "  quality.enabled: 'yes' is not true or false",
            "  tweakreg.serchrad: unknown key (value 3); did you mean tweakreg.searchrad?",
            "  tweakreg.fitgeometry: 'rshfit' is not one of 'shift', 'rshift', 'rscale', 'general'; did you mean rshift?",
        ]
    )


def test_long_values_are_cut():
    (line,) = tfconfig.config_problems(_merged({"tweakreg": {"catfile": list(range(100))}}), SCHEMA)
    assert line.startswith("tweakreg.catfile: [0, 1, 2") and "..." in line and len(line) < 100


# ---------------------------------------------------------------------------
# tweakreg.pars_file
# ---------------------------------------------------------------------------


def _crds_pars(path, **parameters):
    """A parameter reference file shaped as CRDS serves them (``pars-tweakregstep``)."""
    tree = {
        "meta": {
            "reftype": "PARS-TWEAKREGSTEP",
            "instrument": {"name": "NIRCAM"},
            "telescope": "JWST",
            "pedigree": "GROUND",
            "author": "tweakflow tests",
            "description": "TweakRegStep parameters for NIRCam imaging",
            "useafter": "2022-01-01T00:00:00",
        },
        "parameters": {"class": "jwst.tweakreg.TweakRegStep", "name": "tweakreg", **parameters},
    }
    asdf.AsdfFile(tree).write_to(str(path))
    return str(path)


def _saved_pars(path, **parameters):
    """What ``strun --save-parameters`` writes (here as YAML): every parameter,
    stpipe's options included; ``option()`` values as strings."""
    pars = {k: v for k, v in _shipped()["tweakreg"].items() if k != "pars_file"}
    pars.update(connectivity="8", sigma_radius=1.5, pre_hooks=[], post_hooks=[], output_file=None, output_dir=None,
                output_ext=".fits", output_use_index=True, save_results=False, skip=False, suffix=None,
                search_output_file=True, input_dir="")
    pars.update(parameters)
    tree = {"class": "jwst.tweakreg.tweakreg_step.TweakRegStep", "name": "TweakRegStep", "parameters": pars}
    with open(path, "w") as f:
        yaml.safe_dump(tree, f)
    return str(path)


def _resolve(tmp_path, pars_file, user_tweakreg=None):
    """Snakemake's config for a user configuration file with this tweakreg block, resolved."""
    user = {"tweakreg": {"pars_file": pars_file, **(user_tweakreg or {})}}
    cfg = _merged(copy.deepcopy(user))
    notes = tfconfig.resolve_config(cfg, SCHEMA_PATH, overrides=user)
    return cfg, notes


def test_crds_file_read_as_stpipe_reads_it(tmp_path):
    path = _crds_pars(tmp_path / "jwst_nircam_pars-tweakregstep_0001.asdf", searchrad=1.0, fitgeometry="general")
    assert tfconfig.read_pars_file(path) == {"searchrad": 1.0, "fitgeometry": "general"}


def test_pars_file_beats_the_defaults_and_the_user_beats_the_file(tmp_path):
    """Precedence: defaults < pars_file < the user's own keys, even one the user
    sets to the default value; the align job's parameters follow."""
    path = _crds_pars(tmp_path / "pars.asdf", searchrad=1.0, fitgeometry="general", minobj=8, brightest=100)
    cfg, notes = _resolve(tmp_path, path, {"minobj": 12, "brightest": 200})
    tw = cfg["tweakreg"]
    relative = {k: tw[k] for k in RELATIVE_PARS}  # what the align rule passes (common.smk relative_params)
    assert relative == {**RELATIVE_PARS, "searchrad": 1.0, "fitgeometry": "general", "minobj": 12}
    assert tw["brightest"] == 200  # the user's, although equal to the default
    assert notes == [f"tweakreg.pars_file {path} sets fitgeometry='general', searchrad=1.0; your own brightest, minobj kept"]


def test_a_value_changed_from_the_default_is_the_users_too(tmp_path):
    """A configuration given without overrides (an edited config.yaml, a module's
    config): a value that differs from the shipped default is the user's."""
    path = _crds_pars(tmp_path / "pars.asdf", searchrad=1.0, minobj=8)
    cfg = _merged({"tweakreg": {"pars_file": path, "minobj": 20}})
    tfconfig.resolve_config(cfg, SCHEMA_PATH, overrides=None)
    assert (cfg["tweakreg"]["searchrad"], cfg["tweakreg"]["minobj"]) == (1.0, 20)


def test_saved_parameters_file_ignores_stpipe_options_in_one_line(tmp_path):
    path = _saved_pars(tmp_path / "tweakreg.yaml", searchrad=4.0)
    cfg, notes = _resolve(tmp_path, path)
    assert cfg["tweakreg"]["searchrad"] == 4.0 and cfg["tweakreg"]["connectivity"] == 8 and cfg["tweakreg"]["sigma_radius"] == 1.5
    assert notes[0] == f"tweakreg.pars_file {path} sets searchrad=4.0, sigma_radius=1.5"
    assert notes[1] == (
        f"tweakreg.pars_file {path}: stpipe options ignored (no meaning here): input_dir, output_dir, output_ext, "
        "output_file, output_use_index, post_hooks, pre_hooks, save_results, search_output_file, skip, suffix"
    )
    assert not any(k in cfg["tweakreg"] for k in tfconfig.STPIPE_OPTIONS)


def test_saved_parameters_as_asdf_and_json(tmp_path):
    """export_config's ASDF (class, name, parameters at the top) and the same tree as JSON."""
    tree = {"class": "jwst.tweakreg.TweakRegStep", "name": "tweakreg", "parameters": {"nclip": 5, "skip": False}}
    asdf.AsdfFile(tree).write_to(str(tmp_path / "saved.asdf"))
    (tmp_path / "saved.json").write_text('{"class": "jwst.tweakreg.TweakRegStep", "parameters": {"nclip": 5}}')
    assert tfconfig.read_pars_file(tmp_path / "saved.asdf") == {"nclip": 5, "skip": False}
    assert tfconfig.read_pars_file(tmp_path / "saved.json") == {"nclip": 5}


def test_pipeline_file_gives_its_tweakreg_step(tmp_path):
    tree = {
        "class": "jwst.pipeline.Image3Pipeline",
        "name": "calwebb_image3",
        "parameters": {"output_dir": None},
        "steps": [
            {"class": "jwst.assign_mtwcs.AssignMTWcsStep", "name": "assign_mtwcs", "parameters": {"suffix": "x"}},
            {"class": "jwst.tweakreg.TweakRegStep", "name": "tweakreg", "parameters": {"searchrad": 0.5}},
        ],
    }
    asdf.AsdfFile(tree).write_to(str(tmp_path / "image3.asdf"))
    assert tfconfig.read_pars_file(tmp_path / "image3.asdf") == {"searchrad": 0.5}


@pytest.mark.parametrize(
    "parameters,line",
    [
        ({"serchrad": 3.0}, "{path}: tweakreg.serchrad: unknown key (value 3.0); did you mean tweakreg.searchrad?"),
        ({"fitgeometry": "rshfit"}, "{path}: tweakreg.fitgeometry: 'rshfit' is not one of 'shift', 'rshift', 'rscale', 'general'; did you mean rshift?"),
        ({"minobj": "many"}, "{path}: tweakreg.minobj: 'many' is not an integer"),
        ({"pars_file": "other.asdf"}, "{path}: tweakreg.pars_file: a parameter file cannot name another"),
    ],
)
def test_file_parameters_are_checked_as_user_keys(tmp_path, parameters, line):
    path = _crds_pars(tmp_path / "pars.asdf", **parameters)
    with pytest.raises(ConfigError) as exc:
        _resolve(tmp_path, path)
    assert str(exc.value) == "tweakreg.pars_file: " + line.format(path=path)


@pytest.mark.parametrize(
    "content,problem",
    [
        (None, "file does not exist"),
        ("just text\n", "no 'parameters' mapping (not a jwst step parameter file)"),
        ("parameters: [1, 2\n", "not an ASDF, YAML or JSON parameter file (while parsing a flow sequence)"),
        ("class: jwst.skymatch.SkyMatchStep\nparameters: {skymethod: local}\n", "parameters of jwst.skymatch.SkyMatchStep, not of TweakRegStep"),
        ("#ASDF 1.0.0\ngarbage", "not a readable ASDF file"),
    ],
)
def test_unusable_file_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "pars.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as exc:
        tfconfig.read_pars_file(path)
    assert str(exc.value).startswith(f"tweakreg.pars_file: {path}: {problem}")
    assert "\n" not in str(exc.value)


def test_no_pars_file_changes_nothing():
    cfg = _merged({})
    before = copy.deepcopy(cfg)
    assert tfconfig.resolve_config(cfg, SCHEMA_PATH, overrides={}) == []
    assert cfg == before


# ---------------------------------------------------------------------------
# through Snakemake: what the console shows
# ---------------------------------------------------------------------------


def _dry_run(tmp_path, user):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": "out", **user}))
    cmd = [snakemake_bin(), "-n", "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    "user,needle",
    [
        ({"tweakreg": {"serchrad": 3}}, "tweakreg.serchrad: unknown key (value 3); did you mean tweakreg.searchrad?"),
        ({"tweakreg": {"searchrad": "wide"}}, "tweakreg.searchrad: 'wide' is not a number"),
        ({"tweakreg": {"fitgeometry": "rshfit"}}, "tweakreg.fitgeometry: 'rshfit' is not one of 'shift', 'rshift', 'rscale', 'general'; did you mean rshift?"),
    ],
)
def test_console_shows_a_short_paragraph(tmp_path, user, needle):
    """The whole console output of a run with a bad key: a few lines, the key, the
    suggestion; no schema, no configuration dump, no job run."""
    proc = _dry_run(tmp_path, user)
    assert proc.returncode != 0
    assert f"tweakflow: invalid configuration: {needle}" in proc.stdout, proc.stdout
    assert len(proc.stdout.splitlines()) <= 6, proc.stdout
    assert "schema" not in proc.stdout and "Job stats" not in proc.stdout and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_console_shows_the_pars_file_at_work(tmp_path):
    """A run with a pars_file logs what the file set, the user's keys kept and
    the stpipe options ignored; an unknown parameter in it stops the run."""
    path = _saved_pars(tmp_path / "tweakreg.yaml", searchrad=1.0, fitgeometry="general")
    proc = _dry_run(tmp_path, {"tweakreg": {"pars_file": path, "minobj": 12}})
    assert proc.returncode == 0, proc.stdout
    assert f"tweakflow: tweakreg.pars_file {path} sets fitgeometry='general', searchrad=1.0, sigma_radius=1.5" in proc.stdout
    assert f"tweakflow: tweakreg.pars_file {path}: stpipe options ignored (no meaning here): input_dir," in proc.stdout
    assert "; your own minobj kept" in proc.stdout
    bad = _crds_pars(tmp_path / "bad.asdf", serchrad=1.0)
    proc = _dry_run(tmp_path, {"tweakreg": {"pars_file": bad}})
    assert proc.returncode != 0
    assert f"tweakreg.pars_file: {bad}: tweakreg.serchrad: unknown key (value 1.0); did you mean tweakreg.searchrad?" in proc.stdout
    assert len(proc.stdout.splitlines()) <= 6, proc.stdout
    # the rules see the file's values: an early CRDS file's separation < sqrt(2) x tolerance is refused
    old = _crds_pars(tmp_path / "old.asdf", separation=0.5, tolerance=1.0)
    proc = _dry_run(tmp_path, {"tweakreg": {"pars_file": old}})
    assert proc.returncode != 0
    assert "tweakreg.separation (0.5) must be at least sqrt(2) x tweakreg.tolerance (1)" in proc.stdout


def test_file_written_by_jwst_is_read_whole():
    """What jwst 3.0's ``TweakRegStep().export_config(path, include_metadata=True)``
    wrote (the file ``strun --save-parameters`` writes; recorded once into
    tests/data, jwst stays out of the dependencies): every parameter of the
    step is a tweakflow key; the stpipe options are set aside; the only
    default that differs is sigma_radius (tweakflow's 2.5, see config.yaml)."""
    path = os.path.join(ROOT, "tests", "data", "jwst_3.0_tweakregstep_export_config.asdf")
    values, ignored = tfconfig.pars_file_values(path, SCHEMA)
    assert ignored == sorted(tfconfig.STPIPE_OPTIONS)
    defaults = {k: p["default"] for k, p in SCHEMA["properties"]["tweakreg"]["properties"].items() if k != "pars_file"}
    assert set(values) == set(defaults)
    assert {k: v for k, v in values.items() if v != defaults[k]} == {"sigma_radius": 1.5}
    assert values["connectivity"] == 8  # written '8' by stpipe
