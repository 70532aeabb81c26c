# syntax=docker/dockerfile:1
# The gbadz API image (`gbadz serve`); the same image runs the one-shot jobs
# (`gbadz db upgrade`, `gbadz storage init`, `gbadz check`) and the ingest DAG's task code.
#
#   docker build -f deploy/images/gbadz.Dockerfile -t gbadz:$(git rev-parse --short HEAD) .
#
# Dependencies come from requirements.lock, verified against its hashes: the build stage keeps
# the runtime part of the lock (deploy/images/runtime_lock.py drops the dev group) and syncs it
# into /opt/gbadz; the final stage copies that virtualenv and nothing else of the build.

FROM python:3.11.14-slim-bookworm AS build
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# The lock first: this layer and the install below are reused until the lock changes.
COPY requirements.lock ./
COPY deploy/images/runtime_lock.py /usr/local/lib/gbadz-build/runtime_lock.py
RUN python /usr/local/lib/gbadz-build/runtime_lock.py requirements.lock --only uv > /tmp/uv.lock \
 && python -m pip install --require-hashes --no-deps --target /opt/uv -r /tmp/uv.lock \
 && python /usr/local/lib/gbadz-build/runtime_lock.py requirements.lock > /tmp/runtime.lock \
 && python -m venv /opt/gbadz \
 && PYTHONPATH=/opt/uv /opt/uv/bin/uv pip sync --require-hashes --python /opt/gbadz/bin/python /tmp/runtime.lock
# Then the source: a change here rebuilds only the package itself (no dependency is resolved).
COPY pyproject.toml README.md ./
COPY platform ./platform
RUN PYTHONPATH=/opt/uv /opt/uv/bin/uv pip install --no-deps --python /opt/gbadz/bin/python . \
 && /opt/gbadz/bin/python -c "import gbadz.app, gbadz.cli"

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gbadz/bin:$PATH \
    GBADZ_ENV=prod \
    GBADZ_HOME=/var/lib/gbadz \
    GBADZ_LOG_JSON=true \
    GBADZ_API__HOST=0.0.0.0 \
    GBADZ_API__PORT=8000 \
    GBADZ_CRYPTO__KEYRING_PATH=/var/lib/gbadz-keys/keyring.bin
# The compute-to-data sandbox needs `unshare` and `prlimit` (util-linux, an essential package of
# the base image; the build fails if they are gone). Without the right to make namespaces (the
# default in a container) analyses answer 503, never unsandboxed (ADR 0022).
RUN command -v unshare && command -v prlimit \
 && groupadd --system --gid 10001 gbadz \
 && useradd --system --uid 10001 --gid gbadz --home-dir /var/lib/gbadz --shell /usr/sbin/nologin gbadz \
 && install -d -o gbadz -g gbadz -m 0700 /var/lib/gbadz /var/lib/gbadz-keys
COPY --from=build /opt/gbadz /opt/gbadz
COPY dags /opt/gbadz/dags
USER 10001:10001
# The ingest runner finds ./dags from here. GBADZ_HOME (/var/lib/gbadz) is per-container
# scratch; the keyring (/var/lib/gbadz-keys) must be ONE volume shared by every API replica
# and every Airflow worker (deploy/README.md).
WORKDIR /opt/gbadz
EXPOSE 8000
# Liveness only: /healthz never touches the database; /readyz is the orchestrator's readiness.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["gbadz"]
CMD ["serve"]
