# syntax=docker/dockerfile:1
# Airflow 3.3.2 with gbadz installed: the api-server, scheduler, dag-processor, triggerer and
# Celery worker images of the cluster (compose.yaml, helm/airflow-values.yaml).
#
#   docker build -f deploy/images/airflow.Dockerfile -t gbadz-airflow:$(git rev-parse --short HEAD) .
#
# The official image's environment is replaced by the runtime part of requirements.lock
# (`uv pip sync`, hashes required), so Airflow, its providers and every library are exactly
# the versions gbadz is tested with; gbadz itself is then installed with --no-deps.
# The CeleryExecutor needs apache-airflow-providers-celery and celery[redis]==5.6.3 in the
# lock (celery 5.7.0 breaks the provider): the last RUN fails the build without them.

FROM apache/airflow:3.3.2-python3.11
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_USER=false \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy
USER airflow
WORKDIR /opt/airflow
# The lock first, then the source (the dependency layer is reused until the lock changes).
COPY --chown=airflow:0 requirements.lock /tmp/gbadz/requirements.lock
COPY --chown=airflow:0 deploy/images/runtime_lock.py /tmp/gbadz/runtime_lock.py
RUN python /tmp/gbadz/runtime_lock.py /tmp/gbadz/requirements.lock --only uv > /tmp/gbadz/uv.lock \
 && python -m pip install --require-hashes --no-deps --target /tmp/gbadz/uv -r /tmp/gbadz/uv.lock \
 && python /tmp/gbadz/runtime_lock.py /tmp/gbadz/requirements.lock > /tmp/gbadz/runtime.lock \
 && PYTHONPATH=/tmp/gbadz/uv /tmp/gbadz/uv/bin/uv pip sync --require-hashes --python "$(command -v python)" \
      /tmp/gbadz/runtime.lock
COPY --chown=airflow:0 pyproject.toml README.md /tmp/gbadz/src/
COPY --chown=airflow:0 platform /tmp/gbadz/src/platform
RUN PYTHONPATH=/tmp/gbadz/uv /tmp/gbadz/uv/bin/uv pip install --no-deps --python "$(command -v python)" /tmp/gbadz/src \
 && rm -rf /tmp/gbadz \
 && python -c "import gbadz.ingest.tasks, airflow.providers.celery.executors.celery_executor, celery, redis; \
assert celery.__version__ != '5.7.0', 'celery 5.7.0 breaks the celery provider: pin celery[redis]==5.6.3'"
# DAGs are baked into the image (no git-sync, no shared volume): a new DAG is a new image.
COPY --chown=airflow:0 dags /opt/airflow/dags
USER 50000
