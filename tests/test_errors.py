"""Every bad input of docs/errors.md and what the user sees: one test per row.

Row ids (C1, I1, A1, M1, K1, R1, O1...) are those of the table. Problems
found at parse time are checked through ``snakemake -n`` (non-zero exit, the
message, no job run, no output folder); problems found by a job are checked
on the step function the job runs (the `TweakflowError` it raises names the
file and the problem; `run_rule` turns it into one line and exit status 1),
plus one end-to-end run showing a failed job through Snakemake.
"""

import json
import os
import shutil

import numpy as np
import pytest
import yaml
from astropy.table import Table

from tweakflow.errors import ConfigError, InputError, OutputError, TweakflowError
from workflow_runner import ROOT, run_workflow

#: a few small images: enough for the per-image steps, cheap to copy
DATA = {"n_exposures": 2, "detectors": ["nrca1"], "shape": (256, 256), "n_stars": 6000, "seed": 5}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Good images plus one bad variant of the first image per kind of damage."""
    from stdatamodels.jwst.datamodels import ImageModel

    from tweakflow.synthetic import SyntheticConfig, make_dataset

    base = tmp_path_factory.mktemp("errors")
    ds = make_dataset(str(base / "good"), SyntheticConfig(**DATA))
    src = ds["images"][0]
    bad = base / "bad"
    bad.mkdir()
    raw = open(src, "rb").read()
    out = {"good": ds["images"], "base": base, "asn": ds["asn"]}

    def write(name, content):
        p = str(bad / name)
        with open(p, "wb") as f:
            f.write(content)
        out[name.split("_cal")[0]] = p

    write("text_cal.fits", b"<html><body>404 Not Found</body></html>\n")
    write("empty_cal.fits", b"")
    write("truncated_cal.fits", raw[: len(raw) // 2])
    # the ASDF extension's YAML damaged (bytes in the middle of the tree)
    from astropy.io import fits

    with fits.open(src) as hdul:
        info = hdul.fileinfo(hdul.index_of("ASDF"))
    buf = bytearray(raw)
    mid = info["datLoc"] + 600
    buf[mid : mid + 40] = b"\x00\xff: [}{ ]] !!bad" + b"#" * 25
    write("badasdf_cal.fits", bytes(buf))
    with fits.open(src) as hdul:
        hdul["SCI"].name = "NOTSCI"
        hdul.writeto(str(bad / "nosci_cal.fits"))
    out["nosci"] = str(bad / "nosci_cal.fits")
    with ImageModel(src) as m:
        del m.meta.wcs
        m.save(str(bad / "nowcs_cal.fits"))
    out["nowcs"] = str(bad / "nowcs_cal.fits")
    with ImageModel(src) as m:
        import astropy.units as u
        import gwcs
        from gwcs import coordinate_frames as cf

        p = m.meta.wcs.pipeline
        world = cf.Frame2D(name="world", axes_names=("x", "y"), unit=(u.arcsec, u.arcsec))
        m.meta.wcs = gwcs.WCS([(p[0].frame, p[0].transform), (p[1].frame, p[1].transform), (world, None)])
        m.save(str(bad / "noncelestial_cal.fits"))
    out["noncelestial"] = str(bad / "noncelestial_cal.fits")
    for name, value in (("allnan", np.nan), ("allzero", 0.0)):
        with ImageModel(src) as m:
            m.data[...] = value
            m.save(str(bad / f"{name}_cal.fits"))
        out[name] = str(bad / f"{name}_cal.fits")
    return out


def _config(**override):
    """The default configuration with ``override`` merged in (one level deep)."""
    with open(os.path.join(ROOT, "config", "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def _dry_run_fails(tmp_path, config, *needles):
    """``snakemake -n`` stops at parse time with all ``needles`` in its output."""
    proc = run_workflow(tmp_path, {"output_dir": "out", **config}, "-n", check=False, timeout=120)
    assert proc.returncode != 0, proc.stdout[-3000:]
    for needle in needles:
        assert needle in proc.stdout, (needle, proc.stdout[-3000:])
    assert "Job stats" not in proc.stdout and not os.path.exists(tmp_path / "out")
    return proc.stdout


# ---------------------------------------------------------------------------
# C: configuration (schema, parse time)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row,override,needle",
    [
        ("C1", {"tweakreg": {"serchrad": 3.0}}, "tweakreg.serchrad"),
        ("C1", {"output_dri": "x"}, "output_dri"),
        ("C2", {"tweakreg": {"searchrad": "wide"}}, "tweakreg.searchrad"),
        ("C2", {"tweakreg": {"use2dhist": "yes"}}, "tweakreg.use2dhist"),
        ("C3", {"tweakreg": {"minobj": 0}}, "tweakreg.minobj"),
        ("C3", {"tweakreg": {"sigma": -1.0}}, "tweakreg.sigma"),
        ("C3", {"tweakreg": {"fitgeometry": "affine"}}, "tweakreg.fitgeometry"),
        ("C3", {"on_bad_input": "ignore"}, "on_bad_input"),
    ],
)
def test_config_schema(row, override, needle):
    """C1-C3: one line naming the key's full path (more in tests/test_config.py)."""
    from tweakflow.config import load_schema, validate_config

    with pytest.raises(ConfigError) as exc:
        validate_config(_config(**override), load_schema(os.path.join(ROOT, "workflow", "schemas", "config.schema.yaml")))
    assert str(exc.value).startswith(f"invalid configuration: {needle}: ")


