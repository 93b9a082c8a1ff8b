#!/usr/bin/env bash
# Creates .venv at the repository root with what tests/e2e needs (requirements.txt).
# Idempotent: when the venv already has the pinned packages it returns in well under a second.
#   PYTHON=python3.11 tests/e2e/setup.sh     # choose the interpreter (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv"
req="$here/requirements.txt"
stamp="$venv/.lanyard-e2e-requirements"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/python" && -f "$stamp" ]] && cmp -s "$req" "$stamp" \
    && "$venv/bin/python" -c 'import grpc' 2>/dev/null; then
    echo "e2e venv up to date: $venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req"
cp "$req" "$stamp"
"$venv/bin/python" -c 'import grpc; print("e2e venv ready: grpcio", grpc.__version__)'
