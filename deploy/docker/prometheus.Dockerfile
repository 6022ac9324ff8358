# Prometheus for the Compose `monitoring` profile: Debian's package (installed from the Debian
# mirror, which air-gapped sites mirror anyway), with the scrape configuration of every gateway
# part. Documentation, locales, the apt cache and moment-timezone's per-zone files (the UI loads
# the bundled file) are removed: ~110 MB over the Debian base instead of ~430 MB.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/share/locale/*; \
    # The UI loads moment-timezone-with-data.min.js; the per-zone data files are 212 MB.
    rm -rf /usr/share/javascript/moment-timezone/data; \
    mkdir -p /var/lib/prometheus
# Built with deploy/ as the context: the scrape configuration and the alert rules.
COPY docker/prometheus.yml /etc/prometheus/wardgate.yml
COPY prometheus/alerts.yml /etc/prometheus/alerts.yml
EXPOSE 9090/tcp
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/wardgate.yml", "--storage.tsdb.path=/var/lib/prometheus/wardgate", "--web.listen-address=0.0.0.0:9090"]
