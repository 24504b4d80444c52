#!/usr/bin/env bash
# The test command: set-up, lint, unit suite, then the hardware suite in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

bash scripts/bootstrap.sh

step "Lint (ruff)"
.venv/bin/ruff check .

step "Unit tests"
.venv/bin/python -m pytest tests/unit -q

step "Hardware tests in the lab (real LIO, nvmet, open-iscsi, nvme-cli)"
.venv/bin/shareblock-lab run -- .venv/bin/python -m pytest tests/hardware -v -rA \
  -o faulthandler_timeout=300

step "Real Cinder loads the driver, in the lab (API, scheduler, volume service)"
.venv/bin/shareblock-lab run -- .venv-cinder/bin/python -m pytest tests/cinder -v -rA \
  -o faulthandler_timeout=600
