#!/usr/bin/env bash
# The README's first command: runs Headway's main job, the gateway with its embedded demo config
# (simulated model servers in-process, demo tenants, memory state; no external service).
# Pass a config file to serve your own: bash scripts/demo.sh my-headway.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/headway serve "$@"
