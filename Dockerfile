# wardgate container image: one image for every part of the gateway (`run --only <part>`).
#
# Two ways to build it (README "Containers"):
# - with a registry:   docker build -t wardgate .
#   compiles in the official Rust image and runs on distroless/cc (glibc, CA roots, nonroot).
# - air-gapped:        scripts/docker-images.sh
#   makes both bases locally with debootstrap (no registry), compiles on the host and passes
#   BUILDER_IMAGE=wardgate-base/debian, RUNTIME_IMAGE=wardgate-base/cc, PREBUILT=1.
# The classic builder (no BuildKit) builds every stage, so both paths use the same two stages.

ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder
# 1: use target/docker/wardgate from the build context (built and stripped on a bookworm host by
# scripts/docker-images.sh) instead of compiling here.
ARG PREBUILT=0
WORKDIR /src
COPY . .
# The release profile keeps line tables for profiling; the image does not need them (100 MB to 19 MB).
RUN set -eu; \
    mkdir -p /staging/usr/local/bin; \
    if [ "$PREBUILT" = 1 ]; then \
        test -x target/docker/wardgate || { echo "PREBUILT=1 needs target/docker/wardgate: run scripts/docker-images.sh" >&2; exit 1; }; \
        cp target/docker/wardgate /staging/usr/local/bin/wardgate; \
    else \
        CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
            cargo build --release --locked -p wardgate; \
        cp target/release/wardgate /staging/usr/local/bin/wardgate; \
    fi; \
    mkdir -p /staging/var/lib/wardgate /staging/etc/wardgate; \
    cp deploy/docker/gateway.toml deploy/docker/gateway-dtls.toml deploy/docker/monitor.toml \
        deploy/docker/simulate.toml /staging/etc/wardgate/; \
    mkdir -p /staging/etc/wardgate-registry; \
    cp deploy/docker/devices.toml /staging/etc/wardgate-registry/; \
    chmod 700 /staging/etc/wardgate-registry; chmod 600 /staging/etc/wardgate-registry/devices.toml; \
    chown -R 65532:65532 /staging/var/lib/wardgate /staging/etc/wardgate-registry

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /staging/usr/local/bin/wardgate /usr/local/bin/wardgate
COPY --from=builder /staging/etc/wardgate /etc/wardgate
# The registry of the `secure` Compose profile: readable by the gateway's user only.
COPY --from=builder --chown=65532:65532 /staging/etc/wardgate-registry /etc/wardgate/registry
COPY --from=builder --chown=65532:65532 /staging/var/lib/wardgate /var/lib/wardgate
# The outbox, LwM2M registrations and audit trail: keep them on a volume.
VOLUME ["/var/lib/wardgate"]
USER 65532:65532
ENV WARDGATE_CONFIG=/etc/wardgate/gateway.toml
# CoAP, CoAP over DTLS, health/metrics, admin API, HTTPS ingest.
EXPOSE 5683/udp 5684/udp 8080/tcp 8443/tcp 9443/tcp
# SIGTERM drains: ingest stops, uplinks finish in-flight deliveries, the outbox closes cleanly
# (each phase bounded by 10 s; give `docker stop -t 45`).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/wardgate", "probe"]
ENTRYPOINT ["/usr/local/bin/wardgate"]
CMD ["run"]
