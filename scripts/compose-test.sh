#!/usr/bin/env bash
# The Compose deployment against the real Docker engine (part of scripts/test.sh):
#   - every image built locally (scripts/docker-images.sh: no registry), `docker-compose config`
#     validates, `up` brings bus, uplinks, coap and a stand-in upstream broker to healthy;
#   - /readyz answers 200 through the published port; a sensor container (coap-client) and the
#     host's coap-client post readings that reach the upstream broker as wardgate.reading/1;
#   - the `secure` profile's `coap-dtls` part (device registry, DTLS only): a DTLS sensor
#     container and the host's coap-client-openssl post with the PSK and their readings reach
#     the upstream broker under the identity's device;
#   - a simulated ward container (`wardgate simulate`, profile `simulate`): its CoAP devices and
#     its LwM2M client (registering with the `coap` part) reach the upstream broker;
#   - the `monitoring` profile's Prometheus scrapes both parts (`up` and a gateway metric through
#     its query API);
#   - the `monitor` profile (`wardgate monitor` on the host's network) reads the bridge of the
#     ward network and counts and captures the sensor container's CoAP exchanges;
#   - the container holding acknowledged readings (`uplinks`, cut off from the upstream) is
#     killed with SIGKILL and started again: every acknowledged reading arrives;
#   - `docker-compose down -v` removes containers, networks and volumes.
# Runs in its own Compose project on free ports; cleans up whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }
say() { echo "compose-test: $*"; }

./scripts/docker-images.sh

