#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: deterministic for a given binary, so
# two builds can be compared without the noise of wall-clock benchmarks on a shared machine.
# nginx answers a fixed manifest as the upstream, with the fields Distribution adds to one;
# regkeeper (release build) runs under callgrind in front of it; wrk drives it. Prints
# user-space instructions per request.
#   benches/callgrind.sh [SECONDS]        (needs valgrind, nginx-light, wrk)
#   PROXY=nginx benches/callgrind.sh      the same with nginx as the proxy (one worker,
#                                         upstream keep-alive, access log on): the reference
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); px=$(port); adm=$(port)
cat > "$work/nginx.conf" <<NGINX
$( [ "$(id -u)" = 0 ] && echo "user root;" )
worker_processes 1; master_process off; daemon off;
pid $work/nginx.pid; error_log $work/error.log warn;
events { worker_connections 1024; }
http {
  access_log off; keepalive_requests 10000000;
  client_body_temp_path $work/b; proxy_temp_path $work/p; fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  server { listen 127.0.0.1:$up;
    location / { default_type application/vnd.oci.image.manifest.v1+json;
      add_header Docker-Content-Digest sha256:0b3ed3ab5e7e3d3b0ab3aa3a2e9d4e5d8e2c34f7bd1b0e4f30c1f13f0ab6a1c2;
      add_header Docker-Distribution-Api-Version registry/2.0;
      add_header X-Content-Type-Options nosniff;
      return 200 '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'; } }
}
NGINX
nginx -p "$work" -c "$work/nginx.conf" &
if [ "${PROXY:-regkeeper}" = nginx ]; then
  cat > "$work/proxy.conf" <<NGINX
$( [ "$(id -u)" = 0 ] && echo "user root;" )
worker_processes 1; master_process off; daemon off;
pid $work/proxy.pid; error_log $work/proxy-error.log warn;
events { worker_connections 1024; }
http {
  access_log $work/access.log; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $work/b2; proxy_temp_path $work/p2; fastcgi_temp_path $work/f2; uwsgi_temp_path $work/u2; scgi_temp_path $work/s2;
  upstream up { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$px;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; } }
}
NGINX
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    nginx -p "$work" -c "$work/proxy.conf" 2> "$work/proxy.log" &
  probe=/v2/app/manifests/latest stop=-QUIT
else
  cat > "$work/regkeeper.yaml" <<YAML
listen: 127.0.0.1:$px
workers: 1
upstream: {url: "http://127.0.0.1:$up"}
admin: {listen: "127.0.0.1:$adm"}
index: {path: $work/index}
log: {level: info, requests: true}
YAML
  # --fair-sched: sled spin-waits on a lazy static, which under valgrind's default scheduler
  # can starve the thread that would finish initialising it.
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/cg.out" \
    "$target/release/regkeeper" serve --config "$work/regkeeper.yaml" 2> "$work/proxy.log" &
  probe=/v2/ stop=-INT
fi
rk=$!
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$px$probe" -o /dev/null 2>/dev/null && break; sleep 0.3; done
curl -fsS "http://127.0.0.1:$px$probe" -o /dev/null || { echo "the proxy did not come up:"; cat "$work/proxy.log"; exit 1; }
requests=$(wrk -t1 -c8 -d"${seconds}s" "http://127.0.0.1:$px/v2/app/manifests/latest" | awk '/requests in/ {print $1}')
kill $stop $rk; wait $rk || true
total=$(awk '/^summary:/ {print $2}' "$work/cg.out")
[ -n "${KEEP:-}" ] && cp "$work/cg.out" "$KEEP"
echo "requests: $requests  instructions: $total  per request: $((total / requests))"
