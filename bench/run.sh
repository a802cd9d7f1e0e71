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
#   NOISY_CORES, NOISY_RETRIES, QUIET_MAX_WAIT, N_HOSTS, N_IDLE, PORTICO_TLS (auto|0), OUT, NO_BUILD=1.
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

exec python3 "$BENCH_DIR/harness.py" "$@"
