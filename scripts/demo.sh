#!/usr/bin/env bash
# The README's first command: runs Headway's main job. Until the gateway lands, that is a short,
# runnable tour of the guard primitives protecting a flaky simulated service.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python examples/guards_tour.py "$@"
