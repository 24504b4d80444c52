#!/usr/bin/env bash
# The cluster suite in full mode: SCSI-3 reservations and fencing on the lab's
# default kernel (6.12), NVMe reservations on its backports kernel (7.x). CI runs
# the same files in quick mode (scripts/test.sh), without the full-only variants.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SHAREBLOCK_SKIP_BOOTSTRAP:-}" = 1 ] || bash scripts/bootstrap.sh
unset SHAREBLOCK_QUICK
status=0
.venv/bin/shareblock-lab run -- .venv/bin/python -m pytest tests/hardware/test_reservations.py \
  tests/hardware/test_fencing.py -v -rA -o faulthandler_timeout=600 || status=1
.venv/bin/shareblock-lab run --kernel backports -- .venv/bin/python -m pytest \
  tests/hardware/test_nvme_reservations.py -v -rA -o faulthandler_timeout=600 || status=1
exit $status
