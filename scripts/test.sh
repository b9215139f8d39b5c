#!/usr/bin/env bash
# Install everything and run the checks: ruff, ruff format, mypy, then pytest (default tier).
# Extra arguments go to pytest (e.g. `scripts/test.sh -m farm`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy edgeq
exec .venv/bin/pytest "$@"
