#!/usr/bin/env bash
# The HTTPS uplink and the HTTPS ingest (issue 11) against a release gateway, a fresh gateway
# (durable outbox, fsync) per run on free loopback ports. Prints one JSON line per run (the
# generator's report plus "scenario" and "round"; {"error": ...} if it failed).
#
#   uplink:mqtt           closed-loop CoAP vitals (IN_FLIGHT in flight, DURATION s) to a gateway
#                         whose only uplink is MQTT to its own Mosquitto (queues lifted); a QoS 1
#                         subscriber records every reading.
#   uplink:https          the same load, the only uplink HTTPS (batch_max_readings 500, linger
#                         20 ms) to `wardgate-bench uplink-e2e`'s own HTTP/1.1-over-TLS endpoint
#                         (self-signed certificate made per round by `gen-cert`, trusted by the
#                         gateway through `ca_file`), which answers 200 and records every reading.
#   uplink:https-gzip     ... with gzip = true.
#   uplink:https-b50      ... with batch_max_readings = 50.
#   ingest:tls            CONNECTIONS devices POSTing SenML JSON to [ingest.http] over TLS,
#                         keep-alive, one request in flight each, DURATION s; the only uplink is
#                         a file (/dev/null).
#   ingest:plain          the same over plain HTTP on loopback.
#
#   bench/https.sh [--quick] [--rounds N] [--only uplink|ingest]
#
# Defaults: 3 rounds, DURATION 10, IN_FLIGHT 256, CONNECTIONS 64 (about 3 min). --quick: 1 round
# of 3 s runs (< 40 s once built). The order of the runs rotates by round. Gateway on core 0,
# generator (and the HTTPS endpoint, and Mosquitto) on core 1 when taskset and 2 cores are
# there. Loopback only; every step bounded in time.
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
        *) echo "usage: $0 [--quick] [--rounds N] [--only uplink|ingest]" >&2; exit 64 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=3
else
    DURATION=${DURATION:-10}
