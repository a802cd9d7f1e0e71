#!/usr/bin/env bash
# bench/churn.sh - zero-drop load test: Portico in file mode on loopback while its manifests change every
# 100 ms and endpoints come and go, with a fixed-rate client; prints total and failed requests.
#
#   bench/churn.sh                 # 30 s at 200 requests/s, release build
#   PROFILE=dev bench/churn.sh     # without --release (quicker to build, slower to run)
#
# What happens (tests/resilience.rs, `churn`): six backend slots on loopback, two always up; every 100 ms the
# manifest file is rewritten: the Ingress's annotations change (a header value every step, the balancing
# policy every second, an extra host in turn), and one of the four cycling slots moves on in its life: listed
# in the EndpointSlice before its server listens (connections refused: retried on another endpoint), started,
# removed from the slice, stopped gracefully half a second later (in-flight requests finish, as on SIGTERM).
# The client sends GETs at a fixed rate; a request fails on any status but 200, a broken body or 10 s
# without an answer. The run fails unless every request succeeded. The same code runs for 4 s in CI
# (`no_request_fails_while_manifests_and_endpoints_churn`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=$HOME/.cargo/bin:$PATH
release=--release
[[ ${PROFILE:-release} == dev ]] && release=
cd "$REPO"
exec cargo test $release --quiet --test resilience churn_load_test -- --ignored --nocapture --test-threads 1
