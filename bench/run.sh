#!/usr/bin/env bash
# bench/run.sh - Portico vs nginx vs HAProxy on this machine, measured in the same run.
#
#   bench/run.sh                      # full run (about 25-30 min on 2 cores)
#   QUICK=1 bench/run.sh              # smoke test (a few minutes): 3 scenarios, short windows
#   SCENARIOS="h1_keepalive body_1m" PEERS="nginx portico" DURATION=5 bench/run.sh
#   IR=0 bench/run.sh                 # skip the callgrind instructions/request phase
#
# Scenarios: h1_keepalive h1_close tls_keepalive tls_handshake body_1m h2_tls hosts_10k idle_10k
# Peers:     nginx haproxy portico (and "direct": an nginx origin in the proxy's slot, the floor)
# Other knobs (environment): WARMUP, IR_WINDOW, IR_SCENARIOS, RATE_<scenario>, PROXY_CPU, LOAD_CPU, NICE,
#   NOISY_CORES, NOISY_RETRIES, QUIET_MAX_WAIT, N_HOSTS, N_IDLE, PORTICO_TLS (auto|0), OUT, NO_BUILD=1,
#   FEATURES=0 (skip the features' scenarios: filters, regex paths, rewrites, error pages, layer 4),
#   FEATURE_SCENARIOS, L4_IR_CONNS.
# Output: a markdown report on stdout; raw data, configs and callgrind dumps under bench/results/<time>/.
#
# Needs root (apt-get, nice -10, raising the open-file limit). Everything listens on 127.0.0.1.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export PORTICO_BIN=${PORTICO_BIN:-$CARGO_TARGET_DIR/release/portico}
export PATH=$HOME/.cargo/bin:$PATH

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- tools (idempotent)
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v valgrind >/dev/null || need+=(valgrind)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if ! command -v oha >/dev/null; then
  # oha: the fixed-rate (open-loop, latency-corrected) load generator; the reference harness uses 1.16.0
  log "cargo install oha (first time only; several minutes)"
  cargo install --locked oha --version "${OHA_VERSION:-1.16.0}" >/dev/null 2>&1 \
    || cargo install --locked oha >/dev/null 2>&1 \
    || { log "ERROR: cargo install oha failed; the fixed-rate figures need it"; exit 1; }
fi

# ---- Portico, release build
if [[ ${NO_BUILD:-0} != 1 ]]; then
  log "cargo build --release (target: $CARGO_TARGET_DIR)"
  (cd "$REPO" && cargo build --release --quiet)
fi
[[ -x $PORTICO_BIN ]] || { log "ERROR: no binary at $PORTICO_BIN"; exit 1; }

# 10,000 idle connections need file descriptors (proxy, origin and client each hold them)
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

python3 "$BENCH_DIR/harness.py" "$@"

# ---- the features' own scenarios (issue #21): Portico alone under callgrind, each feature against the same route
# without it (filters, regex paths and rewrites, custom error pages), then layer-4 connections (TCP forwarding
# and TLS passthrough, bench/l4-ir.sh; bench/l4.sh compares them with HAProxy). Not in QUICK runs; FEATURES=0
# skips them.
if [[ ${FEATURES:-1} != 0 && ${QUICK:-0} != 1 && ${IR:-1} != 0 ]]; then
  log "feature scenarios (callgrind, Portico alone)"
  echo
  echo "## Features: instructions per request (callgrind, Portico alone, keep-alive HTTP/1.1, 64 connections)"
  echo
  # shellcheck disable=SC2086
  python3 "$BENCH_DIR/ir.py" --table ${FEATURE_SCENARIOS:-f_none f_basic f_fwd_cached f_fwd f_cors_preflight \
    f_cors_simple f_ratelimit f_deny f_regex f_rewrite f_404 f_errpage} 2>/dev/null
  echo
  echo "## Layer 4: instructions per connection (callgrind, 64 bytes echoed per connection)"
  echo
  for t in tcp_conns tls_conns; do
    "$BENCH_DIR/l4-ir.sh" "$PORTICO_BIN" portico "${L4_IR_CONNS:-1000}" "$t" 2>/dev/null | tail -1 | sed 's/^/    /'
  done
fi
