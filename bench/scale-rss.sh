#!/usr/bin/env bash
# bench/scale-rss.sh - memory of a running gateway by the number of hosts in its table (issue 9, issue 21: 10,000
# hosts must cost under 10 MiB more than 1 host).
#
#   bench/scale-rss.sh                      # 1 and 10,000 hosts, release binary of this checkout
#   HOSTS="1 1000 10000 50000" bench/scale-rss.sh
#   SHAPE=rules bench/scale-rss.sh          # the reference harness's manifest (see below)
#   SHAPE=cluster bench/scale-rss.sh        # cluster mode: the objects served by the fake API server
#   PORTICO_BIN=/path/to/portico FAKE_APISERVER_BIN=/path/to/fake-apiserver bench/scale-rss.sh
#
# Shapes (SHAPE, default "ingresses"):
#   ingresses  file mode; one file: one Service with a named port, one EndpointSlice, one Ingress per host (the
#              hosts_10k scenario of bench/run.sh)
#   rules      file mode; the file the reference harness (../shared/bench/peers.sh) hands the gateway as
#              BENCH_INGRESS_YAML: a headless Service with a numbered port, its EndpointSlice, a TLS Secret and
#              ONE Ingress with a rule per host
#   cluster    cluster mode (`portico run --kubeconfig`); the `fake-apiserver` binary (crates/fake-apiserver)
#              serves an IngressClass, the Service, the EndpointSlice and one Ingress per host, loaded before
#              Portico starts
# Each size: a fresh `portico run` (one worker, no access log), started alone; once /readyz answers it idles
# SETTLE seconds, then VmRSS, Pss (smaps_rollup) and VmHWM of the Portico process are read (the fake API server's
# memory is not counted). Prints a markdown table; growth is against the first size.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shape=${SHAPE:-ingresses}
bin=${PORTICO_BIN:-}
if [[ -z $bin ]]; then
  (cd "$here/.." && cargo build --release --bin portico >&2)
  bin=${CARGO_TARGET_DIR:-$here/../target}/release/portico
fi
fake=${FAKE_APISERVER_BIN:-}
if [[ $shape == cluster && -z $fake ]]; then
  (cd "$here/.." && cargo build --release -p portico-fake-apiserver >&2)
  fake=${CARGO_TARGET_DIR:-$here/../target}/release/fake-apiserver
fi
sizes=${HOSTS:-1 10000}
settle=${SETTLE:-2}
work=$(mktemp -d)
fake_pid=
cleanup() {
  [[ -n $fake_pid ]] && kill "$fake_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "$2"; }

endpoint_slice_yaml() { # the one endpoint every host routes to (a closed port: nothing is sent)
  cat <<'EOF'
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
}

upstream_yaml() { # the Service and EndpointSlice every host routes to
  cat <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
---
EOF
  endpoint_slice_yaml
}

ingresses_yaml() { # n: one Ingress per host
  awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) {
      printf "%sapiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: r%05d, namespace: bench}\n", (i ? "---\n" : ""), i
      printf "spec:\n  ingressClassName: bench\n  rules:\n  - host: h%05d.bench.example\n    http:\n      paths:\n", i
      printf "      - {path: /, pathType: Prefix, backend: {service: {name: upstream, port: {name: http}}}}\n" } }'
}

rules_yaml() { # n: what peers.sh's gen_ingress_yaml writes for a plain-HTTP scenario
  local crt key
  crt=$(printf 'certificate' | base64 -w0)
  key=$(printf 'key' | base64 -w0)
  if command -v openssl >/dev/null; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/tls.key" 2>/dev/null
    openssl req -new -x509 -key "$work/tls.key" -out "$work/tls.crt" -days 30 -subj "/CN=bench.localhost" \
      -addext "subjectAltName=DNS:bench.localhost,DNS:*.localhost" 2>/dev/null
    crt=$(base64 -w0 "$work/tls.crt")
    key=$(base64 -w0 "$work/tls.key")
  fi
  cat <<EOF
# generated like peers.sh: routes of this scenario as Kubernetes manifests
apiVersion: v1
kind: Service
metadata: {name: upstream, namespace: bench}
spec:
  clusterIP: None
  ports: [{name: http, port: 9, targetPort: 9}]
---
EOF
  endpoint_slice_yaml
  cat <<EOF
---
apiVersion: v1
kind: Secret
metadata: {name: bench-tls, namespace: bench}
type: kubernetes.io/tls
data:
  tls.crt: $crt
  tls.key: $key
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: bench}
spec:
  ingressClassName: bench
  rules:
EOF
  awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) {
      printf "  - host: r%05d.localhost\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n", i
      printf "        backend: {service: {name: upstream, port: {number: 9}}}\n" } }'
}

# Loads multi-document YAML on stdin into the fake API server at $1 (one upsert per object, one connection).
load_objects() {
  python3 -c '
import sys, json, http.client, yaml
c = http.client.HTTPConnection(sys.argv[1])
for doc in yaml.safe_load_all(sys.stdin):
    if not doc:
        continue
    c.request("POST", "/__control/objects", json.dumps(doc), {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"upsert failed: {r.status}")
' "$1"
}

echo "| hosts ($shape) | VmRSS MiB | Pss MiB | VmHWM MiB | Pss growth vs first MiB | ready after s |"
echo "|---|---|---|---|---|---|"
base=
for n in $sizes; do
  dir=$work/$n
  mkdir -p "$dir/m"
  http=$(free_port)
  admin=$(free_port)
  printf 'listenerSets:\n  - name: default\n    ingressClasses: [bench]\n    http: ["127.0.0.1:%s"]\nadmin: { address: "127.0.0.1:%s" }\n' \
    "$http" "$admin" >"$dir/portico.yaml"
  case $shape in
    ingresses)
      { upstream_yaml; echo ---; ingresses_yaml "$n"; } >"$dir/m/ingresses.yaml"
      source_args=(--manifests "$dir/m") ;;
    rules)
      rules_yaml "$n" >"$dir/m/bench.yaml"
      source_args=(--manifests "$dir/m") ;;
    cluster)
      "$fake" --kubeconfig "$dir/kubeconfig" >/dev/null 2>"$dir/fake.log" &
      fake_pid=$!
      until [[ -s $dir/kubeconfig ]]; do sleep 0.05; done
      server=$(awk '/server:/ { sub("http://", "", $2); print $2; exit }' "$dir/kubeconfig")
      { printf 'apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: bench}\n'
        printf 'spec: {controller: portico.dev/ingress-controller}\n---\n'
        upstream_yaml; echo ---; ingresses_yaml "$n"; } | load_objects "$server"
      source_args=(--kubeconfig "$dir/kubeconfig") ;;
    *) echo "unknown SHAPE $shape (ingresses, rules, cluster)" >&2; exit 2 ;;
  esac
  started=$(date +%s.%N)
  "$bin" run "${source_args[@]}" --config "$dir/portico.yaml" --workers 1 --access-log off >"$dir/log" 2>&1 &
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
  if [[ -n $fake_pid ]]; then
    kill "$fake_pid"
    wait "$fake_pid" 2>/dev/null || true
    fake_pid=
  fi
  base=${base:-$pss}
  awk -v n="$n" -v r="$rss" -v p="$pss" -v h="$hwm" -v b="$base" -v t="$ready" \
    'BEGIN { printf "| %d | %.1f | %.1f | %.1f | %+.1f | %.2f |\n", n, r/1024, p/1024, h/1024, (p-b)/1024, t }'
done
