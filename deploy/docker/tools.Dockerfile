# The helper image of docker-compose.yml: Mosquitto (the bus between the gateway's parts, and
# the test upstream broker) and libcoap's coap-client (the simulated sensors). The local base
# (scripts/docker-images.sh) already has the packages; a registry base installs them.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    if ! command -v mosquitto >/dev/null || ! command -v coap-client-notls >/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            ca-certificates mosquitto mosquitto-clients libcoap3-bin; \
        rm -rf /var/lib/apt/lists/*; \
    fi
COPY bus.conf upstream.conf /etc/mosquitto/wardgate/
COPY broker.sh sensor.sh /usr/local/bin/
