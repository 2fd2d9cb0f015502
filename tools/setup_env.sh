#!/usr/bin/env bash
# Set up what the book needs, doing only what is missing or out of date:
#   1. a Python virtual environment at $1 (default .venv), created with $PYTHON (default python3);
#   2. requirements.txt installed into it, again whenever the file changes (the sha256 of the
#      installed requirements is kept in <venv>/.ddm-requirements.sha256);
#   3. MathJax 3 from the npm registry into node_modules/ (package-lock.json pins it), which the
#      book serves itself instead of loading it from a CDN.
# Called by `make setup` (and so by `make book` and `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  command -v "$python" >/dev/null || { echo "error: $python not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  "$python" - <<'PY' || exit 1
import sys
if sys.version_info < (3, 10):
    sys.exit(f"error: Python >= 3.10 is needed (3.11 is what the pins were tested with), "
             f"not {sys.version.split()[0]}; set PYTHON=/path/to/python3.11")
PY
  echo "== creating the virtual environment $venv ($("$python" --version))"
  "$python" -m venv "$venv"
fi

stamp="$venv/.ddm-requirements.sha256"
want=$("$venv/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' requirements.txt)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing requirements.txt into $venv (torch is several GB: a few minutes the first time)"
  start=$SECONDS
  "$venv/bin/python" -m pip install --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
  echo "== requirements installed in $((SECONDS - start)) s"
fi

if [ ! -f node_modules/mathjax/es5/tex-chtml.js ]; then
  command -v npm >/dev/null || { echo "error: npm is needed to fetch MathJax (Debian: apt-get install npm)" >&2; exit 1; }
  echo "== fetching MathJax from the npm registry (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
