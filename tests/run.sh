#!/usr/bin/env bash
# Runs every test: sets up what the end-to-end tests need (a Python venv with grpcio, the
# controller, loopback API server and webhook binaries), then the whole workspace under nextest.
# Extra arguments go to nextest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash tests/e2e/setup.sh
cargo build --bin lanyard-controller --bin lanyard-test-apiserver --bin lanyard-webhook
LANYARD_E2E=1 cargo nextest run --workspace "$@"
