#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the real peers the tests talk to
# (Mosquitto, libcoap's tools, curl for the admin API over TLS, tshark for captures, nats-server,
# iproute2 for a test network namespace, promtool for the alert rules, chromium and its WebDriver
# for the status page, aiocoap), then runs every test in the workspace,
# then the Compose deployment (scripts/compose-test.sh) and the deployment manifests (scripts/deploy-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v coap-client-notls >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# tshark decodes the monitor's pcapng captures (crates/monitor, tests/e2e_monitor.rs).
command -v tshark >/dev/null 2>&1 || need+=(tshark)
# A three-node NATS JetStream cluster is the replicated bus of the scale-out test (tests/e2e_split.rs).
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
# promtool checks and unit-tests the alert rules (tests/e2e_alerts.rs).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Interface capture mode's test makes a veth pair and a network namespace (tests/e2e_monitor.rs).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The status page is tested in a real browser over WebDriver (tests/e2e_status_page.rs).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test peers: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# aiocoap: an independent CoAP stack as the LwM2M client peer (crates/lwm2m/tests/peers).
if ! python3 -c 'import aiocoap' >/dev/null 2>&1; then
  echo "installing test peer: aiocoap (PyPI)"
  python3 -m pip install --quiet "aiocoap==0.4.17" \
    || python3 -m pip install --quiet --break-system-packages "aiocoap==0.4.17"
fi

# A package install may start a system-wide Mosquitto on 1883; the tests never use it (each test
# starts its own broker on a free loopback port).
cargo test --workspace --locked "$@"

# The container deployment against the real Docker engine: images built locally (debootstrap,
# no registry), docker-compose up, readings end to end, SIGKILL of the container holding them.
# Only with a full run (no cargo test filter); WARDGATE_SKIP_DOCKER=1 skips it on a machine
# without a Docker engine, and says so.
if [ $# -eq 0 ]; then
  if [ "${WARDGATE_SKIP_DOCKER:-0}" = 1 ]; then
    echo "SKIPPED: the Compose deployment test (WARDGATE_SKIP_DOCKER=1)"
  else
    ./scripts/compose-test.sh
    ./scripts/deploy-check.sh
  fi
fi
