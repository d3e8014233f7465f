#!/usr/bin/env bash
# Create the benchmark's own environment with the JWST pipeline installed.
#
# jwst is NOT a dependency of tweakflow: it is only used by
# benchmarks/detection.py as the reference implementation to time and to
# compare accuracy against. The environment lives in benchmarks/.jwst-venv
# (git-ignored). Usage:
#
#     bash benchmarks/jwst_env.sh            # create / update
#     PYTHON=python3.12 bash benchmarks/jwst_env.sh
#
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${JWST_VENV:-$here/.jwst-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "jwst${JWST_VERSION:+==$JWST_VERSION}"
"$venv/bin/python" -c "import jwst; print('jwst', jwst.__version__, 'in', '$venv')"
