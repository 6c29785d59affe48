#!/usr/bin/env bash
# The project's one test command (the README's second command; .ci/run calls it too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
