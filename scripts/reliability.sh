#!/usr/bin/env bash
# The reliability suite in one command (issue 9): faults, reboots, races, hostile
# input and security, in full mode, then RELIABILITY.md's table from its figures.
#   bash scripts/reliability.sh          # full mode (about 30 minutes under emulation)
#   bash scripts/reliability.sh quick    # CI's bounded mode (a few minutes)
# Exit status non-zero when a test failed or anything was lost.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
case "$mode" in quick|full) ;; *) echo "usage: $0 [quick|full]" >&2; exit 2 ;; esac
[ "${SHAREBLOCK_SKIP_BOOTSTRAP:-}" = 1 ] || bash scripts/bootstrap.sh

export SHAREBLOCK_RELIABILITY=$mode
export SHAREBLOCK_RELIABILITY_REPORT=.cache/reliability/run-$mode.jsonl
mkdir -p .cache/reliability
rm -f "$SHAREBLOCK_RELIABILITY_REPORT"
status=0
# Hostile input needs no kernel: property tests on this machine, at full speed.
.venv/bin/python -m pytest tests/unit/test_hostile_input.py -q || status=1
# Everything else against the lab's real LIO, nvmet and initiators.
.venv/bin/shareblock-lab run --timeout 5400 -- .venv/bin/python -m pytest \
  tests/hardware/reliability -v -rA -o faulthandler_timeout=900 || status=1

if [ "$mode" = full ]; then
  .venv/bin/python -m tests.hardware.reliability.table "$SHAREBLOCK_RELIABILITY_REPORT" \
    --write RELIABILITY.md || status=1
else
  .venv/bin/python -m tests.hardware.reliability.table "$SHAREBLOCK_RELIABILITY_REPORT" \
    || status=1
fi
exit $status