@pytest.mark.slow
def test_config_error_stops_before_any_job(tmp_path):
    """C1-C3 end to end: the run stops at parse time naming the key."""
    _dry_run_fails(tmp_path, {"tweakreg": {"serchrad": 3.0}}, "serchrad")


@pytest.mark.slow
@pytest.mark.parametrize(
    "tweakreg,needle",
    [
        ({"separation": 0.9, "tolerance": 0.7}, "tweakreg.separation (0.9) must be at least sqrt(2) x tweakreg.tolerance (0.7)"),
        ({"abs_refcat": "GAIADR3", "abs_separation": 1.0, "abs_tolerance": 1.0}, "tweakreg.abs_separation (1) must be at least sqrt(2) x tweakreg.abs_tolerance (1)"),
    ],
)
def test_separation_below_sqrt2_tolerance_stops_before_any_job(tmp_path, tweakreg, needle):
    """C4: the spec's separation >= sqrt(2) x tolerance, refused at parse time in one line."""
    out = _dry_run_fails(tmp_path, {"tweakreg": tweakreg}, needle)
    assert "Traceback" not in out


def test_separation_rule_is_the_library_rule_too():
    """C4: relative_align and absolute_fit refuse what the workflow refuses; sqrt(2) x tolerance is allowed."""
    from tweakflow.absolute import absolute_fit
    from tweakflow.align import relative_align
    from tweakflow.params import check_separation

    with pytest.raises(ConfigError, match=r"tweakreg\.separation \(0\.9\)"):
        relative_align([], separation=0.9, tolerance=0.7)
    with pytest.raises(ConfigError, match=r"tweakreg\.abs_separation \(0\.5\)"):
        absolute_fit([], [], [], Table(), abs_separation=0.5)
    check_separation({"separation": 2**0.5 * 0.5, "tolerance": 0.5})
    check_separation({"abs_separation": 1.0, "abs_tolerance": 0.7}, "abs_")


# ---------------------------------------------------------------------------
# I: the list of inputs (parse time)
# ---------------------------------------------------------------------------


def test_glob_matches_nothing(tmp_path):
    """I1"""
    from tweakflow.inputs import resolve_inputs

    with pytest.raises(ConfigError, match=r"inputs: pattern '.*nothing\*\.fits' matches no file"):
        resolve_inputs([str(tmp_path / "nothing*.fits")])


