#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each, default 30), starting from the corpus
# checked in under fuzz/corpus/TARGET (seeded with issue #22's payloads). New inputs go to a scratch directory,
# not into the repository. A crash fails the script; its input is left in fuzz/artifacts/TARGET/: add it to
# fuzz/corpus/TARGET/ and write a unit test beside the parser before fixing it.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds into target/fuzz (no
# other target directory), without a sanitizer: the crate forbids unsafe code, so the run looks for panics,
# broken invariants (the targets assert them), hangs and runaway memory.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
targets=(request_head response_head chunked proxy_protocol path host annotations manifest htpasswd client_hello cors_origin translate)
if [ "$#" -gt 0 ]; then
  targets=("$@")
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
fuzz=(cargo +nightly fuzz)
common=(--sanitizer none --target-dir "$PWD/target/fuzz")

echo "== cargo fuzz build"
"${fuzz[@]}" build "${common[@]}"
for t in "${targets[@]}"; do
  echo "== fuzz $t (${seconds}s)"
  mkdir -p "$scratch/$t"
  set +e
  "${fuzz[@]}" run "${common[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1
  status=$?
  set -e
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|SUMMARY|panicked|ERROR|Test unit written" \
    "$scratch/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "== all fuzz targets ran ${seconds}s without a crash"
