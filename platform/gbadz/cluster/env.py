"""The environments of a cluster's processes: the only place their settings are written.

Each process gets a whole environment built here (nothing inherited but ``PATH``'s tools and
the locale), so a ``GBADZ_*`` or ``AIRFLOW__*`` variable of the shell that ran ``up`` never
leaks into the cluster. Secrets reach the processes through these environments only (a
process's environment is readable by its owner and root, like the 0600 files they come from).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gbadz.cluster.procs import MARKER
from gbadz.cluster.state import AIRFLOW_USER, ClusterHome, ClusterSecrets, ClusterState
from gbadz.embedded import CHILD_PATH

#: The buckets of a cluster: gbadz's three, and one for Airflow's task logs.
LANDING_BUCKET = "gbadz-landing"
CURATED_BUCKET = "gbadz-curated"
DELIVERY_BUCKET = "gbadz-delivery"
LOGS_BUCKET = "gbadz-airflow-logs"
#: Airflow's connection id for the logs bucket (defined by an AIRFLOW_CONN_* variable).
LOGS_CONN_ID = "gbadz_logs_s3"


def database_url(admin_url: str, database: str, driver: str = "postgresql") -> str:
    """``admin_url`` pointed at ``database``, with ``driver`` as its scheme."""
    parts = urlsplit(admin_url)
    return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))


def s3_endpoint(state: ClusterState) -> str:
    return f"http://127.0.0.1:{state.ports['s3']}"


def airflow_url(state: ClusterState) -> str:
    return f"http://127.0.0.1:{state.ports['airflow']}"


def replica_url(state: ClusterState, replica: str) -> str:
    return f"http://127.0.0.1:{state.ports[f'api_{replica}']}"


def base_environment(state: ClusterState, home: Path) -> dict[str, str]:
    """What every non-SeaweedFS process of the cluster starts from: the venv's tools first on
    PATH (Airflow starts its own children by name), a HOME of its own and the cluster marker."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:{CHILD_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        MARKER: state.cluster_id,
    }


def gbadz_environment(state: ClusterState, home: ClusterHome, secret: ClusterSecrets) -> dict[str, str]:
    """The ``GBADZ_*`` settings shared by the API replicas and the code Airflow's workers run."""
    return {
        "GBADZ_ENV": state.env,
        "GBADZ_HOME": str(home.gbadz_home),
        "GBADZ_DB__URL": database_url(state.postgres_url, state.gbadz_database),
        "GBADZ_S3__ENDPOINT_URL": s3_endpoint(state),
        "GBADZ_S3__ACCESS_KEY": secret.s3_access_key,
        "GBADZ_S3__SECRET_KEY": secret.s3_secret_key,
        "GBADZ_S3__LANDING_BUCKET": LANDING_BUCKET,
        "GBADZ_S3__CURATED_BUCKET": CURATED_BUCKET,
        "GBADZ_S3__DELIVERY_BUCKET": DELIVERY_BUCKET,
        "GBADZ_CRYPTO__KEYRING_PATH": str(home.keyring_path),
        "GBADZ_CRYPTO__PASSPHRASE": secret.keyring_passphrase,
        # Tokens minted by one replica are checked by the other: one issuer for both. Replica A
        # stands in for the load balancer's address a deployment would put here.
        "GBADZ_OAUTH__ISSUER": replica_url(state, "a"),
    }


def replica_environment(
    state: ClusterState, home: ClusterHome, secret: ClusterSecrets, replica: str
) -> dict[str, str]:
    """The whole environment of API replica ``replica`` ("a" or "b"): the one function that
    builds it, so both replicas always run with the same settings."""
    env = base_environment(state, home.gbadz_home) | gbadz_environment(state, home, secret)
    env |= {
        "GBADZ_API__HOST": "127.0.0.1",
        "GBADZ_API__PORT": str(state.ports[f"api_{replica}"]),
        # Uploads trigger the ingest DAG through Airflow's REST API (ADR 0026): the replicas'
        # worker only triggers and follows runs; Airflow's Celery workers run them.
        "GBADZ_INGEST__WORKER": "true",
        "GBADZ_INGEST__WORKER_MODE": "airflow",
        "GBADZ_AIRFLOW__URL": airflow_url(state),
        "GBADZ_AIRFLOW__USERNAME": AIRFLOW_USER,
        "GBADZ_AIRFLOW__PASSWORD": secret.airflow_password,
        # Airflow is on this machine: once it is back it answers at once, so a deferred upload
        # waits at most 30 s for its next trigger (the default backoff grows to 300 s).
        "GBADZ_AIRFLOW__RETRY_MAX_S": "30",
    }
    return env


def airflow_environment(
    state: ClusterState, home: ClusterHome, secret: ClusterSecrets, dags_folder: Path
) -> dict[str, str]:
    """The whole environment of every Airflow component (api-server, scheduler, dag-processor,
    Celery workers, ``airflow db migrate``): one JWT secret, one execution API URL, one broker
    key prefix and queue of this cluster's own, and the gbadz settings its tasks need."""
    sync_url = database_url(state.postgres_url, state.airflow_database, "postgresql+psycopg")
    logs_conn = {
        "conn_type": "aws",
        "login": secret.s3_access_key,
        "password": secret.s3_secret_key,
        "extra": {
            "endpoint_url": s3_endpoint(state),
            "region_name": "us-east-1",
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        },
    }
    env = base_environment(state, home.airflow_home) | gbadz_environment(state, home, secret)
    env |= {
        "AIRFLOW_HOME": str(home.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        # New DAGs would start paused: the ingest DAG must run when triggered.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": secret.airflow_fernet_key,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url(state)}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home.airflow_passwords_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(state.ports["airflow"]),
        "AIRFLOW__API__BASE_URL": airflow_url(state),
        "AIRFLOW__API__SECRET_KEY": secret.airflow_api_secret,
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret.airflow_jwt_secret,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url(
            state.postgres_url, state.airflow_database, "postgresql+psycopg_async"
        ),
        "AIRFLOW__CELERY__BROKER_URL": state.redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sync_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # Several clusters and test runs share one Redis: every key (queues, results, the
        # workers' control channels) under this cluster's own prefix, and a queue of its own,
        # so a worker never takes another cluster's task.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": state.redis_prefix,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": state.celery_queue,
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # A task whose Celery worker died stops heartbeating; the scheduler fails it after this
        # many seconds and Airflow retries it (default 300: five minutes of a dead task looking
        # alive). The supervisor beats every [workers] min_heartbeat_interval (5 s), so 30 s
        # leaves room for a busy machine. Checked every 5 s instead of 10.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home.airflow_home / "logs"),
        # Task logs go to the cluster's own S3 (the amazon provider's task handler).
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOGS_BUCKET}/tasks",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": LOGS_CONN_ID,
        f"AIRFLOW_CONN_{LOGS_CONN_ID.upper()}": json.dumps(logs_conn),
    }
    return env
