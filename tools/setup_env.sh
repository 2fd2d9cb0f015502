#!/usr/bin/env bash
# Set up what the book needs, doing only what is missing or out of date:
#   1. a Python virtual environment at $1 (default .venv), created with $PYTHON (default python3);
#   2. requirements.lock installed into it with --require-hashes (every package pinned, every file
#      checked against the lock's sha256 hashes), again whenever the lock changes (the sha256 of
#      the installed lock is kept in <venv>/.ddm-lock.sha256). The lock is generated from
#      requirements.txt by pip-compile (the command is in its header; README, "Updating the lock");
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

if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "warning: $venv has Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'); requirements.lock was resolved for Python 3.11 on Linux x86_64" >&2
fi

stamp="$venv/.ddm-lock.sha256"
want=$("$venv/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' requirements.lock)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing requirements.lock into $venv (torch is several GB: a few minutes the first time)"
  start=$SECONDS
  "$venv/bin/python" -m pip install --disable-pip-version-check --require-hashes -r requirements.lock
  echo "$want" > "$stamp"
  echo "== requirements installed in $((SECONDS - start)) s"
fi

if [ ! -f node_modules/mathjax/es5/tex-chtml.js ]; then
  command -v npm >/dev/null || { echo "error: npm is needed to fetch MathJax (Debian: apt-get install npm)" >&2; exit 1; }
  echo "== fetching MathJax from the npm registry (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
