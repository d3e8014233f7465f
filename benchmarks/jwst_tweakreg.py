"""Run the JWST pipeline's TweakRegStep on an association (benchmark baseline).

Executed with the benchmark's own jwst environment (benchmarks/jwst_env.sh),
never with the project's: jwst is not a dependency of tweakflow.

    .jwst-venv/bin/python jwst_tweakreg.py ASN OUTDIR [ABS_REFCAT]

Prints one JSON line with the import and step times (seconds).
"""

import json
import os
import sys
import time

# Offline: no CRDS parameter reference files, no server.
os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "True")
os.environ.setdefault("CRDS_SERVER_URL", "http://127.0.0.1:9")

t0 = time.perf_counter()
from jwst.tweakreg import TweakRegStep  # noqa: E402

t1 = time.perf_counter()
asn, outdir = sys.argv[1], sys.argv[2]
refcat = sys.argv[3] if len(sys.argv) > 3 else ""
os.makedirs(outdir, exist_ok=True)
TweakRegStep.call(asn, abs_refcat=refcat, save_results=True, output_dir=outdir)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "step_s": t2 - t1}))
