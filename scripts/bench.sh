#!/usr/bin/env bash
# The benchmark: every figure of a sessionfs mount next to a baseline measured in the same run,
# for every backend, on loopback or over a simulated wide-area network.
#
#   cargo build --release
#   scripts/bench.sh --profile wan                  # every backend, every case
#   scripts/bench.sh --profile loopback --backend mix,fluxer --cases read,write
#   scripts/bench.sh --profile wan --backend fluxer --cases small --small-option=--write-back=1s
#
# Profiles: loopback (the default) runs the emulator as it is; wan adds 20 ms to every request
# and caps each connection at 50 MiB/s each way (`serve --latency 20ms --bandwidth 50MiB`).
# Cases: read (cold sequential read of --size MiB, capped at what the API takes, vs one curl
# download; warm re-read; CPU per GiB; peak RSS), write (cp in vs the API's single-request
# upload with curl), small (1 000 x create-write-4 KiB-close and git clone of 200 files vs the
# local disk), writeback (git clone with --write-back 5s vs without, and with the unmount that
# uploads it), list (ls -l and find of --files files vs paging through the API's listing),
# random (fio 4 KiB random reads vs the same ranges on one curl; server bytes per byte read).
# Every case runs the mount and its baseline in turn, A B A B, --repeat times (5), and prints
# the medians and the ratio's median and min-max; ratios above 1 mean the mount is faster.
# `--help` lists every option. Needs python3, curl and git; fio for the random case. Runs as
# root (it mounts and drops the page cache between turns).
set -euo pipefail
exec python3 "$(dirname "$0")/bench.py" "$@"