def test_input_missing(tmp_path):
    """I2"""
    from tweakflow.inputs import resolve_inputs

    p = str(tmp_path / "gone_cal.fits")
    with pytest.raises(InputError, match="input image does not exist") as exc:
        resolve_inputs([p])
    assert p in str(exc.value)


def test_input_directory_without_images(tmp_path):
    """I5: a folder given as an input stands for its *_cal.fits (else *.fits) files; with none, one line."""
    from tweakflow.inputs import resolve_inputs

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError) as exc:
        resolve_inputs(str(tmp_path))
    assert str(exc.value) == f"{tmp_path}: a directory with no *_cal.fits or *.fits files"


def test_same_output_name(data, tmp_path):
    """I3: two inputs that would be written to the same product."""
    from tweakflow.inputs import resolve_inputs

    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = shutil.copy(data["good"][0], other)
    with pytest.raises(ConfigError, match="would both be written as") as exc:
        resolve_inputs([data["good"][0], twin])
    assert data["good"][0] in str(exc.value) and twin in str(exc.value)


@pytest.mark.slow
def test_not_fits_found_before_any_job(data, tmp_path):
    """I4: files that are not FITS (or empty) are all listed at parse time."""
    out = _dry_run_fails(
        tmp_path,
        {"inputs": [data["good"][1], data["text"], data["empty"]]},
        "2 input image(s) are not FITS files",
        f"{data['text']}: not a FITS file",
        f"{data['empty']}: empty file",
    )
    assert data["good"][1] + ":" not in out


@pytest.mark.slow
def test_not_fits_skip_mode_plans_the_run(data, tmp_path):
    """I4 with on_bad_input: skip: a warning at parse time, and the run goes on
    (also with custom catalogs on, which read every input's primary header)."""
    config = {"output_dir": "out", "on_bad_input": "skip", "inputs": [data["good"][1], data["text"]]}
    proc = run_workflow(tmp_path, {**config, "tweakreg": {"use_custom_catalogs": True}}, "-n")
    assert f"tweakflow: {data['text']}: not a FITS file" in proc.stdout
    assert "detect_sources" in proc.stdout


