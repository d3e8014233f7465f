"""Record the metadata jwst's TweakRegStep writes into its products (a test fixture).

tests/test_products_meta.py compares tweakflow's products with what the
JWST pipeline writes on the same inputs, field by field. jwst is not a
dependency of tweakflow: the values are recorded once, by this script, into
``tests/data/jwst3_tweakreg_meta.json``, and the test reads only that file.

Run it with the benchmark's jwst environment (``bash benchmarks/jwst_env.sh``
creates it), from the repository root, to re-record (after a jwst upgrade,
or when the test dataset changes)::

    benchmarks/.jwst-venv/bin/python benchmarks/record_jwst_meta.py
    benchmarks/.jwst-venv/bin/python benchmarks/record_jwst_meta.py --workdir /tmp/rec --output other.json

It writes the tests' small synthetic dataset (``SMALL`` of
tests/workflow_runner.py: 2 exposures x 2 NIRCam detectors of 1024 x 1024,
seed 7, with tweakflow's own generator, imported from this checkout; the
generator is deterministic, so the test regenerates the same images), runs
the step offline (no CRDS parameter files, no server) on its level-3
association with default parameters, with ``abs_refcat`` set to the
dataset's reference catalog, with ``sip_approx=False``, and on the list of
files instead of the association, and records for each product:

- ``changed``: every ``meta`` entry that differs from the input's (``meta.wcs``
  and the SIP coefficients ``meta.wcsinfo.[ab][p]_i_j`` only named), with its
  value;
- ``header``: the changed keywords of the PRIMARY and SCI headers;
- ``cal_logs``: the keys of the top-level ``cal_logs`` tree and the number of
  lines of its ``tweakreg`` entry (its lines are kept once for the
  relative and the absolute run);
- the corrected GWCS's name, frames and, when the step inserted a
  ``v2v3corr`` frame, the parameters of its ``v2v3 -> v2v3corr`` transform
  (with which the test rebuilds the step's WCS from the regenerated input
  and checks ``tweakflow.wcs_update.s_region`` on it).

For each input image it records its ``meta.wcsinfo`` pointing (to check that
the regenerated inputs are the recorded ones) and the ``S_REGION`` the
pipeline computes from its WCS (``stcal.alignment.util.compute_s_region_imaging``
as ``jwst.assign_wcs.util.update_s_region_imaging`` calls it).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile

# Offline: no CRDS parameter reference files, no server (as benchmarks/jwst_tweakreg.py).
os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "True")
os.environ.setdefault("CRDS_SERVER_URL", "http://127.0.0.1:9")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # tweakflow's generator, the tests' dataset and comparison

from product_meta import flat_meta, header_changes, meta_changes, plain  # noqa: E402

DEFAULT_OUTPUT = os.path.join(ROOT, "tests", "data", "jwst3_tweakreg_meta.json")

#: The runs: name -> (input: "asn" or "files", step parameters, keep the cal_logs lines).
RUNS = {
    "relative": ("asn", {}, True),
    "absolute": ("asn", {"abs_refcat": "data/refcat.ecsv"}, True),
    "sip_approx_false": ("asn", {"sip_approx": False}, False),
    "files": ("files", {}, False),
}


def record_inputs(paths):
    """Per input image: its pointing and the pipeline's S_REGION of its WCS."""
    from stcal.alignment.util import compute_s_region_imaging
    from stdatamodels.jwst.datamodels import ImageModel

    out = {}
    for p in paths:
        with ImageModel(p) as m:
            info = m.meta.wcsinfo
            out[os.path.basename(p)] = {
                "wcsinfo": {k: getattr(info, k) for k in ("ra_ref", "dec_ref", "roll_ref", "v2_ref", "v3_ref", "v3yangle", "vparity")},
                "shape": list(m.data.shape),
                "s_region": compute_s_region_imaging(m.meta.wcs, shape=m.data.shape, center=False),
            }
    return out


def record_product(inp, out):
    """What the step changed in one product."""
    from astropy.io import fits
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(inp) as a, ImageModel(out) as b:
        logs = plain(b.instance.get("cal_logs", {}))
        wcs = b.meta.wcs
        corr = None
        if "v2v3corr" in wcs.available_frames:
            corr = [float(v) for v in wcs.get_transform("v2v3", "v2v3corr").parameters]
        rec = {
            "product": os.path.basename(out),
            "changed": meta_changes(flat_meta(a), flat_meta(b)),
            "cal_logs_keys": sorted(logs),
            "cal_logs_tweakreg_lines": len(logs.get("tweakreg", [])),
            "wcs_name": wcs.name,
            "wcs_frames": list(wcs.available_frames),
            "v2v3corr_parameters": corr,
        }
    with fits.open(inp) as ha, fits.open(out) as hb:
        rec["header"] = {ext: header_changes(ha[ext].header, hb[ext].header) for ext in ("PRIMARY", "SCI")}
    return rec, logs.get("tweakreg", [])


def run_step(name, kind, params, keep_lines, paths):
    """Run TweakRegStep (the current directory holds ``data/``); its products by input name."""
    from jwst.tweakreg import TweakRegStep

    src = "data/asn.json" if kind == "asn" else [os.path.join("data", os.path.basename(p)) for p in paths]
    TweakRegStep.call(src, save_results=True, output_dir=name, **params)
    products, longest = {}, []
    for p in paths:
        base = os.path.basename(p)
        out = os.path.join(name, base.replace("_cal.fits", "_tweakregstep.fits"))
        products[base], lines = record_product(os.path.join("data", base), out)
        longest = lines if len(lines) > len(longest) else longest
    run = {"input": kind, "parameters": params, "products": products}
    if keep_lines:
        run["cal_logs_tweakreg"] = longest  # the longest: of the product written last
    return run


def versions():
    import gwcs
    import jwst
    import stcal
    import stdatamodels
    import tweakwcs

    return {"jwst": jwst.__version__, "stcal": stcal.__version__, "stdatamodels": stdatamodels.__version__, "gwcs": gwcs.__version__,
            "tweakwcs": tweakwcs.__version__, "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="where to write the dataset and the step's products (default: a temporary folder, removed)")
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="the JSON fixture (default: %(default)s)")
    args = ap.parse_args(argv)
    from tweakflow.synthetic import SyntheticConfig, make_dataset
    from workflow_runner import SMALL

    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="jwst_meta_"))
    os.makedirs(work, exist_ok=True)
    here = os.getcwd()
    try:
        os.chdir(work)  # relative paths only: nothing of this machine in the record
        data = make_dataset("data", SyntheticConfig.from_dict(SMALL))
        with open(data["asn"], encoding="utf-8") as f:
            asn = json.load(f)
        record = {
            "about": "What jwst's TweakRegStep writes into its products; recorded by benchmarks/record_jwst_meta.py (its docstring says how to re-record).",
            "versions": versions(),
            "dataset": SMALL,
            "association": {"file": "asn.json", "asn_pool": asn.get("asn_pool"), "asn_id": asn.get("asn_id")},
            "inputs": record_inputs(data["images"]),
            "runs": {name: run_step(name, kind, params, keep, data["images"]) for name, (kind, params, keep) in RUNS.items()},
        }
    finally:
        os.chdir(here)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
