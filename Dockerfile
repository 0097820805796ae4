# syntax=docker/dockerfile:1
#
# One image for the ingress and every worker; only the command differs:
#   docker run IMAGE                                    -> event-gateway serve (ingress, :8080)
#   docker run IMAGE consume roaming --metrics-port 9100 -> a worker (/healthz, /metrics on :9100)
#   docker run IMAGE topology                           -> declare exchanges and queues, exit 0
#
# Build:  docker build -t event-gateway .
# Configuration comes from the environment (GATEWAY_*) or a mounted TOML file (GATEWAY_CONFIG);
# nothing secret is baked in (see .dockerignore).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: a virtualenv with the package and its dependencies. Compilers live only here; they
# matter only on platforms without binary wheels for aiohttp, orjson, uvloop or asyncpg.
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, exactly the versions tested (requirements.lock, hashes checked: `make
# lock` writes it from pyproject.toml), so a rebuild installs what CI ran and a code change
# reuses this layer.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README* LICENSE ./

COPY gateway ./gateway
COPY consumers ./consumers
RUN pip install --no-deps . \
    && pip check \
    && event-gateway --help > /dev/null

# ---------------------------------------------------------------------------------------------
# runtime: the same slim Python, the virtualenv, a non-root user; no compilers, no pip cache.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="event-gateway" \
      org.opencontainers.image.description="Telecom and messaging callbacks to CloudEvents on RabbitMQ" \
      org.opencontainers.image.licenses="Apache-2.0"

# No PYTHONUNBUFFERED: the JSON logger batches its writes (a write per line cost a quarter of
# the request CPU) and flushes every 0.2 s and at exit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/event-gateway \
       --create-home --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv

# The default SQLite state file (./event-gateway.db) lands here; mount a volume to keep it,
# or point GATEWAY_STATE_URL at PostgreSQL.
WORKDIR /var/lib/event-gateway
USER 10001:10001

EXPOSE 8080 9100
STOPSIGNAL SIGTERM

# The ingress serves /healthz on GATEWAY_HTTP_PORT (default 8080). Workers serve it on their
# --metrics-port; docker-compose.yml overrides this check for them. Stdlib only: slim has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=4)" "http://127.0.0.1:${GATEWAY_HTTP_PORT:-8080}/healthz" || exit 1

ENTRYPOINT ["event-gateway"]
CMD ["serve"]
