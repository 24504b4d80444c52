#!/usr/bin/env bash
# Real Cinder with the driver, in full mode: every scenario on both transports.
# CI runs it in quick mode (scripts/test.sh: live migration and image copies on
# NVMe only).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SHAREBLOCK_SKIP_BOOTSTRAP:-}" = 1 ] || bash scripts/bootstrap.sh
unset SHAREBLOCK_QUICK
exec .venv/bin/shareblock-lab run -- .venv-cinder/bin/python -m pytest tests/cinder -v -rA \
  -o faulthandler_timeout=600