def test_fits_signature_check_is_cheap(data):
    """I4: the parse-time check reads a few bytes (and recognises gzip)."""
    import gzip

    from tweakflow.io import check_fits_signature

    assert check_fits_signature(data["good"][0]) is None
    assert check_fits_signature(data["truncated"]) is None  # found by the reader, at job time
    gz = str(data["base"] / "image_cal.fits.gz")
    with open(data["good"][0], "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    assert check_fits_signature(gz) is None
    assert "not a FITS file" in check_fits_signature(data["text"])
    assert "empty file" in check_fits_signature(data["empty"])


# ---------------------------------------------------------------------------
# A: association files (parse time)
# ---------------------------------------------------------------------------


def _asn(folder, content):
    p = folder / "my_asn.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(p)


def _members(*names):
    return {"products": [{"name": "p", "members": [{"expname": n, "exptype": "science"} for n in names]}]}


@pytest.mark.parametrize(
    "row,content,needle",
    [
        ("A2", "{'products': [", "association is not valid JSON"),
        ("A3", {"asn_type": "image3", "products": []}, "association has no 'products'"),
        ("A4", {"products": [{"name": "p"}]}, "products[0] has no 'members' list"),
        ("A4", {"products": [{"members": [{"exptype": "science"}]}]}, "products[0].members[0] has no 'expname'"),
        ("A5", _members("img1_cal.fits", "missing_cal.fits"), "member 'missing_cal.fits' does not exist"),
        ("A6", _members("img1_cal.fits", "../outside_cal.fits"), "is outside the association's folder (set allow_outside_asn: true"),
        ("A7", {"products": [{"members": [{"expname": "img1_cal.fits", "exptype": "background"}]}]}, "no science members"),
    ],
)
def test_bad_association(data, tmp_path, row, content, needle):
    from tweakflow.inputs import resolve_inputs

    folder = tmp_path / "asn"
    folder.mkdir()
    shutil.copy(data["good"][0], folder / "img1_cal.fits")
    shutil.copy(data["good"][1], tmp_path / "outside_cal.fits")
    asn = _asn(folder, content)
    with pytest.raises(InputError) as exc:
        resolve_inputs(asn)
    assert str(exc.value).startswith(f"{asn}: ") and needle in str(exc.value)


def test_association_missing(tmp_path):
    """A1"""
    from tweakflow.inputs import resolve_inputs

    p = str(tmp_path / "nope_asn.json")
    with pytest.raises(InputError, match="association file does not exist"):
        resolve_inputs(p)


@pytest.mark.slow
def test_association_error_stops_before_any_job(data, tmp_path):
    """A2 end to end: the run stops at parse time naming the file."""
    asn = _asn(tmp_path, "not json at all")
    _dry_run_fails(tmp_path, {"inputs": asn}, f"tweakflow: {asn}: association is not valid JSON")


@pytest.mark.slow
def test_member_outside_allowed_when_asked(data, tmp_path):
    """A6: refused by default (above), accepted with allow_outside_asn: true."""
    folder = tmp_path / "asn"
    folder.mkdir()
    shutil.copy(data["good"][0], folder / "img1_cal.fits")
    shutil.copy(data["good"][1], tmp_path / "outside_cal.fits")
    asn = _asn(folder, _members("img1_cal.fits", "../outside_cal.fits"))
    proc = run_workflow(tmp_path, {"output_dir": "out", "inputs": asn, "allow_outside_asn": True}, "-n")
    assert "outside_cal.fits" in proc.stdout  # planned as an input of the run


# ---------------------------------------------------------------------------
# M: input images (found by the image's job, or by the gather step)
# ---------------------------------------------------------------------------


def _detect(image, tmp_path, **kw):
    from tweakflow.params import DEFAULT_DETECTION_PARS
    from tweakflow.steps import detect_step

    stem = os.path.basename(image).replace("_cal.fits", "")
    cat, sc = str(tmp_path / f"{stem}_cat.ecsv"), str(tmp_path / f"{stem}_meta.json")
    detect_step(image, cat, sc, detection=dict(DEFAULT_DETECTION_PARS), **kw)
    return cat, sc


@pytest.mark.parametrize(
    "row,name,needle",
    [
        ("M1", "text", "not a FITS file"),
        ("M1", "empty", "empty file"),
        ("M2", "truncated", "truncated file: "),
        ("M3", "nosci", "no SCI image extension"),
    ],
)
def test_unreadable_image_fails_its_detect_job(data, tmp_path, row, name, needle):
    with pytest.raises(InputError) as exc:
        _detect(data[name], tmp_path)
    assert str(exc.value).startswith(data[name] + ": ") and needle in str(exc.value)
    assert not os.listdir(tmp_path), "a failed job leaves no output"


@pytest.mark.parametrize(
    "row,name,needle",
    [
        ("M4", "nowcs", "no WCS (meta.wcs is missing"),
        ("M5", "noncelestial", "meta.wcs is not celestial"),
        ("M6", "badasdf", "corrupt"),
    ],
)
def test_bad_wcs_fails_the_align_job(data, tmp_path, row, name, needle):
    """The per-image job copies the ASDF tree unparsed; the gather step finds the problem."""
    from tweakflow.steps import align_step

    cats, scs = zip(_detect(data["good"][1], tmp_path), _detect(data[name], tmp_path))
    out = tmp_path / "relative"
    with pytest.raises(InputError) as exc:
        align_step(list(cats), list(scs), str(out / "solutions.ecsv"), [str(out / "a.asdf"), str(out / "b.asdf")], relative={})
    assert str(exc.value).startswith(os.path.abspath(data[name]) + ": ") and needle in str(exc.value)
    assert not out.exists() or not os.listdir(out)


@pytest.mark.parametrize("name", ["nowcs", "truncated"])
def test_skip_mode_leaves_the_image_out(data, tmp_path, name):
    """M8 (unit): on_bad_input: skip -> a FAILED row, the others go through the
    alignment (whether they pass its quality gates on these small images does
    not matter here; test_resume checks that they are aligned), apply_wcs fails for it."""
    from tweakflow.catalogs import read_table
    from tweakflow.io import read_sidecar
    from tweakflow.steps import align_step, apply_step

    cats, scs = zip(*[_detect(p, tmp_path, on_bad_input="skip") for p in (*data["good"], data[name])])
    out = tmp_path / "relative"
    wcs_out = [str(out / f"{k}_wcs.asdf") for k in range(3)]
    align_step(list(cats), list(scs), str(out / "solutions.ecsv"), wcs_out, relative={"minobj": 5}, on_bad_input="skip")
    tab = read_table(str(out / "solutions.ecsv"))
    assert "FAILED" not in list(tab["status"][:2]) and tab["n_sources"][0] > 0, tab
    assert tab["status"][2] == "FAILED" and tab["reason"][2].startswith("unreadable input: ")
    assert data[name] in tab["reason"][2] or os.path.abspath(data[name]) in tab["reason"][2]
    assert read_sidecar(wcs_out[2])["wcs"] is None
    with pytest.raises(InputError, match="no output written: unreadable input") as exc:
        apply_step(data[name], wcs_out[2], str(tmp_path / "x_tweakreg.fits"))
    assert str(exc.value).startswith(data[name])
    assert not (tmp_path / "x_tweakreg.fits").exists()


@pytest.mark.parametrize("name", ["nowcs", "truncated"])
def test_skip_mode_leaves_the_image_out_of_the_global_solve(data, tmp_path, name):
    """relative_solver: global with on_bad_input: skip: the image is in no pair, its
    WCS sidecar says why, and its apply_wcs job fails with that reason."""
    from tweakflow.params import ABSOLUTE_PARS, RELATIVE_PARS
    from tweakflow.steps import apply_step, global_solve_step, global_wcs_step, match_pairs_step, overlap_pairs_step

    # the bad image first: the match tables index images.json, which lists it
    cats, scs = zip(*[_detect(p, tmp_path, on_bad_input="skip") for p in (data[name], *data["good"])])
    w = tmp_path / "global"
    w.mkdir()
    overlap_pairs_step(list(scs), list(cats), str(w / "pairs.ecsv"), str(w / "images.json"), n_batches=1, on_bad_input="skip")
    match_pairs_step(str(w / "pairs.ecsv"), str(w / "images.json"), 0, str(w / "b0.ecsv"), str(w / "p0.ecsv"),
                     relative=dict(RELATIVE_PARS, minobj=5), absolute=dict(ABSOLUTE_PARS))
    global_solve_step(str(w / "pairs.ecsv"), str(w / "images.json"), [str(w / "b0.ecsv")], [str(w / "p0.ecsv")], str(w / "sol.ecsv"),
                      str(w / "corr.ecsv"), str(w / "psum.ecsv"), str(w / "m.ecsv"), str(w / "att.ecsv"), relative=dict(RELATIVE_PARS))
    sol = Table.read(w / "sol.ecsv")
    assert sol["status"][0] == "FAILED" and sol["reason"][0].startswith("unreadable input: ")
    assert "FAILED" not in list(sol["status"][1:]) and len(Table.read(w / "m.ecsv")) == len(Table.read(w / "b0.ecsv"))
    global_wcs_step(scs[0], str(w / "corr.ecsv"), str(w / "bad_wcs.asdf"), on_bad_input="skip")
    with pytest.raises(InputError, match="no output written") as exc:
        apply_step(data[name], str(w / "bad_wcs.asdf"), str(tmp_path / "x_tweakreg.fits"))
    assert str(exc.value).startswith(data[name])


@pytest.mark.parametrize(
    "row,name,reason",
    [("M7", "allnan", "all pixels are masked"), ("M7", "allzero", "image is constant")],
)
def test_blank_image_gives_empty_catalog(data, tmp_path, caplog, row, name, reason):
    """Not an error: an empty catalog, a logged reason, SKIPPED in the summary."""
    import logging

    with caplog.at_level(logging.WARNING, logger="tweakflow"):
        cat, _ = _detect(data[name], tmp_path)
    assert len(Table.read(cat, format="ascii.ecsv")) == 0
    assert any(data[name] in r.getMessage() and reason in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.slow
def test_failed_job_end_to_end(data, tmp_path):
    """M1-M3 through Snakemake: the image's job fails with one line naming the
    rule, the file, the problem and the job's log (the concise console); no
    stack, no job block; exit status != 0."""
    inputs = [data["good"][1], data["truncated"]]
    proc = run_workflow(tmp_path, {"output_dir": "out", "inputs": inputs}, "--keep-going", check=False, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if data["truncated"] in ln and "astropy" not in ln]
    assert len(lines) == 1, proc.stdout[-3000:]
    assert lines[0].startswith(f"error: detect_sources: {data['truncated']}: truncated file"), lines[0]
    assert lines[0].endswith(".log)") and "(log: out/logs/detect_sources/" in lines[0]
    for noise in ("Traceback", 'File "', "Error in rule", "RuleException", "Select jobs", "Shutting down"):
        assert noise not in proc.stdout, noise
    assert len(proc.stdout.splitlines()) < 20, proc.stdout
    assert not (tmp_path / "out" / "work" / "catalogs" / "truncated_cat.ecsv").exists()
    assert (tmp_path / "out" / "work" / "catalogs" / os.path.basename(data["good"][1]).replace("_cal.fits", "_cat.ecsv")).exists()


def test_run_rule_gives_one_line_and_status_1(data, tmp_path, capsys):
    """How every job reports a TweakflowError: one line on stderr and in the log, exit status 1."""
    from tweakflow.params import DEFAULT_DETECTION_PARS
    from tweakflow.steps import detect_step, run_rule

    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as exc:
        run_rule(
            detect_step, str(log), image=data["truncated"], catalog_out=str(tmp_path / "c.ecsv"),
            sidecar_out=str(tmp_path / "s.json"), detection=dict(DEFAULT_DETECTION_PARS),
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ERROR tweakflow: " + data["truncated"] in err[0]
    assert data["truncated"] in log.read_text()


# ---------------------------------------------------------------------------
# K: source catalogs (custom catalogs)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row,content,needle",
    [
        ("K2", "# a catalog\nra dec flux\n1.0 2.0 3.0\n", "needs a column 'x' or 'xcentroid' (any case) for x"),
        ("K3", "x y\n1.0 2.0\nabc 4.0\n", "column 'x' of the source catalog is not numeric"),
        ("K3", "x y\n1.0 2.0\nnan 4.0\n", "column 'x' of the source catalog has non-finite values"),
    ],
)
def test_bad_custom_catalog(tmp_path, row, content, needle):
    from tweakflow.catalogs import read_source_catalog

    p = tmp_path / "my_cat.txt"
    p.write_text(content)
    with pytest.raises(InputError) as exc:
        read_source_catalog(str(p))
    assert str(exc.value).startswith(f"{p}: ") and needle in str(exc.value)


def test_catfile_wrong_number_of_columns(tmp_path):
    """K4: a catfile line with more than two columns."""
    from tweakflow.catalogs import parse_catfile

    cf = tmp_path / "catfile.txt"
    cf.write_text("# image catalog\nimg1_cal.fits img1.ecsv\nimg2_cal.fits img2.ecsv extra\n")
    with pytest.raises(InputError, match="line 3: a catfile line has two columns") as exc:
        parse_catfile(str(cf))
    assert str(exc.value).startswith(str(cf))


def test_catfile_missing(tmp_path):
    """K6"""
    from tweakflow.catalogs import parse_catfile

    with pytest.raises(InputError, match="catfile does not exist"):
        parse_catfile(str(tmp_path / "catfile.txt"))


@pytest.mark.slow
def test_catfile_names_a_missing_catalog_stops_before_any_job(data, tmp_path):
    """K5: the catalog a catfile gives an image does not exist."""
    cf = tmp_path / "catfile.txt"
    name = os.path.basename(data["good"][0])
    cf.write_text(f"{name} {name.replace('_cal.fits', '_cat.ecsv')}\n")
    _dry_run_fails(
        tmp_path,
        {"inputs": data["good"], "tweakreg": {"use_custom_catalogs": True, "catfile": str(cf)}},
        "tweakreg.use_custom_catalogs",
        f"custom catalog of {data['good'][0]} (given by catfile '{cf}') does not exist",
    )


def test_custom_catalog_missing_fails_the_job(data, tmp_path):
    """K1: the detect job of that image fails naming the catalog."""
    missing = str(tmp_path / "gone.ecsv")
    with pytest.raises(InputError, match="source catalog does not exist") as exc:
        _detect(data["good"][0], tmp_path, custom_catalog=missing)
    assert str(exc.value).startswith(missing)


# ---------------------------------------------------------------------------
# R: reference catalog (parse time)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_catalog_without_radec_stops_before_any_job(data, tmp_path):
    """R1"""
    ref = tmp_path / "my_ref.ecsv"
    ref.write_text("x y\n1 2\n")
    _dry_run_fails(tmp_path, {"inputs": data["good"], "tweakreg": {"abs_refcat": str(ref)}}, "tweakreg.abs_refcat", str(ref), "RA")


def test_reference_catalog_missing(tmp_path):
    """R2: the same parse-time check (common.smk calls read_reference_catalog)."""
    from tweakflow.errors import RefcatError
    from tweakflow.refcat import read_reference_catalog

    ref = str(tmp_path / "gone.ecsv")
    with pytest.raises(RefcatError, match="file not found") as exc:
        read_reference_catalog(ref)
    assert ref in str(exc.value)


# ---------------------------------------------------------------------------
# O: outputs
# ---------------------------------------------------------------------------


def test_write_failure_names_the_output_and_leaves_nothing(tmp_path):
    """O1: a full disk (ENOSPC while writing) -> OutputError naming the file; no file, no temporary left."""
    import errno

    from tweakflow.atomic import atomic_output

    target = tmp_path / "cats" / "x_cat.ecsv"
    def write_half_then_fill_the_disk():
        with atomic_output(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("# half a catalog\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="No space left on device") as exc:
        write_half_then_fill_the_disk()
    assert str(exc.value).startswith(str(target))
    assert isinstance(exc.value, TweakflowError)
    assert os.listdir(tmp_path / "cats") == []


def test_unwritable_output_folder(tmp_path):
    """O1: an output folder that cannot be created (a file is in the way)."""
    from tweakflow.atomic import atomic_output

    (tmp_path / "blocked").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="cannot be written"):
        with atomic_output(str(tmp_path / "blocked" / "x.ecsv")):
            pass


def test_every_writer_is_atomic():
    """O2: every writer in the package goes through atomic_output (a static check)."""
    import re

    pkg = os.path.join(ROOT, "tweakflow")
    writer = re.compile(r"\.(write_to|writeto|save|savefig|write_text|write_bytes)\(|json\.dump\(|\.write\(tmp|open\([^)]*['\"]w")
    for name in sorted(os.listdir(pkg)):
        if not name.endswith(".py"):
            continue
        lines = open(os.path.join(pkg, name), encoding="utf-8").read().splitlines()
        for k, line in enumerate(lines):
            if writer.search(line) and not line.lstrip().startswith("#"):
                context = "\n".join(lines[max(0, k - 3) : k + 1])
                if "BytesIO()" in context:  # serialised in memory, not a file
                    continue
                if "os.fdopen(" in line:  # a pipe's end (tweakflow.jobhost), not a file
                    continue
                assert "atomic_output" in context, f"{name}:{k + 1}: writes without atomic_output:\n{context}"
