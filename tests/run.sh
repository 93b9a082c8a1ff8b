#!/usr/bin/env bash
# Runs every test: sets up what the end-to-end tests need (a Python venv with grpcio, the
# controller, loopback API server and webhook binaries), then the whole workspace under nextest,
# then the abuse suite (bench/tests/abuse.rs) alone against a release build of the controller.
# Extra arguments go to nextest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash tests/e2e/setup.sh
cargo build --bin lanyard-controller --bin lanyard-test-apiserver --bin lanyard-webhook
LANYARD_E2E=1 cargo nextest run --workspace "$@"

# The abuse suite measures the controller from outside (CPU, RSS, a victim proxy's delay):
# a release build, and nothing else running beside it. LANYARD_ABUSE_SCALE sizes it.
cargo build --release --bin lanyard-controller
LANYARD_ABUSE_CONTROLLER="$root/target/release/lanyard-controller" \
  cargo nextest run --workspace -E 'binary_id(lanyard-bench::abuse)' --no-capture
