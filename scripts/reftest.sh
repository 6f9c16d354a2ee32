#!/usr/bin/env bash
# Long reference-model run: many seeds, many operations each, on a real mount (needs root).
# Usage: scripts/reftest.sh [SEEDS] [OPS]   (defaults: 20 seeds of 3000 operations)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-20}
ops=${2:-3000}
cargo build --tests --quiet
for seed in $(seq 1 "$seeds"); do
  echo "seed $seed: $ops operations"
  SESSIONFS_REFTEST_SEED=$seed SESSIONFS_REFTEST_OPS=$ops \
    cargo test --quiet --test mount reference -- --nocapture
done
