#!/usr/bin/env bash
# stop_swift.sh [DIR] [--purge]
#
# Stops the Swift servers that start_swift.sh started in DIR (default
# /tmp/imageactions-swift), by the pids it recorded there, never by name.
# --purge also deletes the stored objects (DIR/srv) and Swift's cache.
set -uo pipefail
DIR="${1:-/tmp/imageactions-swift}"
[ -d "$DIR" ] && DIR="$(cd "$DIR" && pwd)"
PURGE="${2:-}"
RUN="$DIR/run"
SERVICES="proxy-server object-server container-server account-server memcached"

ours() {  # ours NAME PID: the process runs the command line start_swift.sh recorded
    [ -s "$RUN/$1.cmdline" ] || return 1
    [ "$(tr '\0' ' ' < "/proc/$2/cmdline" 2>/dev/null)" = "$(cat "$RUN/$1.cmdline")" ]
}

running() {  # an exited child stays a zombie until PID 1 reaps it: count it as gone
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pids=()
for s in $SERVICES; do
    pf="$RUN/$s.pid"
    [ -s "$pf" ] || continue
    pid="$(cat "$pf")"
    if kill -0 "$pid" 2>/dev/null && ours "$s" "$pid"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && echo "[stop_swift] TERM $s ($pid)" >&2
    fi
    rm -f "$pf" "$RUN/$s.cmdline"
done
left=()
for _ in $(seq 100); do          # up to 10 s for a clean exit
    left=()
    for p in "${pids[@]}"; do running "$p" && left+=("$p"); done
    [ "${#left[@]}" = 0 ] && break
    sleep 0.1
done
for p in "${left[@]}"; do
    echo "[stop_swift] KILL $p" >&2
    kill -KILL "$p" 2>/dev/null
done
if [ "$PURGE" = "--purge" ]; then
    rm -rf "$DIR/srv" "$DIR/cache"
    echo "[stop_swift] purged the stored data under $DIR" >&2
fi
exit 0
