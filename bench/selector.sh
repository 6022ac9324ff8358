#!/usr/bin/env bash
# The uplink selector (issue 11), two scenarios against a release gateway, each with its own
# Mosquitto brokers on free loopback ports and a fresh gateway per round. Prints one JSON line
# per round (the generator's report plus "scenario" and "round"; {"error": ...} if it failed).
#
#   failover       open-loop CoAP vitals (RATE/s for DURATION s, 16 devices) to a gateway whose
#                  `vital` class fails over from "cloud" to "backup"; the cloud broker is killed
#                  (SIGKILL) KILL_AT s in. Both brokers are subscribed to.
#   alarm-backlog  the only uplink's broker is stopped (SIGTERM), BACKLOG vitals are sent, the
#                  broker is started again and one alarm is sent every 20 ms while the backlog
#                  drains; the same alarms with no backlog first, for comparison.
#
#   bench/selector.sh [--quick] [--rounds N] [--only failover|alarm-backlog]
#
# Defaults: 3 rounds of each, RATE 5000, DURATION 20, KILL_AT 8, BACKLOG 100000, 50 alarms
# (about 90 s). --quick: 1 round of each at 2000/s for 6 s (kill at 2 s) and a 5,000-reading
# backlog (< 60 s once built). Gateway on core 0, generator and brokers on core 1 when taskset
# and 2 cores are there. Loopback only; every step bounded in time. WARDGATE_BENCH_STORE adds
# lines to the gateways' [store] section (A/B runs, e.g. 'commit_linger = "0s"'); KEEP=1 keeps
# the work directory, with each alarm round's gateway metrics after the drain.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        *) echo "usage: $0 [--quick] [--rounds N] [--only failover|alarm-backlog]" >&2; exit 64 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    RATE=2000; DURATION=6; KILL_AT=2; BACKLOG=5000; DRAIN_TIMEOUT=20
else
    RATE=${RATE:-5000}; DURATION=${DURATION:-20}; KILL_AT=${KILL_AT:-8}; BACKLOG=${BACKLOG:-100000}
    DRAIN_TIMEOUT=120
fi
ALARMS=50
# bench.py passes its binaries; run alone, this builds them.
if [ -n "${WARDGATE_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
    GATEWAY=$WARDGATE_BIN; GENERATOR=$BENCH_BIN
else
    cargo build --release --locked -q -p wardgate -p wardgate-bench
    GATEWAY=$PWD/target/release/wardgate; GENERATOR=$PWD/target/release/wardgate-bench
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "selector.sh: mosquitto is not installed" >&2; exit 1; }
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SUT=(taskset -c 0); LOAD=(taskset -c 1)
else
    SUT=(); LOAD=()
fi

