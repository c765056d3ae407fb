# syntax=docker/dockerfile:1
# One image for every roomstream service; the command picks the service:
#   roomstream-gateway | roomstream-rooms | roomstream-history | roomstream-monitor | roomstream-hooks | roomstream
# Build: docker build -t roomstream .   (compose.yaml builds it for you)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: the locked uv workspace, installed (not editable) into /opt/venv ---------------------
FROM ${PYTHON_IMAGE} AS builder
RUN pip install --no-cache-dir "uv>=0.5"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (a layer that changes only with uv.lock), then the workspace's own packages.
COPY pyproject.toml uv.lock ./
COPY libs/contracts/pyproject.toml libs/contracts/pyproject.toml
COPY libs/kit/pyproject.toml libs/kit/pyproject.toml
COPY libs/client/pyproject.toml libs/client/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/rooms/pyproject.toml services/rooms/pyproject.toml
COPY services/history/pyproject.toml services/history/pyproject.toml
COPY services/monitor/pyproject.toml services/monitor/pyproject.toml
COPY services/hooks/pyproject.toml services/hooks/pyproject.toml
COPY tools/cli/pyproject.toml tools/cli/pyproject.toml
RUN uv sync --frozen --no-dev --all-packages --no-install-workspace
COPY libs libs
COPY services services
COPY tools tools
RUN uv sync --frozen --no-dev --all-packages --no-editable

# -- runtime: slim, no build tools, non-root ----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 roomstream \
 && useradd --system --uid 10001 --gid roomstream --home-dir /app --shell /usr/sbin/nologin roomstream
COPY --from=builder /opt/venv /opt/venv
COPY deploy/bootstrap.py /app/bootstrap.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROOMSTREAM_HOST=0.0.0.0 \
    ROOMSTREAM_PORT=8000
WORKDIR /app
USER roomstream:roomstream
EXPOSE 8000 8100 8200 8300 8400
# Liveness of whichever service runs: GET /healthz on its ROOMSTREAM_PORT (no curl in slim images).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOMSTREAM_PORT', '8000'), timeout=2)"]
# SIGTERM is the graceful stop of every service (gateways close sockets with 1012).
STOPSIGNAL SIGTERM
CMD ["roomstream-gateway"]
