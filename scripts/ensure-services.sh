#!/usr/bin/env bash
# Makes sure the Redis and PostgreSQL the tests use answer: REDIS_URL / DATABASE_URL when set,
# else the local servers on 127.0.0.1:6379 and :5432, started here when they are installed but down.
set -uo pipefail

redis_ok() { uv run --frozen --no-sync python - <<'PY'
import os, sys, redis
try:
    redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), socket_connect_timeout=1).ping()
except Exception:
    sys.exit(1)
PY
}
pg_ok() { uv run --frozen --no-sync python - <<'PY'
import asyncio, os, sys, asyncpg
async def main():
    c = await asyncpg.connect(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), timeout=2)
    await c.close()
try:
    asyncio.run(main())
except Exception:
    sys.exit(1)
PY
}

if ! redis_ok; then
  echo "ensure-services: starting redis-server on 127.0.0.1:6379" >&2
  if ! command -v redis-server >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
  fi
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || redis-server --daemonize yes --port 6379 --save ""
  for _ in $(seq 1 50); do redis_ok && break; sleep 0.2; done
  redis_ok || { echo "ensure-services: Redis is not reachable" >&2; exit 1; }
fi

if ! pg_ok; then
  echo "ensure-services: starting PostgreSQL" >&2
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 50); do pg_ok && break; sleep 0.2; done
  pg_ok || { echo "ensure-services: PostgreSQL is not reachable" >&2; exit 1; }
fi
echo "ensure-services: Redis and PostgreSQL answer" >&2

# Deployment tests (tests/deploy): the real load balancer (HAProxy), the offline compose.yaml
# validator (Debian's docker-compose runs `config` without an engine) and redis-cli for the
# Redis Cluster fixture. Installed from Debian's packages when missing.
# The compose test (tests/deploy/test_compose_up.py) also needs a Docker engine (docker.io: dockerd,
# containerd, runc and a client; the test starts its own dockerd, none is started here) and
# debootstrap for its locally built Debian base image.
deploy_pkgs=()
command -v haproxy >/dev/null 2>&1 || deploy_pkgs+=(haproxy)
command -v docker-compose >/dev/null 2>&1 || deploy_pkgs+=(docker-compose)
command -v redis-cli >/dev/null 2>&1 || deploy_pkgs+=(redis-tools)
PATH="$PATH:/usr/sbin:/sbin" command -v dockerd >/dev/null 2>&1 || deploy_pkgs+=(docker.io)
PATH="$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null 2>&1 || deploy_pkgs+=(debootstrap)
if [ ${#deploy_pkgs[@]} -gt 0 ]; then
  echo "ensure-services: installing ${deploy_pkgs[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deploy_pkgs[@]}") >/dev/null 2>&1 \
    || echo "ensure-services: could not install ${deploy_pkgs[*]} (tests/deploy will fail)" >&2
fi

# Headless Chromium for the dashboard test (tests/monitor): Debian's package, driven by Playwright.
if ! command -v chromium >/dev/null 2>&1; then
  echo "ensure-services: installing chromium" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "ensure-services: could not install chromium" >&2
fi
