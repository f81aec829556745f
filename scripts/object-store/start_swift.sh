#!/usr/bin/env bash
# start_swift.sh [DIR]
#
# Starts the object store that ImageActions' tests talk to: a single-node,
# one-replica OpenStack Swift (Debian 12 packages, 2.30.x) with s3api and
# tempauth, listening on 127.0.0.1 only. Configs, rings, data, logs and pid
# files all live under DIR (default /tmp/imageactions-swift). Installs the
# Debian packages when they are missing (apt-get; needs root, as on CI).
# If the servers recorded in DIR are already running and healthy, it only
# prints the connection details. Stop with stop_swift.sh DIR [--purge].
#
# Ports (environment, all optional). The defaults stay clear of a developer's
# own Swift (8080, 6200-6202) and memcached (11211):
#   SWIFT_PROXY_PORT (18080)  SWIFT_OBJECT_PORT (16200)
#   SWIFT_CONTAINER_PORT (16201)  SWIFT_ACCOUNT_PORT (16202)
#   SWIFT_MEMCACHED_PORT (21211)  SWIFT_START_TIMEOUT (60 s)
#   SWIFT_WORKERS (0: each server is one process; N: N forked workers each, as
#   a production Swift runs, for benchmarks that must not measure one process)
#
# Prints KEY=VALUE lines on stdout (also written to DIR/swift.env):
#   SWIFT_AUTH_URL SWIFT_USER SWIFT_KEY SWIFT_STORAGE_URL
#   S3_ENDPOINT S3_KEY S3_SECRET S3_REGION SWIFT_DIR
# Users: test:tester / testing (admin of account AUTH_test; also the S3 access
# key / secret) and test2:tester2 / testing2 (admin of AUTH_test2).
set -euo pipefail

DIR="${1:-/tmp/imageactions-swift}"
mkdir -p "$DIR" && DIR="$(cd "$DIR" && pwd)"   # the servers chdir to /, so paths must be absolute
HOST=127.0.0.1
PROXY_PORT="${SWIFT_PROXY_PORT:-18080}"
OBJ_PORT="${SWIFT_OBJECT_PORT:-16200}"
CONT_PORT="${SWIFT_CONTAINER_PORT:-16201}"
ACC_PORT="${SWIFT_ACCOUNT_PORT:-16202}"
MC_PORT="${SWIFT_MEMCACHED_PORT:-21211}"
START_TIMEOUT="${SWIFT_START_TIMEOUT:-60}"
WORKERS="${SWIFT_WORKERS:-0}"
PY=/usr/bin/python3          # Debian's python: the swift packages live in its dist-packages
RUN_USER="$(id -un)"
SERVICES="memcached account-server container-server object-server proxy-server"
ETC="$DIR/etc"; RUN="$DIR/run"; LOG="$DIR/log"; DEV="$DIR/srv/node"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[start_swift] $*" >&2; }

