"""The workflow's configuration: checked against its schema with messages a
user can act on, and a jwst parameter reference file (``tweakreg.pars_file``)
read as defaults of the ``tweakreg`` block.

`validate_config` replaces ``snakemake.utils.validate``: it fills the
schema's defaults in the same way (``set_default=True``: a missing key
with a ``default`` is set, in nested blocks too), but reports every
problem at once, one line each (the key's full path, what is wrong, the
value given, and a close match when there is one) instead of jsonschema's
first error followed by the schema and the whole configuration.

`apply_pars_file` reads the file a JWST user already has: the
``pars-tweakregstep`` ASDF file CRDS serves, or what ``strun
--save-parameters`` (``Step.export_config``) writes. Its parameters replace
the shipped defaults; a key the user sets in their own configuration wins
over the file.
"""

from __future__ import annotations

import copy
import os

import jsonschema
import yaml

from .errors import ConfigError
from .params import close_match

__all__ = [
    "load_schema",
    "config_problems",
    "validate_config",
    "read_pars_file",
    "pars_file_values",
    "user_keys",
    "apply_pars_file",
    "resolve_config",
    "STPIPE_OPTIONS",
]

#: stpipe's options of every step (``Step.spec``) that mean nothing here:
#: where the step writes, whether it is skipped, its hooks. A pars file's
#: values for them are ignored (and listed). ``output_use_model`` is the
#: one stpipe option tweakflow has (it names the products).
STPIPE_OPTIONS = (
    "pre_hooks",
    "post_hooks",
    "output_file",
    "output_dir",
    "output_ext",
    "output_use_index",
    "save_results",
    "skip",
    "suffix",
    "search_output_file",
    "input_dir",
)

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a block of keys",
    "null": "null",
}


def load_schema(path):
    """The configuration schema (YAML or JSON) as a dict."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _show(value):
    """A value as the user wrote it in YAML, cut to a readable length."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(parts):
    """``tweakreg.searchrad``, ``demo.detectors[1]``: a key's full path."""
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _types(schema):
    """The JSON types a subschema accepts, in words (``a number or null``)."""
    types = _types_list(schema)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types += [t for t in _types_list(branch) if t not in types]
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types) or "valid"


def _types_list(schema):
    """The ``type`` of a subschema as a list."""
    t = schema.get("type")
    return [t] if isinstance(t, str) else list(t or [])


def _elsewhere(key, path, root):
    """Where else ``key`` is a key of the configuration (top level or a block), or None."""
    props = root.get("properties", {})
    places = [k for k in props if k == key and path]
    places += [_join(block, key) for block, sub in props.items() if block != path and key in sub.get("properties", {})]
    return places[0] if len(places) == 1 else None


def _unknown_keys(error, path, root):
    """One line per key of a block that its schema does not know, with the
    closest key of the block, or the place where the key belongs
    (``searchrad`` at the top level: ``tweakreg.searchrad``)."""
    known = list(error.schema.get("properties", {}))
    lines = []
    for key, value in error.instance.items():
        if key in known:
            continue
        line = f"{_join(path, key)}: unknown key (value {_show(value)})"
        close = _elsewhere(key, path, root) or (_join(path, m) if (m := close_match(key, known)) else None)
        lines.append(line + (f"; did you mean {close}?" if close else ""))
    return lines


def _one_of(error, path, root):
    """A value no branch of a ``oneOf`` accepts: the branch whose type fits
    tells what is wrong inside it; else the types accepted."""
    inner = [e for e in error.context if not (e.validator == "type" and list(e.absolute_path) == list(error.absolute_path))]
    if inner:
        return _describe(jsonschema.exceptions.best_match(inner), root)
    return [f"{path}: {_show(error.instance)} is not {_types(error.schema)}"]


def _bound(error, path):
    """Range and size checks: minimum, exclusiveMinimum, minItems..."""
    v, limit = _show(error.instance), error.validator_value
    words = {
        "minimum": f"{v} is below the minimum {limit}",
        "maximum": f"{v} is above the maximum {limit}",
        "exclusiveMinimum": f"{v} must be greater than {limit}",
        "exclusiveMaximum": f"{v} must be less than {limit}",
        "minItems": f"{v} needs at least {limit} item(s)",
        "maxItems": f"{v} takes at most {limit} item(s)",
        "minLength": f"{v} must not be empty" if limit == 1 else f"{v} needs at least {limit} characters",
        "uniqueItems": f"{v} lists an item twice",
    }
    return [f"{path}: {words[error.validator]}"]


def _describe(error, root):
    """Lines (usually one) saying what a jsonschema error means to a user
    (``root``: the whole schema)."""
    path = _path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        return _unknown_keys(error, path, root)
    if kind == "required":
        return [f"{_join(path, k)}: missing (required)" for k in error.validator_value if k not in error.instance]
    if kind == "type":
        return [f"{path}: {_show(error.instance)} is not {_types(error.schema)}"]
    if kind == "enum":
        choices = error.validator_value
        line = f"{path}: {_show(error.instance)} is not one of {', '.join(_show(c) for c in choices)}"
        close = close_match(error.instance, choices)
        return [line + (f"; did you mean {close}?" if close else "")]
    if kind in ("oneOf", "anyOf"):
        return _one_of(error, path, root)
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "uniqueItems"):
        return _bound(error, path)
    return [f"{path or 'configuration'}: {error.message}"]


