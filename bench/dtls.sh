#!/usr/bin/env bash
# DTLS benchmark: handshakes/s, readings/s over DTLS vs plain CoAP in the same run, and the
# gateway's memory per DTLS session. Builds release, runs two gateways in turn (plain CoAP without
# a registry; CoAP over DTLS with a registry of the benchmark's devices), alternating, and prints
# one JSON line per run. Loopback only; each device uses its own 127.3.x.y address.
#
#   bench/dtls.sh [DEVICES] [READINGS] [ROUNDS]     (defaults 500 20 3)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-500}
READINGS=${2:-20}
ROUNDS=${3:-3}
cargo build --release --locked -q -p wardgate -p wardgate-bench
BIN=$PWD/target/release
WORK=$(mktemp -d)
trap '[ -n "${GW:-}" ] && kill "$GW" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The registry: bench-i with the 16-byte key "{i:016}" (hex), plain and secure CoAP allowed.
{
    echo 'unknown = "reject"'
    for ((i = 0; i < DEVICES; i++)); do
        key=$(printf '%016d' "$i" | od -An -tx1 | tr -d ' \n')
        printf '[[device]]\nid = "bench-%d"\nprotocols = ["coap", "coaps"]\n[device.psk]\nidentity = "bench-%d"\nkey = "hex:%s"\n' "$i" "$i" "$key"
    done
} > "$WORK/devices.toml"
chmod 600 "$WORK/devices.toml"

start_gateway() { # $1 = dtls|plain
    local port http
    port=$(free_port); http=$(free_tcp)
    {
        echo "[gateway]"; echo 'id = "bench"'
        echo "[log]"; echo 'level = "warn"'
        echo "[http]"; echo "listen = \"127.0.0.1:$http\""
        echo "[store]"; echo "path = \"$WORK/outbox-$1-$RANDOM.db\""
        if [ "$1" = dtls ]; then
            echo "[registry]"; echo 'path = "devices.toml"'
            echo "[coap]"; echo "enabled = false"
            echo "[coaps]"; echo "enabled = true"; echo "listen = [\"127.0.0.1:$port\"]"
            echo "max_handshakes_per_source = 8"
        else
            echo "[coap]"; echo "listen = [\"127.0.0.1:$port\"]"
        fi
        echo "[[uplinks]]"; echo 'type = "file"'; echo 'name = "null"'; echo 'path = "/dev/null"'
    } > "$WORK/gateway.toml"
    "$BIN/wardgate" run --config "$WORK/gateway.toml" 2>"$WORK/gateway-$1.log" &
    GW=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break
        python3 - "$http" <<'PY' && break
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1); sys.exit(0)
except Exception:
    sys.exit(1)
PY
        sleep 0.1
    done
    TARGET="127.0.0.1:$port"
}

for ((r = 1; r <= ROUNDS; r++)); do
    for mode in plain dtls; do
        start_gateway "$mode"
        extra=(); [ "$mode" = plain ] && extra=(--plain)
        "$BIN/wardgate-bench" dtls-load --target "$TARGET" --devices "$DEVICES" \
            --readings "$READINGS" --workers 4 --gateway-pid "$GW" "${extra[@]}"
        kill -TERM "$GW"; wait "$GW" 2>/dev/null || true; GW=
    done
done
