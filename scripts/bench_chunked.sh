#!/usr/bin/env bash
# The chunked backends (Appmixer, Fluxer) side by side with curl: `cp` of one file into the
# mount and back out, next to one curl upload (the API's single-request upload) and one curl
# download of the same bytes from the same emulator, taking turns (mount, curl, mount, curl...)
# BENCH_REPEAT times. Prints the medians and the min-max of the ratio curl time / mount time
# (above 1: the mount is faster).
#
#   scripts/bench_chunked.sh appmixer|fluxer [loopback|wan] [UPLOAD_PARALLEL]
#
# wan: the emulator adds 20 ms to every request and caps each connection at 50 MiB/s.
# Environment: SESSIONFS_BIN (default target/release/sessionfs), BENCH_SIZE_MIB (100),
# BENCH_REPEAT (5). Needs curl and python3; runs as root (it mounts).
set -euo pipefail

BACKEND=${1:?usage: bench_chunked.sh appmixer|fluxer [loopback|wan] [UPLOAD_PARALLEL]}
PROFILE=${2:-loopback}
PARALLEL=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SESSIONFS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sessionfs}
SIZE_MIB=${BENCH_SIZE_MIB:-100}
REPEAT=${BENCH_REPEAT:-5}
[ -x "$BIN" ] || { echo "bench: no $BIN; run cargo build --release" >&2; exit 1; }
case "$PROFILE" in
    loopback) NET=() ;;
    wan) NET=(--latency 20ms --bandwidth 50MiB) ;;
    *) echo "bench: profile is loopback or wan" >&2; exit 2 ;;
esac

WORK=$(mktemp -d /tmp/sessionfs-bench-chunked.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/data" "$WORK/cache"
EMU_PID=""
MOUNT_PID=""
cleanup() {
    set +e
    if [ -n "$MOUNT_PID" ]; then umount "$MNT"; wait "$MOUNT_PID"; fi
    if [ -n "$EMU_PID" ]; then kill "$EMU_PID"; wait "$EMU_PID"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
timed() {
    local t0 t1
    t0=$(now)
    bash -c "$1" >/dev/null || { echo "bench: \`$1\` failed" >&2; exit 1; }
    t1=$(now)
    calc "$t1 - $t0"
}
stats() { # NAME MOUNT_TIMES CURL_TIMES: medians and the ratio's median and spread
    python3 - "$@" <<'PY'
import statistics, sys
name, mount, curl = sys.argv[1], list(map(float, sys.argv[2].split())), list(map(float, sys.argv[3].split()))
ratios = [c / m for m, c in zip(mount, curl)]
print(f"{name:<28} mount {statistics.median(mount):7.3f} s   curl {statistics.median(curl):7.3f} s"
      f"   curl/mount {statistics.median(ratios):5.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
PY
}

PORT=$(free_port)
HOST=http://127.0.0.1:$PORT
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/file.bin"
case "$BACKEND" in
    appmixer)
        USER_EMAIL=bench@example.com
        printf 'bench-secret' >"$WORK/password"
        chmod 600 "$WORK/password"
        "$BIN" serve --backend appmixer --data "$WORK/data" --listen "127.0.0.1:$PORT" \
            --user "$USER_EMAIL:bench-secret" "${NET[@]}" >"$WORK/serve.log" 2>&1 &
        EMU_PID=$!
        ENDPOINT=$HOST
        MOUNT_ARGS=(--backend appmixer --user "$USER_EMAIL" --password-file "$WORK/password")
        ;;
    fluxer)
        TOKEN=bench-token
        "$BIN" serve --backend fluxer --data "$WORK/data" --listen "127.0.0.1:$PORT" \
            --token "$TOKEN" --no-rate-limits --max-attachment-size 1GiB "${NET[@]}" \
            >"$WORK/serve.log" 2>&1 &
        EMU_PID=$!
        ENDPOINT=$HOST/v1
        MOUNT_ARGS=(--backend fluxer --token "$TOKEN")
        ;;
    *) echo "bench: backend is appmixer or fluxer" >&2; exit 2 ;;
