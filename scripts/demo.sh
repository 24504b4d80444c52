#!/usr/bin/env bash
# The main job: boot the lab and run shareblock end to end, step by step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
printf '\n==> Demo in the lab\n'
exec .venv/bin/shareblock-lab run -- .venv/bin/python -m shareblock.lab.demo
