#!/usr/bin/env bash
# The whole check: Redis and PostgreSQL up, then ruff, mypy and pytest. Called by `./dev test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
echo "== ruff"
uv run --frozen --no-sync ruff check .
uv run --frozen --no-sync ruff format --check .
echo "== mypy"
uv run --frozen --no-sync mypy
echo "== pytest"
exec uv run --frozen --no-sync pytest "$@"
