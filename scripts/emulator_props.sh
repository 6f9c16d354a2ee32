#!/usr/bin/env bash
# Long property run of the four emulator routers: random methods, paths, headers and bodies,
# checked against each API's statuses and error bodies, with stored data unchanged by failures.
# Usage: scripts/emulator_props.sh [CASES]   (default: 20000 per router)
set -euo pipefail
cd "$(dirname "$0")/.."
PROPTEST_CASES=${1:-20000} cargo test --quiet --test emulator_props -- --nocapture
