#!/usr/bin/env bash
# Install everything and run the checks: ruff, ruff format, mypy, lint-imports (the layers), then pytest
# (default tier).
#   scripts/test.sh               default tier
#   scripts/test.sh --with-farm   then the long tier too: the slow end-to-end tests and the farm (root:
#                                 network namespaces, emulated aarch64 board); .ci/run uses this
# Other arguments go to pytest (e.g. `scripts/test.sh -k inspect`).
set -euo pipefail
cd "$(dirname "$0")/.."
farm=0
if [ "${1:-}" = "--with-farm" ]; then
    farm=1
    shift
fi
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy edgeq
.venv/bin/lint-imports
.venv/bin/pytest "$@"
if [ "$farm" = 1 ]; then
    .venv/bin/pytest -m "slow or farm" "$@"
fi
