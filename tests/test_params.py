"""tweakflow.params: the library's defaults agree with the schema and config.yaml; blocks are resolved strictly."""

import inspect
import os

import pytest
import yaml

from tweakflow import params
from tweakflow.errors import ConfigError
from tweakflow.refcat import DEFAULT_URL, HYGIENE_DEFAULTS
from tweakflow.steps.fanout import fetch_refcat_step
from workflow_runner import ROOT

#: configuration block -> the library's defaults of that block
BLOCKS = {
    "tweakreg": {**params.DEFAULT_DETECTION_PARS, **params.RELATIVE_PARS, **params.ABSOLUTE_PARS, **params.SIP_PARS},
    "quality": params.QUALITY_DEFAULTS,
    "fits": params.FITS_DEFAULTS,
    "refcat": HYGIENE_DEFAULTS,  # the catalog-hygiene keys (url, timeout, retries: test_refcat_service_defaults_agree)
    "transfer": params.TRANSFER_DEFAULTS,
}


def _load(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return yaml.safe_load(f)


def _normal(value):
    """YAML lists and Python tuples compare equal; ints and floats by value."""
    return list(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_schema_defaults_equal_the_library_defaults(block):
    props = _load("workflow", "schemas", "config.schema.yaml")["properties"][block]["properties"]
    for key, default in BLOCKS[block].items():
        assert key in props, f"{block}.{key} is a library parameter missing from the schema"
        assert "default" in props[key], f"{block}.{key}: no default in the schema"
        assert _normal(props[key]["default"]) == _normal(default), f"{block}.{key}: schema {props[key]['default']!r} != library {default!r}"


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_config_yaml_states_the_library_defaults(block):
    config = _load("config", "config.yaml")[block]
    for key, default in BLOCKS[block].items():
        assert key in config, f"config/config.yaml: {block}.{key} missing"
        assert _normal(config[key]) == _normal(default), f"config/config.yaml: {block}.{key} = {config[key]!r}, library {default!r}"


def test_refcat_service_defaults_agree():
    props = _load("workflow", "schemas", "config.schema.yaml")["properties"]["refcat"]["properties"]
    sig = inspect.signature(fetch_refcat_step).parameters
    assert props["url"]["default"] == DEFAULT_URL
    assert props["timeout"]["default"] == sig["timeout"].default
    assert props["retries"]["default"] == sig["retries"].default


def test_schema_tweakreg_keys_are_the_spec_parameters_or_workflow_keys():
    """Every key of the schema's tweakreg block that no library block holds is a
    workflow-level parameter of the step (read by the rules, not the library)."""
    props = _load("workflow", "schemas", "config.schema.yaml")["properties"]["tweakreg"]["properties"]
    workflow_level = {"pars_file", "save_catalogs", "use_custom_catalogs", "catalog_format", "catfile", "abs_refcat", "save_abs_catalog", "output_use_model", "in_memory"}
    assert set(props) - set(BLOCKS["tweakreg"]) == workflow_level


def test_resolve_block_merges_and_copies():
    out = params.resolve_block("quality", params.QUALITY_DEFAULTS, {"min_matches": 4})
    assert out["min_matches"] == 4 and out["refine"] is True
    assert params.QUALITY_DEFAULTS["min_matches"] == 10  # defaults untouched
    assert params.resolve_block("fits", params.FITS_DEFAULTS, None) == params.FITS_DEFAULTS


def test_resolve_block_refuses_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"^tweakreg: unknown key\(s\): serchrad \(did you mean searchrad\?\), zzz$"):
        params.resolve_block("tweakreg", params.RELATIVE_PARS, {"serchrad": 1.0, "zzz": 1})


def test_check_separation_refuses_a_separation_below_sqrt2_tolerance():
    params.check_separation({"separation": 1.0, "tolerance": 0.7})
    with pytest.raises(ConfigError, match=r"tweakreg\.abs_separation \(0\.5\)"):
        params.check_separation({"abs_separation": 0.5, "abs_tolerance": 0.7}, "abs_")


def test_config_yaml_states_every_schema_default():
    """Workflow-level keys too (tweakreg.pars_file, save_catalogs, the top-level
    keys): config.yaml's value is the schema's default, so that a run without
    config.yaml (a module, --replace-workflow-config) is the same run."""
    schema, config = _load("workflow", "schemas", "config.schema.yaml"), _load("config", "config.yaml")
    for key, prop in schema["properties"].items():
        if "default" in prop and prop["default"] != {}:
            assert _normal(config[key]) == _normal(prop["default"]), key
        for sub, sprop in prop.get("properties", {}).items():
            if "default" in sprop and key in config:
                assert _normal(config[key][sub]) == _normal(sprop["default"]), f"{key}.{sub}"