install_packages() {
    local missing=0 b
    for b in swift-proxy-server swift-object-server swift-container-server swift-account-server memcached; do
        command -v "$b" >/dev/null 2>&1 || missing=1
    done
    "$PY" -c 'import swift.common.middleware.s3api' 2>/dev/null || missing=1
    [ "$missing" = 0 ] && return 0
    log "installing Debian packages: swift, memcached"
    # Keep the packages' postinst from starting system-wide services, which would
    # take ports and read /etc/swift instead of our configuration.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local pkgs="swift swift-proxy swift-account swift-container swift-object memcached"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends $pkgs >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends $pkgs >&2
    fi
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

alive() {  # alive NAME: its pid file names a live process with the command line we started
    local pf="$RUN/$1.pid" pid
    [ -s "$pf" ] || return 1
    pid="$(cat "$pf")"
    kill -0 "$pid" 2>/dev/null || return 1
    # a reused pid would run another command line
    [ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" = "$(cat "$RUN/$1.cmdline" 2>/dev/null)" ]
}

print_info() {
    cat > "$DIR/swift.env" <<EOF
SWIFT_AUTH_URL=http://$HOST:$PROXY_PORT/auth/v1.0
SWIFT_USER=test:tester
SWIFT_KEY=testing
SWIFT_STORAGE_URL=http://$HOST:$PROXY_PORT/v1/AUTH_test
S3_ENDPOINT=http://$HOST:$PROXY_PORT
S3_KEY=test:tester
S3_SECRET=testing
S3_REGION=us-east-1
SWIFT_DIR=$DIR
EOF
    cat "$DIR/swift.env"
}

wait_ready() {  # wait_ready SECONDS: every server healthy, auth works, the account answers
    "$PY" - "$HOST" "$PROXY_PORT" "$OBJ_PORT" "$CONT_PORT" "$ACC_PORT" "$1" <<'PYEOF'
import sys, time, urllib.request
host, proxy, obj, cont, acc, timeout = sys.argv[1:7]
deadline = time.monotonic() + float(timeout)

def call(url, headers=None, method="GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers, response.read()

last_error = None
while time.monotonic() < deadline:
    try:
        for port in (acc, cont, obj, proxy):
            status, _, body = call(f"http://{host}:{port}/healthcheck")
            assert status == 200 and body == b"OK", (port, status, body)
        _, headers, _ = call(f"http://{host}:{proxy}/auth/v1.0",
                             {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        status, _, _ = call(headers["X-Storage-Url"], {"X-Auth-Token": headers["X-Auth-Token"]}, "HEAD")
        assert status in (200, 204), status
        sys.exit(0)
    except Exception as error:
        last_error = error
        time.sleep(0.2)
print(f"Swift was not ready after {timeout} s: {last_error!r}", file=sys.stderr)
sys.exit(1)
PYEOF
}

write_configs() {
    cat > "$ETC/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = imageactions-test-suffix
swift_hash_path_prefix = imageactions-test-prefix

[storage-policy:0]
name = gold
default = yes
EOF

    local server port
    for server in account container object; do
        case "$server" in
            account) port="$ACC_PORT" ;; container) port="$CONT_PORT" ;; object) port="$OBJ_PORT" ;;
        esac
        cat > "$ETC/$server-server.conf" <<EOF
[DEFAULT]
bind_ip = $HOST
bind_port = $port
workers = $WORKERS
user = $RUN_USER
swift_dir = $ETC
devices = $DEV
mount_check = false
disable_fallocate = true
recon_cache_path = $DIR/cache
log_level = INFO

[pipeline:main]
pipeline = healthcheck $server-server

[app:$server-server]
use = egg:swift#$server

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
    done

    cat > "$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = $HOST
bind_port = $PROXY_PORT
workers = $WORKERS
user = $RUN_USER
swift_dir = $ETC
expose_info = true
log_level = INFO

[pipeline:main]
# s3api must come before tempauth, and slo after s3api (s3api checks this at start):
# S3 multipart uploads are stored as static large objects.
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempurl s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
token_life = 86400

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false
allow_multipart_uploads = true
# the S3 minimum part size; boto3's default part size (8 MiB) is above it
min_segment_size = 5242880
max_upload_part_num = 10000

[filter:cache]
use = egg:swift#memcache
memcache_servers = $HOST:$MC_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:tempurl]
use = egg:swift#tempurl

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo
EOF

    # Swift 2.30 reads /etc/swift/swift.conf unless told otherwise before its storage
    # policies load: this launcher points it at \$ETC and writes the server's pid file.
    cat > "$DIR/bin/swift-serve" <<'EOF'
import os, sys
swift_dir, app_section, conf, pidfile = sys.argv[1:5]
from swift.common import utils
utils.set_swift_dir(swift_dir)
with open(pidfile + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(pidfile + ".tmp", pidfile)
from swift.common.wsgi import run_wsgi
sys.exit(run_wsgi(conf, app_section, verbose=True))
EOF
}

build_rings() {  # one device (a plain directory), one replica; rebuilt when the ports change
    local stamp="$ACC_PORT $CONT_PORT $OBJ_PORT"
    [ -f "$ETC/object.ring.gz" ] && [ "$(cat "$ETC/rings.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    "$PY" - "$ETC" "$HOST" "$ACC_PORT" "$CONT_PORT" "$OBJ_PORT" <<'PYEOF'
import os, sys
from swift.common.ring import RingBuilder
etc, host = sys.argv[1:3]
for name, port in zip(("account", "container", "object"), map(int, sys.argv[3:6])):
    builder = RingBuilder(8, 1, 1)  # part power, replicas, min_part_hours
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": host, "port": port,
                     "device": "d1", "weight": 100, "meta": ""})
    builder.rebalance()
    builder.save(os.path.join(etc, name + ".builder"))
    builder.get_ring().save(os.path.join(etc, name + ".ring.gz"))
PYEOF
    echo "$stamp" > "$ETC/rings.stamp"
}

start_servers() {
    # memcached keeps tempauth's tokens; it refuses to run as root unless told to.
    local as_user=()
    [ "$(id -u)" = 0 ] && as_user=(-u root)
    setsid memcached -l "$HOST" -p "$MC_PORT" -U 0 -m 64 "${as_user[@]}" \
        >> "$LOG/memcached.log" 2>&1 < /dev/null &
    echo $! > "$RUN/memcached.pid"
    local s
    for s in account-server container-server object-server proxy-server; do
        rm -f "$RUN/$s.pid"
        setsid "$PY" "$DIR/bin/swift-serve" "$ETC" "$s" "$ETC/$s.conf" "$RUN/$s.pid" \
            >> "$LOG/$s.log" 2>&1 < /dev/null &
    done
    # record each command line: alive() and stop_swift.sh compare it against pid reuse
    for s in $SERVICES; do
        for _ in $(seq 100); do [ -s "$RUN/$s.pid" ] && break; sleep 0.05; done
        tr '\0' ' ' < "/proc/$(cat "$RUN/$s.pid")/cmdline" > "$RUN/$s.cmdline" 2>/dev/null || true
    done
}

# ------------------------------------------------------------------------------- main
install_packages
mkdir -p "$ETC" "$RUN" "$LOG" "$DEV/d1" "$DIR/cache" "$DIR/bin"

all_alive=1
for s in $SERVICES; do alive "$s" || all_alive=0; done
if [ "$all_alive" = 1 ] && wait_ready 5; then
    log "already running"
    print_info
    exit 0
fi
bash "$HERE/stop_swift.sh" "$DIR" >&2   # whatever is left of an earlier, unhealthy start

for p in "$PROXY_PORT" "$OBJ_PORT" "$CONT_PORT" "$ACC_PORT" "$MC_PORT"; do
    if (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then
        log "ERROR: port $HOST:$p is already in use (set SWIFT_*_PORT to choose others)"
        exit 1
    fi
done

write_configs
build_rings
start_servers
if ! wait_ready "$START_TIMEOUT"; then
    log "ERROR: Swift did not become ready; last log lines:"
    for s in $SERVICES; do echo "== $s" >&2; tail -n 15 "$LOG/$s.log" >&2 || true; done
    exit 1
fi
for s in $SERVICES; do alive "$s" || { log "ERROR: $s exited after start (see $LOG/$s.log)"; exit 1; }; done
print_info
