#!/usr/bin/env bash
# Quick start: a local Distribution registry on 127.0.0.1:5000 and regkeeper in front of it on
# 127.0.0.1:5050 (with its embedded index under .regkeeper-demo/). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=${REGKEEPER_DEMO_DIR:-$PWD/.regkeeper-demo}
registry_addr=${REGKEEPER_DEMO_REGISTRY:-127.0.0.1:5000}

if ! command -v docker-registry >/dev/null; then
  echo "installing Debian's docker-registry (CNCF Distribution)…"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y --no-install-recommends docker-registry
fi

mkdir -p "$demo/registry"
cat > "$demo/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $demo/registry}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: $registry_addr
  secret: regkeeper-quickstart
YAML

docker-registry serve "$demo/registry.yml" > "$demo/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://$registry_addr/v2/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://$registry_addr/v2/" >/dev/null || { cat "$demo/registry.log"; exit 1; }
echo "Distribution registry on http://$registry_addr (data in $demo/registry)"

cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-target}
export REGKEEPER_UPSTREAM_URL=${REGKEEPER_UPSTREAM_URL:-http://$registry_addr}
export REGKEEPER_INDEX_PATH=${REGKEEPER_INDEX_PATH:-$demo/index}
cat <<MSG
regkeeper starting in front of it. Push to 127.0.0.1:5050, for example:
  skopeo copy --dest-tls-verify=false docker://… docker://127.0.0.1:5050/demo/app:1
Admin: http://127.0.0.1:9090/readyz   (Ctrl-C stops regkeeper and the registry)
In a second terminal (the commands ask the running serve):
  REGKEEPER_INDEX_PATH=$REGKEEPER_INDEX_PATH $target_dir/release/regkeeper tags --config config/regkeeper.yaml
  REGKEEPER_INDEX_PATH=$REGKEEPER_INDEX_PATH $target_dir/release/regkeeper plan --at +2d --config config/regkeeper.yaml
MSG
"$target_dir/release/regkeeper" serve --config config/regkeeper.yaml
