"""Source catalogs: user catalogs, the custom-catalog precedence, published catalogs."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from astropy.table import Table

from tweakflow.catalogs import (
    catalog_extension,
    parse_catfile,
    published_catalog_name,
    published_catalog_names,
    read_source_catalog,
    resolve_custom_catalogs,
    write_catalog,
    writer_format,
)
from tweakflow.errors import ConfigError, InputError
from workflow_runner import run_workflow

# ---------------------------------------------------------------------------
# reading and writing catalogs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("x", "y"), ("xcentroid", "ycentroid"), ("x_centroid", "y_centroid")])
@pytest.mark.parametrize("fmt,ext", [("ascii.ecsv", "ecsv"), ("fits", "fits"), ("ascii.commented_header", "txt")])
def test_read_source_catalog_columns_and_formats(tmp_path, names, fmt, ext):
    t = Table({names[0]: [1.0, 2.5], names[1]: [3.0, 4.5], "weight": [1.0, 0.5], "mag": [20.0, 21.0]})
    path = tmp_path / f"cat.{ext}"
    t.write(path, format=fmt)
    cat = read_source_catalog(str(path))
    assert list(cat["x"]) == [1.0, 2.5] and list(cat["y"]) == [3.0, 4.5]
    assert list(cat["weight"]) == [1.0, 0.5]  # carried into the fit
    assert "mag" in cat.colnames


@pytest.mark.parametrize("names", [("x", "ycentroid"), ("xcentroid", "y"), ("x_centroid", "y"), ("X", "YCENTROID"), ("Xcentroid", "Y")])
def test_each_axis_may_be_named_either_way(tmp_path, names):
    """x/xcentroid and y/ycentroid are chosen per axis, as the JWST step does, and in any case."""
    path = tmp_path / "cat.ecsv"
    Table({names[0]: [1.0, 2.5], names[1]: [3.0, 4.5], "flux": [5.0, 6.0]}).write(path)
    cat = read_source_catalog(str(path))
    assert list(cat["x"]) == [1.0, 2.5] and list(cat["y"]) == [3.0, 4.5]
    assert cat.colnames == ["x", "y", "flux"]


def test_both_names_of_an_axis_take_the_jwst_choice(tmp_path):
    """x before xcentroid, a name as written before another case: what the JWST step accepts, it reads alike."""
    path = tmp_path / "cat.ecsv"
    Table({"xcentroid": [9.0], "x": [1.0], "X": [7.0], "YCENTROID": [6.0], "ycentroid": [2.0]}).write(path)
    cat = read_source_catalog(str(path))
    assert cat["x"][0] == 1.0 and cat["y"][0] == 2.0
    assert {"xcentroid", "X", "YCENTROID"} <= set(cat.colnames)


@pytest.mark.parametrize(
    "table,needle",
    [
        (Table({"ra": [1.0], "dec": [2.0]}), "needs a column 'x' or 'xcentroid' \\(any case\\) for x"),
        (Table({"x": [1.0], "dec": [2.0]}), "needs a column 'y' or 'ycentroid' \\(any case\\) for y"),
        (Table({"Xcentroid": [1.0], "XCENTROID": [1.0], "y": [2.0]}), "columns \\['Xcentroid', 'XCENTROID'\\] are one name in different case"),
        (Table({"x": ["a"], "y": ["b"]}), "not numeric"),
        (Table({"x": [np.nan], "y": [1.0]}), "non-finite"),
    ],
)
def test_read_source_catalog_errors_name_the_file(tmp_path, table, needle):
    path = tmp_path / "bad.ecsv"
    table.write(path)
    with pytest.raises(InputError, match=needle) as err:
        read_source_catalog(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        read_source_catalog(str(tmp_path / "missing.ecsv"))


@pytest.mark.parametrize("fmt,ext", [("ecsv", "ecsv"), ("ascii.ecsv", "ecsv"), ("fits", "fits"), ("ascii.csv", "csv"), ("votable", "votable")])
def test_write_catalog_in_any_astropy_format(tmp_path, fmt, ext):
    t = Table({"id": [1, 2], "x": [1.0, 2.0], "y": [3.0, 4.0], "flux": [10.0, 20.0]})
    assert catalog_extension(fmt) == ext
    path = tmp_path / f"c_cat.{ext}"
    write_catalog(t, str(path), fmt)
    back = Table.read(path, format=writer_format(fmt))
    assert list(back["x"]) == [1.0, 2.0]


@pytest.mark.parametrize(
    "filename,fmt,expected",
    [
        ("jw01_nrca1_cal.fits", "ecsv", "jw01_nrca1_cal_cat.ecsv"),
        ("jw01_nrca1_cal.fits", "fits", "jw01_nrca1_cal_cat.fits"),
        ("ibx01_flc.fits.gz", "ascii.csv", "ibx01_flc_cat.csv"),
        ("image.fit", "ecsv", "image_cat.ecsv"),
    ],
)
def test_published_catalog_name_is_the_steps(filename, fmt, expected):
    """The JWST step writes <meta.filename without .fits>_cat.<format>, keeping _cal."""
    assert published_catalog_name(filename, fmt) == expected


def test_published_catalog_names_refuse_two_alike():
    images = [
        {"stem": "a", "path": "/d1/a.fits", "filename": "x_cal.fits"},
        {"stem": "b", "path": "/d2/b.fits", "filename": "x_cal.fits"},
    ]
    assert published_catalog_names(images[:1], "ecsv") == {"x_cal_cat.ecsv": "a"}
    with pytest.raises(ConfigError, match=r"tweakreg.save_catalogs: '/d1/a.fits' and '/d2/b.fits' would both publish their catalog as 'x_cal_cat.ecsv'"):
        published_catalog_names(images, "ecsv")


@pytest.mark.slow
def test_workflow_publishes_catalogs_under_the_steps_names(tmp_path):
    """save_catalogs plans {output_dir}/X_cal_cat.<ext> for every X_cal.fits (dry run of the demo)."""
    from tweakflow.synthetic import SyntheticConfig, exposure_filenames

    config = {"output_dir": "out", "tweakreg": {"save_catalogs": True, "catalog_format": "ascii.csv"}}
    stdout = run_workflow(tmp_path, config, "-n", timeout=120).stdout
    planned = set(re.findall(r"output: out/([^/\s,]+_cat\.csv)", stdout))
    names = exposure_filenames(SyntheticConfig.from_dict({}))
    assert names and all(n.endswith("_cal.fits") for n in names)
    assert planned == {n.replace(".fits", "_cat.csv") for n in names}


def test_unknown_catalog_format_names_the_key():
    with pytest.raises(ConfigError, match=r"tweakreg\.catalog_format"):
        writer_format("no-such-format")


# ---------------------------------------------------------------------------
# catfile
# ---------------------------------------------------------------------------


def test_parse_catfile(tmp_path):
    sub = tmp_path / "lists"
    sub.mkdir()
    catfile = sub / "catfile.txt"
    catfile.write_text("# image  catalog\n\na_cal.fits   cats/a.ecsv\n  b_cal.fits\n\tc_cal.fits ../c.ecsv  \n")
    got = parse_catfile(str(catfile))
    assert got == {
        "a_cal.fits": str(sub / "cats" / "a.ecsv"),  # relative to the catfile's folder
        "b_cal.fits": "",  # empty second column: detect
        "c_cal.fits": str(tmp_path / "c.ecsv"),
    }


def test_parse_catfile_errors(tmp_path):
    with pytest.raises(InputError, match="catfile does not exist"):
        parse_catfile(str(tmp_path / "nope.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("a_cal.fits a.ecsv\nb_cal.fits b.ecsv extra\n")
    with pytest.raises(InputError, match=r"line 2: .*two columns"):
        parse_catfile(str(bad))


# ---------------------------------------------------------------------------
# precedence: catfile > association tweakreg_catalog > meta.tweakreg_catalog
# ---------------------------------------------------------------------------


@pytest.fixture
def images_with_meta(tmp_path, small_dataset):
    """Four images in tmp/data; image 0 has meta.tweakreg_catalog = 'cats/meta0.ecsv'.

    Every catalog the tests may name exists (in tmp/data/cats and tmp/lists/cats).
    """
    from stdatamodels.jwst.datamodels import ImageModel

    data = tmp_path / "data"
    data.mkdir()
    images = []
    for _k, src in enumerate(small_dataset["images"]):
        dst = data / os.path.basename(src)
        shutil.copy(src, dst)
        stem = os.path.basename(src).replace("_cal.fits", "")
        images.append({"stem": stem, "path": str(dst), "group_id": None, "tweakreg_catalog": None})
    with ImageModel(images[0]["path"]) as m:
        m.meta.tweakreg_catalog = "cats/meta0.ecsv"
        m.save(images[0]["path"])
    t = Table({"x": [1.0], "y": [2.0]})
    for folder in (data / "cats", tmp_path / "lists" / "cats"):
        folder.mkdir(parents=True)
        for name in ("meta0", "asn0", "asn1", "cf0", "cf1"):
            t.write(folder / f"{name}.ecsv")
    return tmp_path, images


def _name(images, k):
    return os.path.basename(images[k]["path"])


def test_meta_tweakreg_catalog_relative_to_the_image(images_with_meta):
    tmp, images = images_with_meta
    cats, notes = resolve_custom_catalogs(images)
    assert cats[images[0]["stem"]] == str(tmp / "data" / "cats" / "meta0.ecsv")
    assert all(cats[it["stem"]] is None for it in images[1:])  # no catalog anywhere: detect
    assert notes == []


def test_association_overrides_meta(images_with_meta):
    tmp, images = images_with_meta
    images[0]["tweakreg_catalog"] = str(tmp / "data" / "cats" / "asn0.ecsv")  # as read_association resolves it
    images[1]["tweakreg_catalog"] = str(tmp / "data" / "cats" / "asn1.ecsv")
    cats, _ = resolve_custom_catalogs(images)
    assert cats[images[0]["stem"]].endswith("asn0.ecsv")
    assert cats[images[1]["stem"]].endswith("asn1.ecsv")
    # an empty tweakreg_catalog in the association means "detect", even over meta
    images[0]["tweakreg_catalog"] = ""
    cats, _ = resolve_custom_catalogs(images)
    assert cats[images[0]["stem"]] is None


def test_association_catalogs_are_relative_to_the_asn(tmp_path, small_dataset):
    from tweakflow.inputs import read_association

    for src in small_dataset["images"]:
        shutil.copy(src, tmp_path)
    names = [os.path.basename(p) for p in small_dataset["images"]]
    asn = json.load(open(small_dataset["asn"]))
    members = asn["products"][0]["members"]
    members[0]["tweakreg_catalog"] = "cats/a.ecsv"
    members[1]["tweakreg_catalog"] = ""
    with open(tmp_path / "asn.json", "w") as f:
        json.dump(asn, f)
    got = read_association(str(tmp_path / "asn.json"))
    assert [os.path.basename(m["path"]) for m in got] == names
    assert got[0]["tweakreg_catalog"] == str(tmp_path / "cats" / "a.ecsv")
    assert got[1]["tweakreg_catalog"] == "" and got[2]["tweakreg_catalog"] is None


def test_catfile_overrides_association_and_meta(images_with_meta):
    tmp, images = images_with_meta
    for it in images:
        it["tweakreg_catalog"] = str(tmp / "data" / "cats" / "asn0.ecsv")  # ignored altogether
    catfile = tmp / "lists" / "catfile.txt"
    catfile.write_text(f"{_name(images, 1)} cats/cf1.ecsv\n{_name(images, 2)}\n")
    cats, notes = resolve_custom_catalogs(images, catfile=str(catfile))
    assert cats[images[1]["stem"]] == str(tmp / "lists" / "cats" / "cf1.ecsv")  # relative to the catfile
    assert cats[images[2]["stem"]] is None  # listed without a catalog: detect
    # not listed: the association is ignored, meta.tweakreg_catalog is used
    assert cats[images[0]["stem"]] == str(tmp / "data" / "cats" / "meta0.ecsv")
    assert cats[images[3]["stem"]] is None
    assert notes == []


def test_catfile_entry_overrides_meta(images_with_meta):
    tmp, images = images_with_meta
    catfile = tmp / "lists" / "catfile.txt"
    catfile.write_text(f"{_name(images, 0)}\n")
    cats, _ = resolve_custom_catalogs(images, catfile=str(catfile))
    assert cats[images[0]["stem"]] is None
    catfile.write_text(f"{_name(images, 0)} cats/cf0.ecsv\nnot_an_input_cal.fits cats/cf1.ecsv\n")
    cats, notes = resolve_custom_catalogs(images, catfile=str(catfile))
    assert cats[images[0]["stem"]].endswith(os.path.join("lists", "cats", "cf0.ecsv"))
    assert len(notes) == 1 and "not_an_input_cal.fits" in notes[0]


def test_catfile_without_catalogs_turns_custom_catalogs_off(images_with_meta):
    tmp, images = images_with_meta
    images[1]["tweakreg_catalog"] = str(tmp / "data" / "cats" / "asn1.ecsv")
    catfile = tmp / "lists" / "empty.txt"
    catfile.write_text("# nothing here\n\n")
    cats, notes = resolve_custom_catalogs(images, catfile=str(catfile))
    assert all(v is None for v in cats.values())  # not even meta or the association
    assert len(notes) == 1 and "turned off" in notes[0]


def test_missing_custom_catalog_names_where_it_was_given(images_with_meta):
    tmp, images = images_with_meta
    catfile = tmp / "lists" / "catfile.txt"
    catfile.write_text(f"{_name(images, 1)} cats/missing.ecsv\n")
    with pytest.raises(InputError, match=r"missing\.ecsv.*catfile"):
        resolve_custom_catalogs(images, catfile=str(catfile))
    images[2]["tweakreg_catalog"] = str(tmp / "gone.ecsv")
    with pytest.raises(InputError, match=r"gone\.ecsv.*association"):
        resolve_custom_catalogs(images)
    os.remove(tmp / "data" / "cats" / "meta0.ecsv")
    images[2]["tweakreg_catalog"] = None
    with pytest.raises(InputError, match=r"meta0\.ecsv.*meta\.tweakreg_catalog"):
        resolve_custom_catalogs(images)


# ---------------------------------------------------------------------------
# in the workflow: catalog files are DAG inputs, published catalogs
# ---------------------------------------------------------------------------


def _planned_jobs(stdout):
    """{rule: count} from the job-stats table of a dry run."""
    jobs = {}
    for line in stdout.splitlines():
        m = re.match(r"^([a-z_]+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


@pytest.mark.slow
def test_workflow_custom_catalogs_and_published_catalogs(tmp_path, small_dataset):
    from stdatamodels.jwst.datamodels import ImageModel

    from tweakflow.detection import detect_sources
    from tweakflow.io import read_image

    data = tmp_path / "data"
    data.mkdir()
    for src in small_dataset["images"]:
        shutil.copy(src, data)
    names = sorted(os.path.basename(p) for p in small_dataset["images"])
    stems = [n.replace("_cal.fits", "") for n in names]
    # a user catalog for image 0 (xcentroid/ycentroid, with weights), via a catfile
    (data / "cats").mkdir()
    im = read_image(str(data / names[0]), with_wcs=False)
    cat, _ = detect_sources(im.data, im.dq)
    user = Table({"xcentroid": cat["x"], "ycentroid": cat["y"], "weight": np.ones(len(cat))})
    user.write(data / "cats" / "user0.ecsv")
    (data / "catfile.txt").write_text(f"{names[0]} cats/user0.ecsv\n{names[1]}\n")
    config = {
        "inputs": [str(data / n) for n in names],
        "output_dir": "out",
        "tweakreg": {
            "use_custom_catalogs": True,
            "catfile": str(data / "catfile.txt"),
            "save_catalogs": True,
            "catalog_format": "fits",
        },
    }
    run_workflow(tmp_path / "run", config)
    out = tmp_path / "run" / "out"
    summary = Table.read(out / "tweakreg_summary.ecsv")
    assert set(summary["status"]) == {"COMPLETE"}
    assert "custom catalog" in (out / "logs" / "detect_sources" / f"{stems[0]}.log").read_text()
    # save_catalogs publishes the detected catalogs only (ignored for user catalogs),
    # named as the step names them: X_cal.fits -> X_cal_cat.fits
    assert not (out / names[0].replace(".fits", "_cat.fits")).exists()
    moved = []
    for name in names[1:]:
        pub = Table.read(out / name.replace(".fits", "_cat.fits"))
        assert len(pub) > 20 and {"x", "y", "flux", "RA", "DEC"} <= set(pub.colnames)
        # RA/DEC through the corrected WCS (the output's), not the input one the workflow's ra/dec use
        assert not {"ra", "dec"} & set(pub.colnames)
        work = Table.read(out / "work" / "catalogs" / name.replace("_cal.fits", "_cat.ecsv"))
        with ImageModel(str(out / name.replace("_cal.fits", "_tweakreg.fits"))) as m:
            ra, dec = m.meta.wcs(np.asarray(pub["x"], float), np.asarray(pub["y"], float))
        assert np.max(np.hypot((pub["RA"] - ra) * np.cos(np.deg2rad(dec)), pub["DEC"] - dec)) * 3.6e6 < 1e-3  # mas
        moved.append(np.median(np.hypot((pub["RA"] - work["ra"]) * np.cos(np.deg2rad(dec)), pub["DEC"] - work["dec"])) * 3.6e6)
        assert pub.meta["tweakreg_status"] == "COMPLETE"
    assert max(moved) > 10.0, moved  # the corrections of the synthetic pointing errors (mas; the reference image's is 0)

    # editing the user catalog re-runs that image's detection and what follows
    user[:-1].write(data / "cats" / "user0.ecsv", overwrite=True)
    later = os.path.getmtime(out / "tweakreg_summary.ecsv") + 10
    os.utime(data / "cats" / "user0.ecsv", (later, later))
    jobs = _planned_jobs(run_workflow(tmp_path / "run", config, "-n").stdout)
    assert jobs.get("detect_sources") == 1 and jobs.get("align") == 1 and jobs.get("apply_wcs") == 4
    assert jobs.get("publish_catalog") == 3  # their RA/DEC are through the new alignment
    user.write(data / "cats" / "user0.ecsv", overwrite=True)  # back as it was
    os.utime(data / "cats" / "user0.ecsv", (later - 1e6, later - 1e6))

    # a detection parameter re-runs only the images that detect sources
    changed = {**config, "tweakreg": {**config["tweakreg"], "snr_threshold": 8.0}}
    jobs = _planned_jobs(run_workflow(tmp_path / "run", changed, "-n").stdout)
    assert jobs.get("detect_sources") == 3 and jobs.get("publish_catalog") == 3

    # the published format only re-runs the publishing (and the report's
    # configuration page, qa_tables, which shows every configuration value)
    changed = {**config, "tweakreg": {**config["tweakreg"], "catalog_format": "ascii.csv"}}
    jobs = _planned_jobs(run_workflow(tmp_path / "run", changed, "-n").stdout)
    jobs.pop("qa_tables", None)
    assert jobs == {"all": 1, "publish_catalog": 3}


@pytest.mark.slow
def test_workflow_rejects_missing_custom_catalog_before_any_job(tmp_path, small_dataset):
    (tmp_path / "catfile.txt").write_text(f"{os.path.basename(small_dataset['images'][0])} nope.ecsv\n")
    config = {
        "inputs": small_dataset["images"],
        "output_dir": "out",
        "tweakreg": {"use_custom_catalogs": True, "catfile": str(tmp_path / "catfile.txt")},
    }
    proc = run_workflow(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "nope.ecsv" in proc.stdout and "does not exist" in proc.stdout