WORK=$(mktemp -d)
chmod 755 "$WORK" # Mosquitto drops to its own user: it must reach its persistence dir below.
PIDS=()
cleanup() {
    # A broker the generator started again, if the generator did not stop it itself.
    for f in "$WORK"/*/restarted.pid; do [ -f "$f" ] && stop_restarted "$f"; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# The broker alarm-backlog started again is the generator's child, which stops it on exit; this
# only catches a generator that was killed first (checked by pid and name, never by name alone).
stop_restarted() {
    local p
    [ -f "$1" ] || return 0
    p=$(cat "$1"); rm -f "$1"
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mosquitto ] && kill "$p" 2>/dev/null || true
}

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { echo "[selector.sh $(date +%H:%M:%S)] $*" >&2; }

# start_broker DIR PERSISTENT → sets BROKER_PORT, BROKER_PID, BROKER_CONF
start_broker() {
    local dir=$1 persistent=$2
    mkdir -p "$dir"
    chmod 777 "$dir" # Mosquitto started as root drops to its own user, and writes its db here.
    BROKER_PORT=$(free_tcp)
    BROKER_CONF="$dir/mosquitto.conf"
    # Queue instead of dropping: losses must be the gateway's (or the kill's), not a queue limit.
    cat > "$BROKER_CONF" <<CONF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
persistence $persistent
persistence_location $dir/
max_queued_messages 2000000
max_queued_bytes 0
max_inflight_messages 1000
set_tcp_nodelay true
CONF
    "${LOAD[@]}" "$MOSQUITTO" -c "$BROKER_CONF" >>"$dir/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    log "mosquitto did not start ($dir/mosquitto.log)"; return 1
}

# start_gateway DIR UPLINKS_TOML → sets GW, COAP, HTTP
start_gateway() {
    local dir=$1 uplinks=$2
    COAP=$(free_port); HTTP=$(free_tcp)
    cat > "$dir/gateway.toml" <<TOML
[gateway]
id = "bench"
[log]
level = "warn"
[coap]
listen = ["127.0.0.1:$COAP"]
[http]
listen = "127.0.0.1:$HTTP"
[store]
path = "$dir/outbox.db"
${WARDGATE_BENCH_STORE:-}
$uplinks
TOML
    "${SUT[@]}" "$GATEWAY" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" &
    GW=$!
    PIDS+=("$GW")
    for _ in $(seq 150); do
        curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$GW" 2>/dev/null || { log "gateway exited ($dir/gateway.log)"; return 1; }
        sleep 0.1
    done
    log "gateway not ready ($dir/gateway.log)"; return 1
}

uplink() { # NAME PORT
    printf '[[uplinks]]\ntype = "mqtt"\nname = "%s"\nurl = "mqtt://127.0.0.1:%s"\nreconnect_min = "50ms"\nreconnect_max = "500ms"\nkeep_alive = "5s"\n' "$1" "$2"
}

stop_all() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

emit() { # SCENARIO ROUND JSON_OR_EMPTY ERRFILE
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
scenario, rnd, out, errf = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines = [l for l in out.splitlines() if l.startswith("{")]
if lines:
    r = json.loads(lines[-1])
else:
    err = open(errf).read().strip().splitlines()
    r = {"error": (err[-1] if err else "no output")[:300]}
# Other sessions on the machine show here: the 1-minute load average at the end of the round.
r.update({"scenario": scenario, "round": rnd, "loadavg_1m": float(open("/proc/loadavg").read().split()[0])})
print(json.dumps(r))
PY
}

failover_round() {
    local r=$1 dir="$WORK/failover-$1"
    mkdir -p "$dir"
    start_broker "$dir/cloud" false; local cloud_port=$BROKER_PORT cloud_pid=$BROKER_PID
    disown "$cloud_pid" # killed on purpose: no "Killed" job notice on stderr
    start_broker "$dir/backup" false; local backup_port=$BROKER_PORT
    start_gateway "$dir" "$(uplink cloud "$cloud_port")
$(uplink backup "$backup_port")
[selector]
cool_down = \"30s\"
[[selector.classes]]
class = \"vital\"
failover = [\"cloud\", \"backup\"]
[[selector.classes]]
class = \"alarm\"
policy = \"redundant\""
    local out=""
    out=$(timeout $((DURATION + 120)) "${LOAD[@]}" "$GENERATOR" failover --target "127.0.0.1:$COAP" \
        --rate "$RATE" --duration "$DURATION" --kill-at "$KILL_AT" --kill-pid "$cloud_pid" \
        --primary "mqtt://127.0.0.1:$cloud_port" --backup "mqtt://127.0.0.1:$backup_port" \
        --metrics "http://127.0.0.1:$HTTP/metrics" --label "failover-$r" 2>"$dir/generator.err") || true
    emit failover "$r" "$out" "$dir/generator.err"
    stop_all
}

alarm_round() {
    local r=$1 dir="$WORK/alarm-$1"
    mkdir -p "$dir"
    start_broker "$dir/cloud" true
    start_gateway "$dir" "$(uplink cloud "$BROKER_PORT")"
    local out=""
    out=$(timeout $((DRAIN_TIMEOUT * 2 + 60)) "${LOAD[@]}" "$GENERATOR" alarm-backlog --target "127.0.0.1:$COAP" \
        --mqtt "mqtt://127.0.0.1:$BROKER_PORT" --broker-pid "$BROKER_PID" --broker-conf "$BROKER_CONF" \
        --mosquitto "$MOSQUITTO" --broker-pid-file "$dir/restarted.pid" --backlog "$BACKLOG" \
        --alarms "$ALARMS" --interval-ms 20 --drain-timeout "$DRAIN_TIMEOUT" --label "alarm-backlog-$r" 2>"$dir/generator.err") || true
    # The gateway's metrics after the drain, for reading a bad round afterwards (KEEP=1).
    curl -sf --max-time 5 "http://127.0.0.1:$HTTP/metrics" >"$dir/metrics.txt" 2>/dev/null || true
    stop_restarted "$dir/restarted.pid"
    emit alarm-backlog "$r" "$out" "$dir/generator.err"
    stop_all
}

for ((r = 0; r < ROUNDS; r++)); do
    if [ -z "$ONLY" ] || [ "$ONLY" = failover ]; then
        log "failover round $r"
        failover_round "$r"
    fi
    if [ -z "$ONLY" ] || [ "$ONLY" = alarm-backlog ]; then
        log "alarm-backlog round $r"
        alarm_round "$r"
    fi
done
