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
# What the compiled parts are built from: the C extension's sources, and the modules mypyc
# compiles (any .py: their list lives in src/headway/_native.py, and mypyc reads the types of
# what they import). A build older than its sources is never run (see _native.py), only slower.
newer_source=$(find src/headway -name '_speedups*.[ch]' -newer "$stamp" 2>/dev/null | head -1 || true)
if [ -z "$newer_source" ] && [ "${HEADWAY_PURE_PYTHON:-}" != 1 ]; then
  newer_source=$(find src/headway -name '*.py' -newer "$stamp" 2>/dev/null | head -1 || true)
fi
# Reinstall when the dependencies or the compiled parts' sources change. The build uses this
# venv's pinned setuptools and mypy (--no-build-isolation): mypyc must see the same installed
# dependencies as `mypy --strict` does.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/dev.txt -nt "$stamp" ] \
  || [ setup.py -nt "$stamp" ] || [ -n "$newer_source" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
