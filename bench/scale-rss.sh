#!/usr/bin/env bash
# bench/scale-rss.sh - memory of a running gateway by the number of hosts in its table (issue 9: 10,000 hosts
# must cost under 10 MiB more than 1 host).
#
#   bench/scale-rss.sh                      # 1 and 10,000 hosts, release binary of this checkout
#   HOSTS="1 1000 10000 50000" bench/scale-rss.sh
#   PORTICO_BIN=/path/to/portico bench/scale-rss.sh
#
# Each size: a fresh `portico run` (one worker, no access log) on a manifest directory shaped like the
# hosts_10k scenario of bench/run.sh (one Service with a named port and one EndpointSlice, one Ingress per host,
# all in one file), started alone; once /readyz answers it idles SETTLE seconds, then VmRSS, Pss
# (smaps_rollup) and VmHWM are read. Prints a markdown table; growth is against the first size.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${PORTICO_BIN:-}
if [[ -z $bin ]]; then
  (cd "$here/.." && cargo build --release --bin portico >&2)
  bin=${CARGO_TARGET_DIR:-$here/../target}/release/portico
fi
sizes=${HOSTS:-1 10000}
settle=${SETTLE:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "$2"; }

echo "| hosts | VmRSS MiB | Pss MiB | VmHWM MiB | RSS growth vs first MiB | ready after s |"
echo "|---|---|---|---|---|---|"
base=
for n in $sizes; do
  dir=$work/$n
  mkdir -p "$dir/m"
  http=$(free_port)
  admin=$(free_port)
  printf 'listenerSets:\n  - name: default\n    ingressClasses: [bench]\n    http: ["127.0.0.1:%s"]\nadmin: { address: "127.0.0.1:%s" }\n' \
    "$http" "$admin" >"$dir/portico.yaml"
  cat >"$dir/m/upstream.yaml" <<'EOF'
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
ports: [{name: http, port: 9, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
EOF
  awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) {
      printf "%sapiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: r%05d, namespace: bench}\n", (i ? "---\n" : ""), i
      printf "spec:\n  ingressClassName: bench\n  rules:\n  - host: h%05d.bench.example\n    http:\n      paths:\n", i
      printf "      - {path: /, pathType: Prefix, backend: {service: {name: upstream, port: {name: http}}}}\n" } }' \
    >"$dir/m/ingresses.yaml"
  started=$(date +%s.%N)
  "$bin" run --manifests "$dir/m" --config "$dir/portico.yaml" --workers 1 --access-log off >"$dir/log" 2>&1 &
  pid=$!
  until curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
    sleep 0.05
  done
  ready=$(echo "$(date +%s.%N) - $started" | bc)
  sleep "$settle"
  rss=$(kib VmRSS "/proc/$pid/status")
  hwm=$(kib VmHWM "/proc/$pid/status")
  pss=$(kib Pss "/proc/$pid/smaps_rollup")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  base=${base:-$rss}
  awk -v n="$n" -v r="$rss" -v p="$pss" -v h="$hwm" -v b="$base" -v t="$ready" \
    'BEGIN { printf "| %d | %.1f | %.1f | %.1f | %+.1f | %.2f |\n", n, r/1024, p/1024, h/1024, (r-b)/1024, t }'
done
