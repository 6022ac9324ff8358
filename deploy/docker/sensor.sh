#!/bin/sh
# A simulated bedside sensor (docker-compose.yml profile `ward`): posts SenML SpO2 and heart-rate
# readings over CoAP to the gateway every INTERVAL seconds, COUNT times (0: for ever).
set -eu
target="${GATEWAY:-coap}"
device="${DEVICE:-bed-1}"
interval="${INTERVAL:-2}"
count="${COUNT:-0}"
i=0
while [ "$count" -eq 0 ] || [ "$i" -lt "$count" ]; do
  spo2=$((94 + i % 5))
  hr=$((60 + i % 20))
  coap-client-notls -m post -t 110 -B 10 \
    -e "[{\"bn\":\"$device/\",\"n\":\"spo2\",\"u\":\"%25\",\"v\":$spo2},{\"n\":\"hr\",\"u\":\"beat/min\",\"v\":$hr}]" \
    "coap://$target/v1/readings/$device" >/dev/null || echo "$device: reading $i not acknowledged" >&2
  i=$((i + 1))
  sleep "$interval"
done
