#!/usr/bin/env bash
# The test command: set-up, lint, unit suite, then the hardware suite in the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

bash scripts/bootstrap.sh
# CI's quick mode: full-only variants run in scripts/cluster.sh and scripts/cinder.sh
export SHAREBLOCK_QUICK=1
# The reliability suite's quick-mode figures of this run (RELIABILITY.md explains them)
export SHAREBLOCK_RELIABILITY_REPORT=.cache/reliability/run-ci.jsonl
mkdir -p .cache/reliability && rm -f "$SHAREBLOCK_RELIABILITY_REPORT"

step "Lint (ruff)"
.venv/bin/ruff check .

step "Unit tests"
.venv/bin/python -m pytest tests/unit -q

step "Hardware tests in the lab (real LIO, nvmet, open-iscsi, nvme-cli; reliability in quick mode),"
echo "    then the benchmark in its tiny size so that it cannot rot (figures in .cache/bench-ci/)"
# One boot for both: a boot costs about a minute under emulation.
.venv/bin/shareblock-lab run -- bash -c '
  .venv/bin/python -m pytest tests/hardware -v -rA -o faulthandler_timeout=300 --durations=25
  tests=$?
  .venv/bin/shareblock-bench --size ci --out .cache/bench-ci
  bench=$?
  [ $tests = 0 ] && [ $bench = 0 ]'
.venv/bin/python -m tests.hardware.reliability.table "$SHAREBLOCK_RELIABILITY_REPORT"
.venv/bin/shareblock-bench --report .cache/bench-ci/results-ci.json > /dev/null  # the plot

step "NVMe reservations on the lab's backports kernel (nvmet has them from Linux 6.13)"
.venv/bin/shareblock-lab run --kernel backports -- .venv/bin/python -m pytest \
  tests/hardware/test_nvme_reservations.py -v -rA -o faulthandler_timeout=300

step "Real Cinder loads the driver, in the lab (API, scheduler, volume service)"
.venv/bin/shareblock-lab run -- .venv-cinder/bin/python -m pytest tests/cinder -v -rA \
  -o faulthandler_timeout=600
