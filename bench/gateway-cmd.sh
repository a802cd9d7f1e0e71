#!/usr/bin/env bash
# bench/gateway-cmd.sh - runs Portico under the reference harness's GATEWAY_CMD contract.
#
#   GATEWAY_CMD=/abs/path/to/bench/gateway-cmd.sh PEERS="nginx haproxy gateway" ./peers.sh
#
# Reads the BENCH_* variables (ports, upstream, route list, the same routes as manifests), writes a Portico
# config and a manifest directory into BENCH_RUN_DIR, and execs `portico run` in the foreground (SIGTERM stops
# it). Routing: BENCH_INGRESS_YAML is used as it is when `portico check` accepts it without a diagnostic and
# routes the first Host of BENCH_HOSTS_FILE; otherwise the manifests are generated from BENCH_HOSTS_FILE (one
# Service with a named port, one EndpointSlice carrying kubernetes.io/service-name and the same port name, one
# Ingress per Host). Either way only the listed Hosts are routed: any other Host gets 404.
# TLS: with BENCH_HTTPS_PORT set, the set gets an `https:` listener and the given Ingress (which names the
# harness's TLS Secret) is served on both ports, its HTTP-to-HTTPS redirect turned off (the harness checks both).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${PORTICO_BIN:-$here/../target/release/portico}
dir=${BENCH_RUN_DIR:?BENCH_RUN_DIR not set}/portico
: "${BENCH_HTTP_PORT:?}" "${BENCH_UPSTREAM:?}" "${BENCH_HOSTS_FILE:?}"
rm -rf "$dir"
mkdir -p "$dir/manifests"

class=bench
{
  echo "listenerSets:"
  echo "  - name: default"
  echo "    ingressClasses: [$class]"
  echo "    http: [\"127.0.0.1:$BENCH_HTTP_PORT\"]"
  [[ -n ${BENCH_HTTPS_PORT:-} ]] && echo "    https: [\"127.0.0.1:$BENCH_HTTPS_PORT\"]"
  echo "admin: { address: \"127.0.0.1:${BENCH_ADMIN_PORT:-0}\" }"
} >"$dir/portico.yaml"

first_host=$(head -n 1 "$BENCH_HOSTS_FILE")
use_given=0
if [[ -n ${BENCH_INGRESS_YAML:-} && -r $BENCH_INGRESS_YAML ]]; then
  if [[ -n ${BENCH_HTTPS_PORT:-} ]]; then
    # The harness waits for a 200 on the plain port in TLS scenarios too, while an Ingress with TLS redirects
    # plain HTTP to HTTPS (308), as ingress-nginx does: the redirect is turned off by its ingress-nginx name.
    awk '/^kind: Ingress$/ { ingress = 1 }
         ingress && /^metadata: \{/ {
           sub(/^metadata: \{/, "metadata: {annotations: {nginx.ingress.kubernetes.io/ssl-redirect: \"false\"}, ")
           ingress = 0
         }
         { print }' "$BENCH_INGRESS_YAML" >"$dir/manifests/bench.yaml"
  else
    cp "$BENCH_INGRESS_YAML" "$dir/manifests/bench.yaml"
  fi
  if "$bin" check --manifests "$dir/manifests" --config "$dir/portico.yaml" >"$dir/check.txt" 2>&1 \
    && grep -qF "$first_host" "$dir/check.txt"; then
    use_given=1
  else
    rm -f "$dir/manifests/bench.yaml"
  fi
fi

if ((!use_given)); then
  up_host=${BENCH_UPSTREAM%:*}
  up_port=${BENCH_UPSTREAM##*:}
  cat >"$dir/manifests/upstream.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: upstream-1
  namespace: bench
  labels: {kubernetes.io/service-name: upstream}
addressType: IPv4
ports: [{name: http, port: $up_port, protocol: TCP}]
endpoints: [{addresses: ["$up_host"], conditions: {ready: true}}]
EOF
  awk -v class="$class" '
    NF { printf "%sapiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: r%05d, namespace: bench}\n", (n ? "---\n" : ""), n
         printf "spec:\n  ingressClassName: %s\n  rules:\n  - host: %s\n    http:\n      paths:\n", class, $1
         printf "      - {path: /, pathType: Prefix, backend: {service: {name: upstream, port: {name: http}}}}\n"
         n++ }' "$BENCH_HOSTS_FILE" >"$dir/manifests/ingresses.yaml"
fi
echo "portico adapter: manifests $([[ $use_given == 1 ]] && echo "from BENCH_INGRESS_YAML" || echo "generated from BENCH_HOSTS_FILE")" >&2

exec "$bin" run --manifests "$dir/manifests" --config "$dir/portico.yaml" --workers "${BENCH_WORKERS:-1}" --access-log off
