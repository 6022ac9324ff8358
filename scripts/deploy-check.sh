#!/usr/bin/env bash
# Checks the deployment files that have no engine here to run them (part of scripts/test.sh):
#   - deploy/k8s: the example overlay renders (kubectl kustomize) and every resource validates
#     against the Kubernetes schemas (kubernetes-validate --strict, from PyPI);
#   - the image's gateway.toml (Compose and Kubernetes) is valid for every part it runs
#     (`wardgate check-config --only <part>`), and its monitor.toml for `wardgate monitor`;
#   - deploy/systemd/wardgate.service passes `systemd-analyze verify`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client
}
python3 -c 'import kubernetes_validate' >/dev/null 2>&1 || {
  python3 -m pip install --quiet "kubernetes-validate==1.37.0" \
    || python3 -m pip install --quiet --break-system-packages "kubernetes-validate==1.37.0"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kubectl kustomize deploy/k8s/overlays/example >"$work/k8s.yaml"
python3 -m kubernetes_validate --strict --quiet "$work/k8s.yaml"
echo "deploy-check: deploy/k8s/overlays/example: $(grep -c '^kind:' "$work/k8s.yaml") resources valid"

cargo build --release --locked -p wardgate -q
wg=target/release/wardgate
for part in coap uplinks mqtt-in; do
  WARDGATE_BUS_PASSWORD=p "$wg" check-config --only "$part" --config deploy/docker/gateway.toml
done
"$wg" check-config --monitor --config deploy/docker/monitor.toml

if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s|/usr/local/bin/wardgate|$PWD/$wg|" deploy/systemd/wardgate.service >"$work/wardgate.service"
  # It reports unknown keys and bad values on stderr but exits 0 for them: any output fails.
  out=$(systemd-analyze verify "$work/wardgate.service" 2>&1) || true
  if [ -n "$out" ]; then
    echo "$out" >&2
    echo "deploy-check: FAIL: deploy/systemd/wardgate.service" >&2
    exit 1
  fi
  echo "deploy-check: deploy/systemd/wardgate.service verifies"
else
  echo "deploy-check: SKIPPED systemd-analyze verify (systemd-analyze not installed)"
fi
echo "deploy-check: PASS"