esac
for _ in $(seq 200); do
    curl -s -o /dev/null "$HOST/" && break
    sleep 0.05
done

# The baseline's single-request upload and its download, as shell commands.
case "$BACKEND" in
    appmixer)
        JWT=$(curl -fs -H 'Content-Type: application/json' \
            -d "{\"email\":\"$USER_EMAIL\",\"password\":\"bench-secret\"}" "$HOST/user/auth" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
        curl_upload() {
            curl -fs -H "Authorization: Bearer $JWT" -F "file=@$WORK/file.bin" "$HOST/files" |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["fileId"])'
        }
        download_command() { # ID
            echo "curl -fs -o /dev/null -H 'Authorization: Bearer $JWT' '$HOST/files/$1'"
        }
        ;;
    fluxer)
        CHANNEL=$(curl -fs -H "Authorization: $TOKEN" "$HOST/v1/users/@me/guilds" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])' |
            xargs -I{} curl -fs -H "Authorization: $TOKEN" "$HOST/v1/guilds/{}/channels" |
            python3 -c 'import json,sys; print([c for c in json.load(sys.stdin) if c.get("type", 0) == 0][0]["id"])')
        curl_upload() {
            curl -fs -H "Authorization: $TOKEN" -F 'payload_json={"content":"bench"}' \
                -F "files[0]=@$WORK/file.bin" "$HOST/v1/channels/$CHANNEL/messages" |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["attachments"][0]["url"])'
        }
        download_command() { # URL
            echo "curl -fs -o /dev/null '$1'"
        }
        ;;
esac

PARALLEL_ARGS=()
[ -n "$PARALLEL" ] && PARALLEL_ARGS=(--upload-parallel "$PARALLEL")
RUST_LOG=warn "$BIN" mount "$MNT" --endpoint "$ENDPOINT" "${MOUNT_ARGS[@]}" \
    "${PARALLEL_ARGS[@]}" --cache-dir "$WORK/cache" --metadata-ttl 60s >"$WORK/mount.log" 2>&1 &
MOUNT_PID=$!
for _ in $(seq 200); do
    grep -qs " $MNT fuse" /proc/mounts && break
    sleep 0.05
done
grep -qs " $MNT fuse" /proc/mounts || { cat "$WORK/mount.log" >&2; exit 1; }
# Appmixer is flat; on Fluxer the files go into the first channel of the first guild.
DIR=$MNT
[ "$BACKEND" = fluxer ] && DIR=$(find "$MNT" -mindepth 2 -maxdepth 2 -type d | sort | head -n 1)

IN_MOUNT=() IN_CURL=() OUT_MOUNT=() OUT_CURL=()
for i in $(seq "$REPEAT"); do
    IN_MOUNT+=("$(timed "cp '$WORK/file.bin' '$DIR/copy$i.bin'")")
    t0=$(now)
    REF=$(curl_upload)
    t1=$(now)
    IN_CURL+=("$(calc "$t1 - $t0")")
    # A fresh mount cache each time: drop the kernel's pages of the copy.
    echo 3 >/proc/sys/vm/drop_caches
    OUT_MOUNT+=("$(timed "cat '$DIR/copy$i.bin' >/dev/null")")
    OUT_CURL+=("$(timed "$(download_command "$REF")")")
    cmp -s "$WORK/file.bin" "$DIR/copy$i.bin" || { echo "bench: copy $i differs" >&2; exit 1; }
done

echo "$BACKEND, $PROFILE, ${SIZE_MIB} MiB, upload parallel ${PARALLEL:-default}, $REPEAT turns each"
stats "cp in vs curl upload" "${IN_MOUNT[*]}" "${IN_CURL[*]}"
stats "cat out vs curl download" "${OUT_MOUNT[*]}" "${OUT_CURL[*]}"