def _validator_class(fill_defaults):
    """Draft 2020-12, filling defaults as ``snakemake.utils.validate`` does.

    The ``properties`` keyword first sets every missing key that has a
    ``default`` (a copy of it: the schema is never shared with the
    configuration), then validates, so that the defaults of a block that
    was itself filled in are set too.
    """
    base = jsonschema.Draft202012Validator
    if not fill_defaults:
        return base
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})


def config_problems(config, schema, fill_defaults=True):
    """Every problem of a configuration, one line each.

    Parameters
    ----------
    config : dict
        The configuration; with ``fill_defaults``, missing keys that have a
        default in ``schema`` are set in place.
    schema : dict
        A JSON schema (draft 2020-12).
    fill_defaults : bool
        Set the schema's defaults, as ``snakemake.utils.validate`` does.

    Returns
    -------
    list of str
        ``<key path>: <what is wrong>`` (with the value given and a close
        match when there is one); empty when the configuration is valid.
    """
    validator = _validator_class(fill_defaults)(schema)
    lines = []
    for error in validator.iter_errors(config):
        lines += [line for line in _describe(error, schema) if line not in lines]
    return lines


def _problems_message(what, lines):
    if len(lines) == 1:
        return f"{what}: {lines[0]}"
    return f"{what} ({len(lines)} problems):\n  " + "\n  ".join(lines)


def validate_config(config, schema, fill_defaults=True):
    """Check a configuration against its schema, filling its defaults.

    Raises
    ------
    ConfigError
        One short paragraph: ``invalid configuration: <problem>``, or a
        count and one indented line per problem.
    """
    lines = config_problems(config, schema, fill_defaults=fill_defaults)
    if lines:
        raise ConfigError(_problems_message("invalid configuration", lines))
    return config


# --- tweakreg.pars_file: a jwst parameter reference file ---------------------


def _read_tree(path):
    """The tree of an ASDF file (``#ASDF`` header), else of a YAML or JSON file."""
    with open(path, "rb") as f:
        head = f.read(5)
    if head == b"#ASDF":
        # imported here: only a run with an ASDF pars file pays for it
        import asdf

        try:
            with asdf.open(path, lazy_load=False, memmap=False) as af:
                return copy.deepcopy(dict(af.tree))
        except Exception as exc:  # asdf raises many kinds for a damaged file
            raise ConfigError(f"tweakreg.pars_file: {path}: not a readable ASDF file ({type(exc).__name__}: {exc})") from None
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"tweakreg.pars_file: {path}: not an ASDF, YAML or JSON parameter file ({first})") from None


def _is_tweakreg(step_class):
    """``jwst.tweakreg.TweakRegStep``, its module path, or its alias ``tweakreg``."""
    return str(step_class).split(".")[-1] in ("TweakRegStep", "tweakreg")


def _tweakreg_substep(tree, pars):
    """The tweakreg step's parameters in a pipeline's parameter file, or None.

    ``Step.export_config`` lists sub-steps under ``steps`` (class, name,
    parameters); the older layout nests them in ``parameters.steps`` by name.
    """
    for step in tree.get("steps") or []:
        if isinstance(step, dict) and (_is_tweakreg(step.get("class", "")) or step.get("name") == "tweakreg"):
            return dict(step.get("parameters") or {})
    nested = pars.get("steps")
    if isinstance(nested, dict) and isinstance(nested.get("tweakreg"), dict):
        return dict(nested["tweakreg"])
    return None


