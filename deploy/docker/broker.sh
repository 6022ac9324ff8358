#!/bin/sh
# Starts Mosquitto with one of the configs in /etc/mosquitto/wardgate; with MQTT_USER and
# MQTT_PASSWORD set, writes the password file the config names first.
set -eu
conf="/etc/mosquitto/wardgate/${1:?usage: broker.sh bus|upstream}.conf"
mkdir -p /run/mosquitto /var/lib/mosquitto
if [ -n "${MQTT_USER:-}" ]; then
  : "${MQTT_PASSWORD:?MQTT_PASSWORD is required with MQTT_USER}"
  umask 077
  mosquitto_passwd -c -b /run/mosquitto/passwd "$MQTT_USER" "$MQTT_PASSWORD"
fi
chown -R mosquitto:mosquitto /run/mosquitto /var/lib/mosquitto
exec /usr/sbin/mosquitto -c "$conf"