work=$(mktemp -d)
project="wardgate-ci-$$"
free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET,getattr(socket,sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
COAP_PORT=$(free_port SOCK_DGRAM)
COAPS_PORT=$(free_port SOCK_DGRAM)
COAP_HTTP_PORT=$(free_port SOCK_STREAM)
COAP_DTLS_HTTP_PORT=$(free_port SOCK_STREAM)
BED_3_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
UPLINKS_HTTP_PORT=$(free_port SOCK_STREAM)
PROMETHEUS_PORT=$(free_port SOCK_STREAM)
cat >"$work/env" <<ENV
WARDGATE_ID=ward-ci
WARDGATE_BUS_USER=wardgate
WARDGATE_BUS_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
WARDGATE_CLOUD_URL=mqtt://upstream:1883
COAP_PORT=$COAP_PORT
COAPS_PORT=$COAPS_PORT
COAP_HTTP_PORT=$COAP_HTTP_PORT
COAP_DTLS_HTTP_PORT=$COAP_DTLS_HTTP_PORT
WARDGATE_BED_3_PSK=text:$BED_3_KEY
UPLINKS_HTTP_PORT=$UPLINKS_HTTP_PORT
PROMETHEUS_PORT=$PROMETHEUS_PORT
WARDGATE_TAG=local
COMPOSE_PROFILES=upstream,monitoring
ENV
dc() { docker-compose --env-file "$work/env" -p "$project" "$@"; }
cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    dc logs --no-color --tail 60 >&2 || true
  fi
  [ -n "${sub_pid:-}" ] && kill "$sub_pid" 2>/dev/null || true
  COMPOSE_PROFILES=upstream,ward,secure,mqtt,monitor,monitoring,simulate dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

dc config -q || fail "docker-compose config does not validate"
say "docker-compose config validates"

# Compose v1 reads COMPOSE_PROFILES from the environment, not from --env-file.
export COMPOSE_PROFILES=upstream,monitoring
started=$(date +%s)
dc up -d >/dev/null 2>&1 || { dc up -d; fail "docker-compose up"; }
health() { docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$1")" 2>/dev/null || echo none; }
for svc in bus upstream uplinks coap prometheus; do
  for _ in $(seq 1 120); do
    [ "$(health "$svc")" = healthy ] && break
    sleep 1
  done
  [ "$(health "$svc")" = healthy ] || fail "$svc is not healthy: $(health "$svc")"
done
say "bus, upstream, uplinks, coap and prometheus healthy after $(( $(date +%s) - started )) s"

code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$COAP_HTTP_PORT/readyz")
[ "$code" = 200 ] || fail "/readyz through the published port answered $code"
say "/readyz through the published port: 200"

# Everything the upstream broker receives, from a subscriber that stays connected throughout.
dc exec -T upstream mosquitto_sub -h 127.0.0.1 -t 'wardgate/+/+/+' -q 1 >"$work/received" 2>"$work/sub.err" &
sub_pid=$!
sleep 1

post() { # device value: the host's coap-client through the published UDP port
  coap-client-notls -m post -t 110 -B 10 -e "[{\"n\":\"seq\",\"v\":$2}]" \
    "coap://127.0.0.1:$COAP_PORT/v1/readings/$1" >/dev/null
}
dc run --rm -T --no-deps -e DEVICE=bed-sensor -e COUNT=3 -e INTERVAL=0 bed-1 >/dev/null 2>&1 \
  || fail "the sensor container's readings were not acknowledged"
for v in 0 1 2; do post bed-host "$v" || fail "host reading $v not acknowledged"; done
wait_received() { # pattern count seconds
  for _ in $(seq 1 "$3"); do
    [ "$(grep -c "$1" "$work/received" || true)" -ge "$2" ] && return 0
    sleep 1
  done
  return 1
}
wait_received '"device":"bed-sensor"' 3 60 || fail "the sensor container's readings did not reach upstream"
wait_received '"device":"bed-host"' 3 60 || fail "the host's readings did not reach upstream"
grep -q '"schema":"wardgate.reading/1"' "$work/received" || fail "not wardgate.reading/1"
say "readings from a sensor container and from the host reached the upstream broker"

# A simulated ward in a container (profile `simulate`): a bed's CoAP devices and its LwM2M
# thermometer (it registers with the `coap` part's LwM2M server and Sends) reach upstream.
dc run --rm -T --no-deps simulate simulate --config /etc/wardgate/simulate.toml \
  --coap coap:5683 --beds 1 --duration 12s --dropout-every 0s --quiet >"$work/sim.out" 2>&1 \
  || { cat "$work/sim.out" >&2; fail "the simulated ward container failed"; }
wait_received '"device":"bed-01-thermo"' 1 60 \
  || { cat "$work/sim.out" >&2; fail "the simulated LwM2M thermometer's readings did not reach upstream"; }
wait_received '"device":"bed-01-spo2"' 5 60 \
  || { cat "$work/sim.out" >&2; fail "the simulated SpO2 probe's readings did not reach upstream"; }
say "a simulated ward container's CoAP devices and LwM2M client reached the upstream broker"

# Prometheus (the `monitoring` profile) scrapes both parts.
promql() { # query: the first result's value, or nothing
  curl -s -G "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
up=""
for _ in $(seq 1 60); do
  up=$(promql 'sum(up{job="wardgate"})')
  [ "$up" = 2 ] && break
  sleep 1
done
[ "$up" = 2 ] || fail "Prometheus sees ${up:-no} wardgate targets up, expected 2"
received=""
for _ in $(seq 1 30); do
  received=$(promql 'sum(wardgate_coap_messages_received_total{job="wardgate"})')
  [ -n "$received" ] && [ "${received%.*}" -ge 6 ] && break
  sleep 1
done
[ -n "$received" ] && [ "${received%.*}" -ge 6 ] || fail "Prometheus has ${received:-no} CoAP messages received"
rules=$(curl -s "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/rules" \
  | python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
expected_rules=$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)
[ "$rules" = "$expected_rules" ] || fail "Prometheus loaded ${rules:-no} alert rules, expected the $expected_rules of deploy/prometheus/alerts.yml"
say "Prometheus scrapes both parts (up = $up; CoAP messages received: $received) and evaluates the $rules alert rules"

# CoAP over DTLS (profile `secure`): the `coap-dtls` part with the device registry; a DTLS
# sensor container and the host post with bed-3's PSK (libcoap's OpenSSL client).
COMPOSE_PROFILES=upstream,monitoring,secure dc up -d coap-dtls >/dev/null 2>&1 \
  || { COMPOSE_PROFILES=upstream,monitoring,secure dc up -d coap-dtls; fail "coap-dtls did not start"; }
for _ in $(seq 1 120); do
  [ "$(health coap-dtls)" = healthy ] && break
  sleep 1
done
[ "$(health coap-dtls)" = healthy ] || fail "coap-dtls is not healthy: $(health coap-dtls)"
COMPOSE_PROFILES=upstream,monitoring,secure dc run --rm -T --no-deps -e COUNT=3 -e INTERVAL=0 bed-3 \
  >"$work/bed-3.out" 2>&1 || { cat "$work/bed-3.out" >&2; fail "the DTLS sensor container failed"; }
! grep -q "not acknowledged" "$work/bed-3.out" || { cat "$work/bed-3.out" >&2; fail "DTLS readings not acknowledged"; }
coap-client-openssl -u bed-3 -k "$BED_3_KEY" -m post -t 110 -B 10 -e '[{"n":"seq","v":7}]' \
  "coaps://127.0.0.1:$COAPS_PORT/v1/readings/bed-3" >/dev/null \
  || fail "the host's DTLS reading was not acknowledged"
wait_received '"device":"bed-3"' 4 60 || fail "the DTLS readings did not reach upstream"
grep '"device":"bed-3"' "$work/received" | grep -q '"identity":"psk:bed-3"' \
  || fail "the DTLS readings do not carry the identity the handshake proved"
say "a DTLS sensor container and the host's DTLS client (PSK bed-3) reached the upstream broker"

# The traffic monitor on the host's network, reading the Linux bridge of the ward network (its
# promiscuous mode makes the bridge see frames between the containers).
ward_bridge="br-$(docker network inspect -f '{{.Id}}' "${project}_ward" | cut -c1-12)"
MONITOR_HTTP_PORT=$(free_port SOCK_STREAM)
export MONITOR_INTERFACE="$ward_bridge" MONITOR_HTTP_PORT
COMPOSE_PROFILES=upstream,monitoring,monitor dc up -d monitor >/dev/null 2>&1 || { COMPOSE_PROFILES=upstream,monitoring,monitor dc up -d monitor; fail "the monitor did not start"; }
for _ in $(seq 1 60); do
  [ "$(health monitor)" = healthy ] && break
  sleep 1
done
[ "$(health monitor)" = healthy ] || fail "the monitor is not healthy: $(health monitor)"
dc run --rm -T --no-deps -e DEVICE=bed-monitored -e COUNT=3 -e INTERVAL=0 bed-1 >/dev/null 2>&1 \
  || fail "the monitored sensor's readings were not acknowledged"
monitor_metric() {
  curl -s "http://127.0.0.1:$MONITOR_HTTP_PORT/metrics" | awk -v m="$1" '$1 == m {print int($2)}'
}
seen=0
for _ in $(seq 1 30); do
  seen=$(monitor_metric wardgate_monitor_interface_datagrams_total)
  [ "${seen:-0}" -ge 6 ] && break
  sleep 1
done
[ "${seen:-0}" -ge 6 ] || fail "the monitor saw ${seen:-0} CoAP datagrams on $ward_bridge, expected at least 6"
captured=$(monitor_metric wardgate_monitor_capture_packets_total)
[ "${captured:-0}" -ge 6 ] || fail "the monitor captured ${captured:-0} datagrams"
say "the monitor on $ward_bridge saw $seen CoAP datagrams of the sensor container and captured $captured"
COMPOSE_PROFILES=upstream,monitoring,monitor dc rm -sf monitor >/dev/null 2>&1 || fail "removing the monitor"

# Cut uplinks off from the upstream, so acknowledged readings wait in its outbox; kill it.
uplinks=$(dc ps -q uplinks)
cloud_net="${project}_cloud"
docker network disconnect "$cloud_net" "$uplinks"
n=40
for v in $(seq 1 $n); do post bed-kill "$v" || fail "reading $v not acknowledged while upstream is cut off"; done
held=0
for _ in $(seq 1 60); do
  held=$(curl -s "http://127.0.0.1:$UPLINKS_HTTP_PORT/metrics" | awk '$1 == "wardgate_store_depth_readings" {print int($2)}')
  [ "${held:-0}" -ge $n ] && break
  sleep 1
done
[ "${held:-0}" -ge $n ] || fail "uplinks holds ${held:-0} readings, expected $n"
docker kill -s KILL "$uplinks" >/dev/null
say "uplinks killed holding $held acknowledged readings"
docker network connect "$cloud_net" "$uplinks"
docker start "$uplinks" >/dev/null
wait_received '"device":"bed-kill"' $n 90 || fail "after the kill only $(grep -c '"device":"bed-kill"' "$work/received") of $n arrived"
for v in $(seq 1 $n); do
  grep -q "\"device\":\"bed-kill\".*\"v\":$v\.0\b\|\"device\":\"bed-kill\".*\"v\":$v[,}]" "$work/received" \
    || fail "reading $v of bed-kill was lost"
done
say "all $n readings acknowledged before the kill arrived"

COMPOSE_PROFILES=upstream,ward,secure,mqtt,monitor,monitoring,simulate dc down -v --remove-orphans >/dev/null 2>&1 || fail "docker-compose down -v"
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"; docker volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "down -v left: $left"
say "down -v removed every container and volume"
say "PASS"
