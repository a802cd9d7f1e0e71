#!/usr/bin/env bash
# bench/l4.sh - layer 4 (issue #20): Portico's TCP forwarding and TLS passthrough against HAProxy `mode tcp`,
# measured in the same run, each proxy pinned alone to one core.
#
#   bench/l4.sh                                   # 2 rounds x (portico haproxy direct), proxies alternated; ~5 min
#   NO_BUILD=1 PORTICO_BIN=/tmp/portico-X bench/l4.sh        # a copied-out binary
#   PEERS="portico haproxy haproxy_splice direct" bench/l4.sh  # add HAProxy with `option splice-auto`
#   TESTS="tcp_conns" CONNS=2000 ROUNDS=1 bench/l4.sh         # narrow
#   python3 bench/l4.py report bench/results/l4-<time>        # re-render a report from its raw data
#
# Tests: tcp_stream tcp_conns tls_stream tls_conns (see bench/l4.py for what each does).
# Knobs (environment): PEERS, TESTS, ROUNDS (2), STREAM_GIB (2), TLS_STREAM_GIB (STREAM_GIB, else 1),
#   CONNS (20000), TLS_CONNS (3000), CONCURRENCY (32), PAYLOAD (64), CHUNK (1 MiB), PROXY_CPU (1), LOAD_CPU (0),
#   NICE (-10), L4_LOG (0: Portico's per-connection log line off, as HAProxy without `log`), L4_PORT_BASE (29100),
#   OUT, NO_BUILD=1, PORTICO_BIN, PORTICO_B_BIN (the binary of peer portico_b, for an A/B of two builds).
# Output: a markdown report on stdout; raw data and the proxies' logs under bench/results/l4-<time>/.
#
# Needs haproxy, openssl, taskset and python3 (installed with apt-get when missing; root for nice -10).
# Everything listens on 127.0.0.1; every load run is bounded; only processes this run started are stopped.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export PORTICO_BIN=${PORTICO_BIN:-$CARGO_TARGET_DIR/release/portico}
export PATH=$HOME/.cargo/bin:$PATH

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

if [[ ${NO_BUILD:-0} != 1 ]]; then
  log "cargo build --release (target: $CARGO_TARGET_DIR)"
  (cd "$REPO" && cargo build --release --quiet)
fi
[[ -x $PORTICO_BIN ]] || { log "ERROR: no binary at $PORTICO_BIN"; exit 1; }

exec python3 "$BENCH_DIR/l4.py" run "$@"
