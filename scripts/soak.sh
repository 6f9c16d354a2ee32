#!/usr/bin/env bash
# Long fault soak: a few hundred files of random sizes (0 B to 64 MiB) in and out of every
# backend through a mount whose emulator injects every fault kind (needs root for FUSE).
# Usage: scripts/soak.sh [FILES] [SEED] [BACKEND]   (defaults: 300 files, seed 13, every backend)
# Each backend prints one line: files, bytes, faults per kind, retries, lost, corrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-300}
seed=${2:-13}
backend=${3:-}
SESSIONFS_SOAK_FILES=$files SESSIONFS_SOAK_SEED=$seed \
  cargo test --quiet --test mount "soak::soak_${backend}" -- --nocapture --test-threads 1
