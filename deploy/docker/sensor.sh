#!/bin/sh
# A simulated bedside sensor (docker-compose.yml profiles `ward` and `secure`): posts SenML SpO2
# and heart-rate readings over CoAP to the gateway every INTERVAL seconds, COUNT times (0: for
# ever). With PSK set (`text:` and the key, as the device registry holds it) it posts over DTLS
# as identity DEVICE (libcoap's OpenSSL client), else over plain UDP.
set -eu
target="${GATEWAY:-coap}"
device="${DEVICE:-bed-1}"
interval="${INTERVAL:-2}"
count="${COUNT:-0}"
if [ -n "${PSK+set}" ]; then
  case "$PSK" in
    text:*) key="${PSK#text:}" ;;
    *) echo "$device: PSK must be text:<key> (libcoap takes the key's characters)" >&2; exit 64 ;;
  esac
  set -- coap-client-openssl -u "$device" -k "$key"
  uri="coaps://$target/v1/readings/$device"
else
  set -- coap-client-notls
  uri="coap://$target/v1/readings/$device"
fi
i=0
while [ "$count" -eq 0 ] || [ "$i" -lt "$count" ]; do
  spo2=$((94 + i % 5))
  hr=$((60 + i % 20))
  "$@" -m post -t 110 -B 10 \
    -e "[{\"bn\":\"$device/\",\"n\":\"spo2\",\"u\":\"%25\",\"v\":$spo2},{\"n\":\"hr\",\"u\":\"beat/min\",\"v\":$hr}]" \
    "$uri" >/dev/null || echo "$device: reading $i not acknowledged" >&2
  i=$((i + 1))
  sleep "$interval"
done
