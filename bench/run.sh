#!/usr/bin/env bash
# wardgate benchmarks: builds release, installs its own peers, runs every scenario and writes the
# report.
#
#   bench/run.sh            full run (≥ 5 runs per scenario, ladder, 300 s soak, the LwM2M storm,
#                           bench/selector.sh and bench/https.sh; < 15 min + about 90 s for the
#                           selector and 3.5 min for the HTTPS paths):
#                           writes docs/benchmarks.md and docs/bench-raw/
#   bench/run.sh --quick    smoke check for CI (1 short run per scenario, no ladder/soak; < 3 min
#                           once built): writes to a temp dir, never touches docs/
#
# Extra arguments are passed to bench/bench.py run (e.g. --only limit-udp,wardgate-e2e-fsync,
# --no-soak, --runs 3). Loopback only; needs 2 cores (taskset -c 0 / -c 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
ARGS=()
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        *) ARGS+=("$a") ;;
    esac
done
T0=$(date +%s)
log() { echo "[run.sh $(date +%H:%M:%S)] $*" >&2; }

# Peers: Debian packages if missing.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v coap-server-notls >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

# The naive bridge's venv (system python3, pinned versions).
VENV="$ROOT/bench/.venv"
if ! "$VENV/bin/python" -c 'import aiocoap, paho.mqtt' >/dev/null 2>&1; then
    log "creating $VENV (aiocoap, paho-mqtt)"
    PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q "aiocoap==0.4.17" "paho-mqtt==2.2.0"
fi

log "building release binaries"
cargo build --release -p wardgate-bench 2>&1 | tail -n 2 >&2
if ! cargo build --release -p wardgate >"${TMPDIR:-/tmp}/wardgate-bench-build.log" 2>&1; then
    log "WARNING: wardgate does not build (${TMPDIR:-/tmp}/wardgate-bench-build.log): its scenarios will fail"
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | /usr/bin/env python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BENCH_BIN="$TARGET_DIR/release/wardgate-bench"
WARDGATE_BIN="$TARGET_DIR/release/wardgate"
[ -x "$BENCH_BIN" ] || { log "missing $BENCH_BIN"; exit 1; }
[ -x "$WARDGATE_BIN" ] || log "WARNING: $WARDGATE_BIN missing: wardgate scenarios will be reported as failed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wardgate-bench.XXXXXX")
trap 'rm -rf "$WORK/data-"*' EXIT
CMDLINE="bench/run.sh $*"
if [ "$QUICK" = 1 ]; then
    OUT="$WORK/out"
    RAW="$OUT/results.jsonl"
    REPORT="$OUT/benchmarks.md"
    python3 bench/bench.py run --quick --out "$OUT" --work "$WORK" --bench-bin "$BENCH_BIN" \
        --wardgate-bin "$WARDGATE_BIN" --venv-python "$VENV/bin/python" --command-line "$CMDLINE" "${ARGS[@]}"
else
    OUT="$ROOT/docs/bench-raw"
    mkdir -p "$OUT"
    # A full run replaces the previous raw results (they are committed; git keeps history).
    rm -f "$OUT/results.jsonl" "$OUT"/metrics-*.txt "$OUT"/profile-*.txt
    RAW="$OUT/results.jsonl"
    REPORT="$ROOT/docs/benchmarks.md"
    python3 bench/bench.py run --out "$OUT" --work "$WORK" --bench-bin "$BENCH_BIN" \
        --wardgate-bin "$WARDGATE_BIN" --venv-python "$VENV/bin/python" --command-line "$CMDLINE" "${ARGS[@]}"
fi
python3 bench/bench.py report --raw "$RAW" --out "$REPORT" --command-line "$CMDLINE"
log "report: $REPORT (raw: $RAW, logs: $WORK) in $(( $(date +%s) - T0 )) s"
# Smoke-check verdict for CI: every scenario produced a report (speed targets are not asserted).
python3 - "$RAW" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
errors = [r for r in recs if "error" in r]
runs = [r for r in recs if "report" in r]
print(f"bench: {len(runs)} passed, {len(errors)} failed")
for r in errors:
    print(f"  {r['scenario']}: {r['error']}", file=sys.stderr)
sys.exit(1 if errors or not runs else 0)
PY
