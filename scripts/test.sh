#!/usr/bin/env bash
# The whole check: Redis and PostgreSQL up, then ruff, mypy, vulture (dead code), the TypeScript SDK (type check, build,
# unit tests, generated types and served bundle up to date) and pytest (which runs the SDK's Node
# end-to-end and browser tests against real gateways). Called by `./dev test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
echo "== ruff"
uv run --frozen --no-sync ruff check .
uv run --frozen --no-sync ruff format --check .
echo "== mypy"
uv run --frozen --no-sync mypy
echo "== vulture (dead code; settings in pyproject.toml, whitelist scripts/vulture_whitelist.py)"
uv run --frozen --no-sync vulture
echo "== client-js (libs/client-js)"
(cd libs/client-js && npm ci --no-audit --no-fund --loglevel=error && npm test --silent)
echo "== pytest"
# Two workers, one test file each at a time (`loadfile`: a module's shared deployment stays in
# one process): the suite mostly waits on processes it started, so two halve its wall time on
# 2 cores. PYTEST_WORKERS=0 runs it in this process (a debugger, -x on the first failure).
exec uv run --frozen --no-sync pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
