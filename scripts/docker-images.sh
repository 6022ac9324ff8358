#!/usr/bin/env bash
# Builds every image docker-compose.yml needs without any image registry (air-gapped sites, and
# this project's CI): the bases come from Debian packages through debootstrap, the gateway binary
# from the host's cargo.
#
#   wardgate-base/debian:bookworm  debootstrap --variant=minbase + Mosquitto + libcoap's tools
#   wardgate-base/cc:bookworm      only glibc, libgcc, CA roots and a nonroot user (like distroless/cc)
#   wardgate:local                 the gateway (Dockerfile, PREBUILT=1 on the cc base)
#   wardgate-tools:local           Mosquitto for the bus and the test upstream, coap-client for sensors
#   wardgate-prometheus:local      Prometheus for the `monitoring` profile (Debian's package on the
#                                  Debian base, installed from the mirror at build time)
#
# Usage: scripts/docker-images.sh [--rebuild-bases]
# Needs root (debootstrap) and Docker; installs debootstrap with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
DEBIAN_IMAGE=wardgate-base/debian:$SUITE
CC_IMAGE=wardgate-base/cc:$SUITE

rebuild=0
[ "${1:-}" = "--rebuild-bases" ] && rebuild=1

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ $rebuild = 1 ] || ! have_image "$DEBIAN_IMAGE" || ! have_image "$CC_IMAGE"; then
  command -v debootstrap >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
  }
  work=$(mktemp -d /var/tmp/wardgate-rootfs.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  root="$work/rootfs"
  echo "debootstrap $SUITE (minbase) from $MIRROR"
  debootstrap --variant=minbase \
    --include=ca-certificates,mosquitto,mosquitto-clients,libcoap3-bin \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  tar -C "$root" -c . | docker import - "$DEBIAN_IMAGE" >/dev/null
  echo "made $DEBIAN_IMAGE"

  # The runtime base: the files of libc6 and libgcc-s1, the CA bundle, a nonroot user.
  cc="$work/cc"
  mkdir -p "$cc/etc/ssl/certs" "$cc/tmp" "$cc/home/nonroot"
  chmod 1777 "$cc/tmp"
  # usrmerge: /lib and /lib64 are links into /usr in bookworm (made first, so
  # the package paths under /lib land in /usr/lib).
  for l in lib lib64 bin sbin; do
    if [ -L "$root/$l" ]; then
      mkdir -p "$cc/usr/$l"
      cp -a "$root/$l" "$cc/$l"
    fi
  done
  chroot "$root" dpkg-query -L libc6 libgcc-s1 | while read -r f; do
    if [ -f "$root$f" ] || [ -L "$root$f" ]; then
      mkdir -p "$cc$(dirname "$f")"
      cp -a "$root$f" "$cc$f"
    fi
  done
  cp "$root/etc/ssl/certs/ca-certificates.crt" "$cc/etc/ssl/certs/"
  cp "$root/etc/os-release" "$cc/etc/os-release" 2>/dev/null || cp "$root/usr/lib/os-release" "$cc/etc/os-release"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$cc/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$cc/etc/group"
  chown 65532:65532 "$cc/home/nonroot"
  # Locales, gconv modules and docs are not needed by a Rust binary.
  rm -rf "$cc/usr/share/doc" "$cc/usr/share/lintian" "$cc/usr/lib/x86_64-linux-gnu/gconv" \
    "$cc/usr/lib/aarch64-linux-gnu/gconv" "$cc/usr/share/locale"
  tar -C "$cc" -c . | docker import - "$CC_IMAGE" >/dev/null
  echo "made $CC_IMAGE"
fi

echo "building the gateway binary (release)"
cargo build --release --locked -p wardgate
# The release profile keeps line tables for profiling; the image does not need them.
mkdir -p target/docker
strip -o target/docker/wardgate target/release/wardgate

docker build -q -t wardgate:local \
  --build-arg BUILDER_IMAGE="$DEBIAN_IMAGE" \
  --build-arg RUNTIME_IMAGE="$CC_IMAGE" \
  --build-arg PREBUILT=1 . >/dev/null
docker build -q -t wardgate-tools:local \
  --build-arg BASE_IMAGE="$DEBIAN_IMAGE" \
  -f deploy/docker/tools.Dockerfile deploy/docker >/dev/null
docker build -q -t wardgate-prometheus:local \
  --build-arg BASE_IMAGE="$DEBIAN_IMAGE" \
  -f deploy/docker/prometheus.Dockerfile deploy >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^wardgate'
