#!/usr/bin/env bash
# Containers and split mode (issue 12): image sizes, start-up to ready, split vs single end to end.
# Writes docs/bench-raw/deploy.jsonl and deploy.md (included in docs/benchmarks.md by the report).
# Needs Docker and root (scripts/docker-images.sh). DEPLOY_RUNS (3) and DEPLOY_DURATION (5 s).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/docker-images.sh >/dev/null
cargo build --release --locked -q -p wardgate-bench
mkdir -p docs/bench-raw
python3 bench/deploy.py target/release/wardgate-bench "$PWD/target/release/wardgate" docs/bench-raw
