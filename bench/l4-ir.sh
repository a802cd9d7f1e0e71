#!/usr/bin/env bash
# bench/l4-ir.sh - instructions per layer-4 connection (callgrind), Portico or HAProxy `mode tcp`, the setup of
# bench/l4.sh (same configs, same Python backends and client):
#
#   bench/l4-ir.sh BINARY [portico|haproxy] [CONNECTIONS=2000] [tcp_conns|tls_conns]
#   bench/l4-ir.sh /tmp/portico-X portico 1000 tls_conns
#
# The proxy runs under `valgrind --tool=callgrind` on core 1; after 300 warm-up connections the counters are
# zeroed, CONNECTIONS short connections (64 bytes echoed, 32 at a time) run, and the counters are dumped. User
# space only (the kernel's socket work is not counted); valgrind counts each iteration of `rep movsb/stosb`, so a
# memcpy or memset of N bytes shows as about N instructions. Prints the total and per connection, and the dump
# file (python3 bench/l4.py self DUMP N lists the functions by their own cost). Loopback only; stops only what it
# started.
set -euo pipefail
BIN=$1; PEER=${2:-portico}; N=${3:-2000}; TEST=${4:-tcp_conns}
W=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${L4_PORT_BASE:-29100}
D=$(mktemp -d /tmp/portico-l4ir.XXXX)
cd "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem -days 2 \
  -subj /CN=l4-ir -addext "subjectAltName=DNS:sink.l4.test,DNS:echo.l4.test" 2>/dev/null
BK=; PX=
cleanup() { for p in $PX $BK; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 0 python3 "$W/l4.py" backend --cert c.pem --key k.pem > backend.log 2>&1 & BK=$!
PORTICO_BIN=$BIN python3 - <<PY
import sys; sys.path.insert(0, "$W"); import l4
from pathlib import Path
l4.portico_files(Path("."))
Path("haproxy.cfg").write_text(l4.haproxy_conf(False))
PY
vg=(valgrind --tool=callgrind "--callgrind-out-file=$D/cg.out")
if [[ $PEER == portico ]]; then
  RUST_LOG=info,portico::l4=warn taskset -c 1 "${vg[@]}" "$BIN" run --manifests manifests --config portico.yaml \
    --workers 1 --access-log off > px.log 2>&1 & PX=$!
else
  taskset -c 1 "${vg[@]}" haproxy -db -f haproxy.cfg > px.log 2>&1 & PX=$!
fi
port=$((BASE + 12)); extra=()
if [[ $TEST == tls_conns ]]; then port=$((BASE + 13)); extra=(--sni echo.l4.test --ca c.pem); fi
for _ in $(seq 240); do
  if python3 "$W/l4.py" conns --port "$port" --count 1 --concurrency 1 "${extra[@]}" >/dev/null 2>&1; then break; fi
  sleep 1
done
taskset -c 0 python3 "$W/l4.py" conns --port "$port" --count 300 --concurrency 32 "${extra[@]}" >/dev/null
callgrind_control -z "$PX" >/dev/null
taskset -c 0 python3 "$W/l4.py" conns --port "$port" --count "$N" --concurrency 32 "${extra[@]}"
callgrind_control -d "$PX" >/dev/null
sleep 1
f=$(ls -t "$D"/cg.out.* | head -1)
total=$(awk '/^summary:/ {print $2}' "$f")
echo "$PEER $TEST: $total instructions over $N connections = $((total / N)) per connection ($f)"
