#!/usr/bin/env bash
# Peak memory of a mount while 8 readers each copy a file out and 8 writers each copy one in,
# all at once, under --memory-limit (issue 13: 1 GiB files, 256 MiB limit, peak RSS <= 320 MiB).
# The Mix emulator runs as its own process, so only the mount's memory is measured (VmHWM,
# reset after the reader files are seeded). Needs root (FUSE) and about 24 x SIZE of free disk.
# Usage: scripts/rss.sh [SIZE_MIB] [LIMIT] [MAX_PEAK_MIB]   (defaults: 1024 256MiB 320)
# SESSIONFS_BIN picks the binary (default target/release/sessionfs, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
limit=${2:-256MiB}
max_peak_mib=${3:-320}
bin=${SESSIONFS_BIN:-target/release/sessionfs}
[ -x "$bin" ] || cargo build --release
work=$(mktemp -d)
server_pid=
mount_pid=
cleanup() {
  umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  [ -n "$mount_pid" ] && kill "$mount_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/data" "$work/cache"

# Waits (at most 30 s) for LINE in FILE.
wait_for() {
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "gave up waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

"$bin" serve --backend mix --data "$work/data" --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
server_pid=$!
wait_for "$work/serve.log" serving
endpoint=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)
"$bin" mount "$work/mnt" --backend mix --endpoint "$endpoint" --memory-limit "$limit" \
  --cache-dir "$work/cache" >"$work/mount.log" 2>&1 &
mount_pid=$!
wait_for "$work/mount.log" "unmount with"

mkdir "$work/mnt/rss"
echo "seeding 8 files of $size_mib MiB for the readers"
for i in $(seq 8); do
  dd if=/dev/urandom of="$work/mnt/rss/r$i" bs=1M count="$size_mib" status=none
done
seeded=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$mount_pid/status")
echo 5 >"/proc/$mount_pid/clear_refs" # resets VmHWM to the current RSS

echo "8 readers and 8 writers of $size_mib MiB at once, --memory-limit $limit"
start=$(date +%s)
pids=()
for i in $(seq 8); do
  cat "$work/mnt/rss/r$i" >/dev/null &
  pids+=($!)
  dd if=/dev/zero of="$work/mnt/rss/w$i" bs=1M count="$size_mib" status=none &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
elapsed=$(($(date +%s) - start))
peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$mount_pid/status")
echo "peak RSS of the mount: $peak MiB during the run ($seeded MiB while seeding); $elapsed s; $failed copies failed"
[ "$failed" -eq 0 ] || exit 1
[ "$peak" -le "$max_peak_mib" ] || { echo "over $max_peak_mib MiB" >&2; exit 1; }
