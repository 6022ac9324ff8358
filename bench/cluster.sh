#!/usr/bin/env bash
# The cluster throughput with 1, 2 and 3 JetStream uplink workers (issue 12; bench/cluster.py):
# builds the release binaries, writes docs/bench-raw/cluster.{jsonl,md}. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -q -p wardgate-bench -p wardgate
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p docs/bench-raw
python3 bench/cluster.py "$TARGET_DIR/release/wardgate-bench" "$TARGET_DIR/release/wardgate" docs/bench-raw
