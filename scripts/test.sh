#!/usr/bin/env bash
# The test command: set-up, lint, unit suite, then the hardware suite in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

bash scripts/bootstrap.sh
# The reliability suite's quick-mode figures of this run (RELIABILITY.md explains them)
export SHAREBLOCK_RELIABILITY_REPORT=.cache/reliability/run-ci.jsonl
mkdir -p .cache/reliability && rm -f "$SHAREBLOCK_RELIABILITY_REPORT"

step "Lint (ruff)"
.venv/bin/ruff check .

step "Unit tests"
.venv/bin/python -m pytest tests/unit -q

step "Hardware tests in the lab (real LIO, nvmet, open-iscsi, nvme-cli; reliability in quick mode)"
.venv/bin/shareblock-lab run -- .venv/bin/python -m pytest tests/hardware -v -rA \
  -o faulthandler_timeout=300 --durations=25
.venv/bin/python -m tests.hardware.reliability.table "$SHAREBLOCK_RELIABILITY_REPORT"

step "Benchmark, tiny size, so that it cannot rot (figures in .cache/bench-ci/)"
.venv/bin/shareblock-lab run -- .venv/bin/shareblock-bench --size ci --out .cache/bench-ci

step "Real Cinder loads the driver, in the lab (API, scheduler, volume service)"
.venv/bin/shareblock-lab run -- .venv-cinder/bin/python -m pytest tests/cinder -v -rA \
  -o faulthandler_timeout=600
