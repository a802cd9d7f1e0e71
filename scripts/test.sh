#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, every Rust test (unit, fixtures, end to end over loopback),
# and the Helm chart tests (rendered with Helm's own engine, validated against the Kubernetes schemas).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

echo "== chart tests"
venv=target/chart-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
"$venv/bin/python" -m pytest tests/chart -q
