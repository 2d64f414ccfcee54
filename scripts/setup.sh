#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extra. Idempotent; used by the README's
# two commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[experiments,test${EXTRAS:+,$EXTRAS}]"
