#!/usr/bin/env bash
# The benchmark in one command: set up, boot the lab, run every scenario side by side.
#   bash scripts/bench.sh            # full size: results in docs/bench/ (about an hour)
#   bash scripts/bench.sh smoke      # every tool once (a few minutes): results in .cache/bench/
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-full}
[ "${SHAREBLOCK_SKIP_BOOTSTRAP:-}" = 1 ] || bash scripts/bootstrap.sh
# Told to the report: where it ran (the VM runs without KVM) and the host's CPU.
SHAREBLOCK_BENCH_LAB=$(.venv/bin/shareblock-lab mode)
SHAREBLOCK_BENCH_HOST_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
export SHAREBLOCK_BENCH_LAB SHAREBLOCK_BENCH_HOST_CPU
out=.cache/bench
[ "$size" = full ] && out=docs/bench
.venv/bin/shareblock-lab run --timeout 5400 -- .venv/bin/shareblock-bench --size "$size" --out "$out"
# tables, plot (and for the full size BENCHMARKS.md), drawn here: matplotlib is slow to load
# under emulation
.venv/bin/shareblock-bench --report "$out/results-$size.json" > /dev/null
echo "plot: $out/admit-$size.png"
