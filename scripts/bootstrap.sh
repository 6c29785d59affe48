#!/usr/bin/env bash
# Creates .venv (if missing) and installs Headway with its pinned dev/bench dependencies.
# Idempotent and quiet when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.headway-installed
newer_source=$(find src/headway/observe -name '_speedups*.[ch]' -newer "$stamp" 2>/dev/null | head -1 || true)
# Reinstall when the dependencies or the C extension's sources change (the extension is built
# in place, next to its Python fallback: see setup.py).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/dev.txt -nt "$stamp" ] \
  || [ setup.py -nt "$stamp" ] || [ -n "$newer_source" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