fi
IN_FLIGHT=${IN_FLIGHT:-256}
CONNECTIONS=${CONNECTIONS:-64}
if [ -n "${WARDGATE_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
    GATEWAY=$WARDGATE_BIN; GENERATOR=$BENCH_BIN
else
    cargo build --release --locked -q -p wardgate -p wardgate-bench
    GATEWAY=$PWD/target/release/wardgate; GENERATOR=$PWD/target/release/wardgate-bench
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SUT=(taskset -c 0); LOAD=(taskset -c 1)
else
    SUT=(); LOAD=()
fi

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log() { echo "[https.sh $(date +%H:%M:%S)] $*" >&2; }

# start_broker DIR → sets BROKER_PORT, BROKER_PID
start_broker() {
    local dir=$1
    mkdir -p "$dir"
    chmod 777 "$dir"
    BROKER_PORT=$(free_tcp)
    # Queue instead of dropping: losses must be the gateway's, not a queue limit.
    cat > "$dir/mosquitto.conf" <<CONF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 2000000
max_queued_bytes 0
max_inflight_messages 1000
set_tcp_nodelay true
CONF
    "${LOAD[@]}" "$MOSQUITTO" -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    log "mosquitto did not start ($dir/mosquitto.log)"; return 1
}

# start_gateway DIR EXTRA_TOML → sets GW, COAP, HTTP
start_gateway() {
    local dir=$1 extra=$2
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
durability = "fsync"
$extra
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
    try:
        err = open(errf).read().strip().splitlines()
    except OSError:
        err = []
    r = {"error": (err[-1] if err else "no output")[:300]}
r.update({"scenario": scenario, "round": rnd, "loadavg_1m": float(open("/proc/loadavg").read().split()[0])})
print(json.dumps(r))
PY
}

# uplink_run ROUND VARIANT
uplink_run() {
    local r=$1 v=$2 dir="$WORK/uplink-$2-$1"
    mkdir -p "$dir"
    local out="" sink_args=() peers=()
    if [ "$v" = mqtt ]; then
        start_broker "$dir/broker" || { emit "uplink:$v" "$r" "" /dev/null; stop_all; return; }
        peers=(--peer-pid "$BROKER_PID")
        sink_args=(--mqtt "mqtt://127.0.0.1:$BROKER_PORT")
        start_gateway "$dir" "[[uplinks]]
type = \"mqtt\"
name = \"cloud\"
url = \"mqtt://127.0.0.1:$BROKER_PORT\"" || { emit "uplink:$v" "$r" "" "$dir/gateway.log"; stop_all; return; }
    else
        local batch=500 gzip=false
        [ "$v" = https-b50 ] && batch=50
        [ "$v" = https-gzip ] && gzip=true
        "$GENERATOR" gen-cert --dir "$dir/tls" >/dev/null
        local sink_port
        sink_port=$(free_tcp)
        sink_args=(--https-listen "127.0.0.1:$sink_port" --tls-dir "$dir/tls")
        # The endpoint listens only once the generator runs; the gateway connects on its first
        # batch, which is the generator's readiness probe, sent after the endpoint is up.
        start_gateway "$dir" "[[uplinks]]
type = \"https\"
name = \"cloud\"
url = \"https://127.0.0.1:$sink_port/v1/readings\"
ca_file = \"$dir/tls/cert.pem\"
batch_max_readings = $batch
gzip = $gzip" || { emit "uplink:$v" "$r" "" "$dir/gateway.log"; stop_all; return; }
    fi
    out=$(timeout $((DURATION + 90)) "${LOAD[@]}" "$GENERATOR" uplink-e2e --target "127.0.0.1:$COAP" \
        "${sink_args[@]}" --in-flight "$IN_FLIGHT" --duration "$DURATION" --pid "$GW" "${peers[@]}" \
        --metrics "http://127.0.0.1:$HTTP/metrics" --label "uplink-$v-$r" 2>"$dir/generator.err") || true
    emit "uplink:$v" "$r" "$out" "$dir/generator.err"
    stop_all
}

# ingest_run ROUND tls|plain
ingest_run() {
    local r=$1 v=$2 dir="$WORK/ingest-$2-$1"
    mkdir -p "$dir"
    local port tls_toml="allow_plain = true" client_tls=()
    port=$(free_tcp)
    if [ "$v" = tls ]; then
        "$GENERATOR" gen-cert --dir "$dir/tls" >/dev/null
        tls_toml="[ingest.http.tls]
cert_file = \"$dir/tls/cert.pem\"
key_file = \"$dir/tls/key.pem\""
        client_tls=(--ca-file "$dir/tls/cert.pem")
    fi
    start_gateway "$dir" "[[uplinks]]
type = \"file\"
name = \"null\"
path = \"/dev/null\"
[ingest.http]
enabled = true
listen = \"127.0.0.1:$port\"
$tls_toml" || { emit "ingest:$v" "$r" "" "$dir/gateway.log"; stop_all; return; }
    local out=""
    out=$(timeout $((DURATION + 60)) "${LOAD[@]}" "$GENERATOR" https-ingest-load --target "127.0.0.1:$port" \
        "${client_tls[@]}" --connections "$CONNECTIONS" --duration "$DURATION" --pid "$GW" \
        --label "ingest-$v-$r" 2>"$dir/generator.err") || true
    emit "ingest:$v" "$r" "$out" "$dir/generator.err"
    stop_all
}

RUNS=()
[ -z "$ONLY" ] || [ "$ONLY" = uplink ] && RUNS+=("uplink mqtt" "uplink https" "uplink https-gzip" "uplink https-b50")
[ -z "$ONLY" ] || [ "$ONLY" = ingest ] && RUNS+=("ingest tls" "ingest plain")
for ((r = 0; r < ROUNDS; r++)); do
    n=${#RUNS[@]}
    for ((i = 0; i < n; i++)); do
        read -r kind variant <<<"${RUNS[$(((i + r) % n))]}"
        log "$kind $variant round $r"
        "${kind}_run" "$r" "$variant"
    done
done
