#!/usr/bin/env bash
# LwM2M registration storm: CLIENTS simulated clients (each its own socket on 127.4.x.y) register
# with a release gateway as fast as it takes them, are observed (an [[lwm2m.observe]] rule on
# /3303/0/5700) and send NOTIFY Confirmable notifications each (acknowledged only once durable).
# Prints one JSON line per round: the generator's figures plus the gateway's RSS before, after
# registration+observation (idle), and per registered client.
#
#   bench/lwm2m.sh [CLIENTS] [NOTIFY] [ROUNDS] [OBSERVE]   (defaults 10000 5 3 1)
#
# OBSERVE=0 leaves out the observe rule: the clients only register, and the RSS per client is
# that of an idle registration.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-10000}
NOTIFY=${2:-5}
ROUNDS=${3:-3}
OBSERVE=${4:-1}
# bench.py passes its binaries; run alone, this builds them.
if [ -n "${WARDGATE_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
    GATEWAY=$WARDGATE_BIN; GENERATOR=$BENCH_BIN
else
    cargo build --release --locked -q -p wardgate -p wardgate-bench
    GATEWAY=$PWD/target/release/wardgate; GENERATOR=$PWD/target/release/wardgate-bench
fi
WORK=$(mktemp -d)
trap '[ -n "${GW:-}" ] && kill "$GW" 2>/dev/null; rm -rf "$WORK"' EXIT
# One socket per simulated client.
ulimit -n "$(( CLIENTS + 1024 > 65536 ? CLIENTS + 1024 : 65536 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start_gateway() {
    local port
    port=$(free_port); HTTP=$(free_tcp)
    local dir="$WORK/round-$RANDOM"
    mkdir -p "$dir"
    cat > "$dir/gateway.toml" <<TOML
[gateway]
id = "bench"
[log]
level = "warn"
[coap]
listen = ["127.0.0.1:$port"]
[http]
listen = "127.0.0.1:$HTTP"
[store]
path = "$dir/outbox.db"
[lwm2m]
max_clients = $((CLIENTS + 100))
$( [ "$OBSERVE" = 1 ] && printf '[[lwm2m.observe]]\nendpoint = "storm-*"\npaths = ["/3303/0/5700"]\n' )
[[uplinks]]
type = "file"
name = "null"
path = "/dev/null"
TOML
    "$GATEWAY" run --config "$dir/gateway.toml" 2>"$dir/gateway.log" &
    GW=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    TARGET="127.0.0.1:$port"
}

for ((r = 1; r <= ROUNDS; r++)); do
    start_gateway
    sleep 1
    before=$(rss_kb "$GW")
    wait_s=30; [ "$OBSERVE" = 1 ] || wait_s=0
    report=$("$GENERATOR" lwm2m-storm --target "$TARGET" --clients "$CLIENTS" \
        --notifications "$NOTIFY" --observe-wait "$wait_s")
    sleep 2
    after=$(rss_kb "$GW")
    clients=$(metric wardgate_lwm2m_clients)
    observations=$(metric wardgate_lwm2m_active_observations)
    python3 - "$report" "$before" "$after" "${clients:-0}" "${observations:-0}" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
before, after = int(sys.argv[2]), int(sys.argv[3])
r["gateway_rss_before_kb"] = before
r["gateway_rss_after_kb"] = after
r["gateway_clients"] = float(sys.argv[4])
r["gateway_active_observations"] = float(sys.argv[5])
n = max(1, r["registered"])
r["rss_bytes_per_client"] = round((after - before) * 1024 / n)
r["observed_rule"] = r["observed"] > 0
print(json.dumps(r))
PY
    kill -TERM "$GW"; wait "$GW" 2>/dev/null || true; GW=
done