def read_pars_file(path):
    """The TweakRegStep parameters of a jwst parameter file.

    Reads what stpipe reads (``StepConfig.from_asdf``): the
    ``pars-tweakregstep`` ASDF file CRDS serves (``parameters`` holds the
    parameters and ``class``; ``meta`` describes the file), what ``strun
    --save-parameters`` writes (``class``, ``name``, ``parameters`` and, for
    a pipeline, ``steps``: the tweakreg step's are taken), or the same tree
    as YAML or JSON.

    Parameters
    ----------
    path : str
        The file.

    Returns
    -------
    dict
        Parameter name -> value, as the file gives them (stpipe's options
        included, ``class`` and ``name`` left out).

    Raises
    ------
    ConfigError
        Naming the file: missing, unreadable, no ``parameters``, or the
        parameters of another step.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"tweakreg.pars_file: {path}: file does not exist")
    tree = _read_tree(path)
    pars = tree.get("parameters") if isinstance(tree, dict) else None
    if not isinstance(pars, dict):
        raise ConfigError(f"tweakreg.pars_file: {path}: no 'parameters' mapping (not a jwst step parameter file)")
    pars = dict(pars)
    step_class = tree.get("class") or pars.get("class") or ""
    if step_class and not _is_tweakreg(step_class):
        sub = _tweakreg_substep(tree, pars)
        if sub is None:
            raise ConfigError(f"tweakreg.pars_file: {path}: parameters of {step_class}, not of TweakRegStep")
        pars = sub
    for key in ("class", "name", "steps"):
        pars.pop(key, None)
    return pars


def _coerce(value, prop):
    """A number written as a string, as stpipe writes its ``option()``
    parameters (``connectivity: '8'``), as the number the key takes."""
    types = _types_list(prop)
    if not isinstance(value, str) or "string" in types or not {"integer", "number"} & set(types):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if "integer" in types and number.is_integer():
        return int(number)
    return number if "number" in types else value


def pars_file_values(path, schema):
    """The checked ``tweakreg`` values of a parameter file.

    Every parameter gets the checks of the schema's ``tweakreg`` block, as a
    key of the user's configuration does (``pars_file`` itself excepted);
    stpipe's options that mean nothing here (`STPIPE_OPTIONS`) are set
    aside.

    Returns
    -------
    values : dict
        Parameter -> value.
    ignored : list of str
        The stpipe options the file sets, sorted.

    Raises
    ------
    ConfigError
        One line per problem, each naming the file and the key.
    """
    pars = read_pars_file(path)
    block = schema["properties"]["tweakreg"]
    props = block["properties"]
    values = {k: _coerce(v, props.get(k, {})) for k, v in pars.items() if k not in STPIPE_OPTIONS}
    wrapper = {"type": "object", "properties": {"tweakreg": block}, "definitions": schema.get("definitions", {})}
    lines = config_problems({"tweakreg": values}, wrapper, fill_defaults=False)
    if "pars_file" in values:  # the one key of the block a pars file cannot hold
        lines.insert(0, "tweakreg.pars_file: a parameter file cannot name another")
    if lines:
        raise ConfigError(_problems_message("tweakreg.pars_file", [f"{path}: {line}" for line in lines]))
    return values, sorted(k for k in pars if k in STPIPE_OPTIONS)


def user_keys(block, defaults, overrides=None):
    """The keys of a block the user set.

    A key is the user's when it is in ``overrides`` (what Snakemake read
    from the user's ``--configfile`` and ``--config``:
    ``workflow.config_settings.overwrite_config``), or when its value
    differs from the shipped default (an edited ``config/config.yaml``; a
    configuration given by the Snakefile that uses tweakflow as a module).
    """
    mine = set(overrides) if isinstance(overrides, dict) else set()
    return mine | {k for k, v in block.items() if k in defaults and v != defaults[k]}


def apply_pars_file(config, schema, overrides=None):
    """Read ``tweakreg.pars_file`` into ``config["tweakreg"]`` (in place).

    Precedence: the schema's (and config.yaml's) defaults < the file < the
    user's own keys (`user_keys`).

    Parameters
    ----------
    config : dict
        The validated configuration, defaults filled.
    schema : dict
        The configuration schema.
    overrides : dict or None
        The user's own configuration (``--configfile`` and ``--config``
        merged, as Snakemake keeps them).

    Returns
    -------
    list of str
        Lines for the log: what the file changed, the user's keys kept over
        it, the stpipe options ignored. Empty without a ``pars_file``.
    """
    tw = config["tweakreg"]
    path = (tw.get("pars_file") or "").strip()
    if not path:
        return []
    values, ignored = pars_file_values(path, schema)
    defaults = {k: p["default"] for k, p in schema["properties"]["tweakreg"]["properties"].items() if "default" in p}
    mine = user_keys(tw, defaults, (overrides or {}).get("tweakreg"))
    changed = {k: v for k, v in values.items() if k not in mine and v != tw.get(k)}
    kept = sorted(k for k in values if k in mine and values[k] != tw.get(k))
    tw.update({k: v for k, v in values.items() if k not in mine})
    note = "sets " + ", ".join(f"{k}={_show(v)}" for k, v in sorted(changed.items())) if changed else "changes no default"
    notes = [f"tweakreg.pars_file {path} {note}" + (f"; your own {', '.join(kept)} kept" if kept else "")]
    if ignored:
        notes.append(f"tweakreg.pars_file {path}: stpipe options ignored (no meaning here): {', '.join(ignored)}")
    return notes


def resolve_config(config, schema_path, overrides=None, strict=True):
    """The workflow's configuration, checked and completed (in place).

    `validate_config` (defaults filled), then `apply_pars_file`.

    Parameters
    ----------
    config : dict
        Snakemake's ``config``.
    schema_path : str
        ``workflow/schemas/config.schema.yaml``.
    overrides : dict or None
        ``workflow.config_settings.overwrite_config``.
    strict : bool
        False: problems are not raised (a module imported with
        ``skip_validation``, as ``snakemake.utils.validate`` honours it).

    Returns
    -------
    list of str
        Lines for the log (`apply_pars_file`).
    """
    schema = load_schema(schema_path)
    if strict:
        validate_config(config, schema)
    else:
        config_problems(config, schema)  # the defaults, still
    return apply_pars_file(config, schema, overrides)
