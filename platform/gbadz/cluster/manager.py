"""``gbadz cluster up|down|status``: a production-shaped zone on this machine (ADR 0025).

What runs, all bound to 127.0.0.1 on ports chosen free at the first ``up`` and kept:

- SeaweedFS as separate processes: one master, four volume servers in two racks (two each,
  default replication ``010``: one copy in another rack), a filer and the S3 gateway, under
  the same security posture as the embedded server (ADR 0017: ``security.toml`` with JWT
  signing keys and gRPC mTLS, ``-disableHttp`` on master and filer, no inherited environment);
- two databases of the cluster's own in the PostgreSQL at 127.0.0.1:5432, gbadz's (migrated)
  and Airflow's (``airflow db migrate``);
- Airflow 3 with the CeleryExecutor: api-server, scheduler, dag-processor and N Celery
  workers (``--skip-serve-logs``), Redis as the broker under a key prefix and a queue of this
  cluster's own, task logs in the cluster's S3;
- two ``gbadz serve`` replicas with the same settings.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gbadz.cluster import env as cenv
from gbadz.cluster import procs
from gbadz.cluster.state import AIRFLOW_USER, ClusterHome, ClusterSecrets, ClusterState, ProcState
from gbadz.config import S3Settings, Settings
from gbadz.embedded import (
    free_loopback_ports,
    restrict_tree,
    weed_binary,
    weed_environment,
    write_s3_identities,
    write_security_config,
)
from gbadz.errors import BadRequest, ServicesError
from gbadz.log import get_logger

log = get_logger("gbadz.cluster")

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
UP_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0
#: Two racks of two volume servers: with replication 010 and one server per rack, writes hang
#: while a rack is down (architecture.md); two per rack keep a writable pair in each.
VOLUMES = {"volume-r1a": "rack1", "volume-r1b": "rack1", "volume-r2a": "rack2", "volume-r2b": "rack2"}
REPLICATION = "010"
VOLUME_SIZE_LIMIT_MB = 1024
VOLUME_SLOTS = 100
WEED_PARTS = ("master", *VOLUMES, "filer", "s3")
AIRFLOW_PARTS = ("airflow-api", "scheduler", "dag-processor")
REPLICAS = ("a", "b")
PORT_NAMES = (
    "master",
    "master_grpc",
    *[f"{v}{suffix}" for v in VOLUMES for suffix in ("", "_grpc")],
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
    "airflow",
    "api_a",
    "api_b",
)
READY_PROBE = ".gbadz-cluster-ready-probe"
INGEST_DAG = "gbadz_ingest"


def check_loopback(url: str, what: str) -> None:
    """The cluster runs on loopback only: its PostgreSQL and Redis too."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise BadRequest(f"{what}: the cluster runs on loopback only; give a 127.0.0.1 address")


def repo_dags_folder() -> Path:
    """The repository's ``dags/`` (this package is installed editable from the repository)."""
    return Path(__file__).resolve().parents[3] / "dags"


@dataclass
class PartStatus:
    name: str
    pid: int
    alive: bool
    ports: dict[str, int]
    listening: list[str]
    healthy: bool
    log_file: str
    rss_bytes: int


class Cluster:
    """One named cluster under ``$GBADZ_HOME/cluster/<name>/``."""

    def __init__(self, gbadz_home: Path, name: str, *, dags_folder: Path | None = None) -> None:
        self.home = ClusterHome(gbadz_home, name)
        self.dags_folder = (dags_folder or repo_dags_folder()).resolve()

    # -- state -----------------------------------------------------------------------------
    def _new_state(self, postgres_url: str, redis_url: str, workers: int, env: str) -> ClusterState:
        token = secrets.token_hex(4)
        name = self.home.name
        return ClusterState(
            name=name,
            cluster_id=f"{name}-{secrets.token_hex(8)}",
            workers=workers,
            gbadz_database=f"gbadz_{name}",
            airflow_database=f"airflow_{name}",
            postgres_url=postgres_url,
            redis_url=redis_url,
            redis_prefix=f"gbadz-{name}-{token}:",
            celery_queue=f"gbadz-{name}-{token}",
            env=env,
        )

    def _running(self, state: ClusterState, part: str) -> bool:
        proc = state.procs.get(part)
        return proc is not None and procs.is_ours(proc.pid, proc.start_ticks)

    def parts(self, state: ClusterState) -> list[str]:
        """Every process of the cluster, in start order."""
        workers = [f"worker-{i}" for i in range(1, state.workers + 1)]
        return [*WEED_PARTS, *AIRFLOW_PARTS, *workers, *[f"api-{r}" for r in REPLICAS]]

    # -- up --------------------------------------------------------------------------------
    def up(
        self,
        *,
        workers: int | None = None,
        timeout_s: float = UP_TIMEOUT_S,
        postgres_url: str = DEFAULT_POSTGRES,
        redis_url: str = DEFAULT_REDIS,
        env: str = "prod",
        progress: Callable[[str], None] = lambda _: None,
    ) -> tuple[ClusterState, list[str]]:
        """Start every part that is not running and wait until all are healthy; return the
        state and the parts started (none: it was already up)."""
        deadline = time.monotonic() + timeout_s
        for url, what in ((postgres_url, "--postgres"), (redis_url, "--redis")):
            check_loopback(url, what)
        self.home.make()
        restrict_tree(self.home.root)
        secret = self.home.secrets()
        if self.home.exists():
            state = self.home.load()
            # More workers join a running cluster; fewer take effect at the next start.
            state.workers = workers or state.workers
        else:
            state = self._new_state(postgres_url, redis_url, workers or 1, env)
        if not state.ports:
            state.ports = free_loopback_ports(len(PORT_NAMES), None, PORT_NAMES)
        self.home.save(state)
        missing = [p for p in self.parts(state) if not self._running(state, p)]
        if not missing:
            return state, []
        started: list[str] = []
        self._up_seaweed(state, secret, deadline, started, progress)
        progress("databases")
        self._databases(state)
        # Airflow's parts and the replicas import for seconds each: all start at once, then all
        # are waited for (Airflow's api-server is needed only once a task runs).
        self._start_airflow(state, secret, deadline, started, progress)
        self._start_replicas(state, secret, started, progress)
        progress("health")
        self._wait_replicas(state, deadline)
        self._wait_airflow(state, secret, deadline)
        return state, started

    def _start(
        self, state: ClusterState, part: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> ProcState:
        log_file = self.home.logs_dir / f"{part}.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        pid = procs.start(argv, env, log_file, cwd)
        proc = ProcState(
            name=part,
            pid=pid,
            ports=self._ports_of(state, part),
            log_file=str(log_file),
            started_at=time.time(),
            log_offset=offset,
            start_ticks=procs.start_ticks(pid),
        )
        state.procs[part] = proc
        self.home.save(state)
        log.info("cluster.started", part=part, pid=pid)
        return proc

    @staticmethod
    def _ports_of(state: ClusterState, part: str) -> dict[str, int]:
        key = {"airflow-api": "airflow", "api-a": "api_a", "api-b": "api_b"}.get(part, part)
        return {k: v for k, v in state.ports.items() if k == key or k == f"{key}_grpc"}

    def _wait(self, state: ClusterState, part: str, check: Callable[[], bool], deadline: float) -> None:
        proc = state.procs[part]
        while True:
            if not procs.is_ours(proc.pid, proc.start_ticks):
                raise ServicesError(
                    f"cluster part {part} exited while starting: see {proc.log_file}; "
                    f"`gbadz cluster down --name {state.name}` stops what was started"
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ServicesError(
                    f"cluster part {part} was not healthy in time: see {proc.log_file}; "
                    f"`gbadz cluster down --name {state.name}` stops what was started"
                )
            time.sleep(0.25)

    def _listens_all(self, state: ClusterState, part: str) -> bool:
        proc = state.procs[part]
        members = procs.group_members(proc.pid, proc.start_ticks) or [proc.pid]
        bound = {port for _, port, _ in procs.listening(members)}
        return set(proc.ports.values()) <= bound

    # -- SeaweedFS -------------------------------------------------------------------------
    def s3_settings(self, state: ClusterState, secret: ClusterSecrets) -> S3Settings:
        from pydantic import SecretStr

        return S3Settings(
            endpoint_url=cenv.s3_endpoint(state),
            access_key=secret.s3_access_key,
            secret_key=SecretStr(secret.s3_secret_key),
            landing_bucket=cenv.LANDING_BUCKET,
            curated_bucket=cenv.CURATED_BUCKET,
            delivery_bucket=cenv.DELIVERY_BUCKET,
        )

    def _weed_argv(self, state: ClusterState, part: str) -> list[str]:
        root = self.home.seaweed_dir
        p = state.ports
        master = f"127.0.0.1:{p['master']}.{p['master_grpc']}"
        common = [str(weed_binary()), f"-config_dir={root / 'config'}", f"-logdir={self.home.logs_dir}"]
        bind = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-metricsPort=0"]
        run = root / "run"
        short = len(str(run)) < 90  # unix socket paths are limited to 108 bytes
        if part == "master":
            return [
                *common,
                "master",
                f"-mdir={root / 'master'}",
                *bind,
                f"-port={p['master']}",
                f"-port.grpc={p['master_grpc']}",
                f"-defaultReplication={REPLICATION}",
                f"-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
                "-telemetry=false",
                # The master's HTTP API hands a volume JWT to whoever asks (ADR 0017).
                "-disableHttp",
            ]
        if part in VOLUMES:
            return [
                *common,
                "volume",
                f"-dir={root / part}",
                *bind,
                f"-port={p[part]}",
                f"-port.grpc={p[f'{part}_grpc']}",
                f"-master={master}",
                "-dataCenter=dc1",
                f"-rack={VOLUMES[part]}",
                # Every bucket is a collection that grows six replicated volumes at once: the
                # default of 8 volume slots per server fills with two buckets (volumes are
                # created lazily and hold no space until written).
                f"-max={VOLUME_SLOTS}",
            ]
        if part == "filer":
            return [
                *common,
                "filer",
                f"-defaultStoreDir={root / 'filer'}",
                *bind,
                f"-port={p['filer']}",
                f"-port.grpc={p['filer_grpc']}",
                f"-master={master}",
                "-disableHttp",
                *([f"-localSocket={run / 'filer.sock'}"] if short else []),
            ]
        if part == "s3":
            return [
                *common,
                "s3",
                f"-filer=127.0.0.1:{p['filer']}.{p['filer_grpc']}",
                *bind,
                f"-port={p['s3']}",
                f"-port.grpc={p['s3_grpc']}",
                f"-config={root / 'identities.json'}",
                "-port.iceberg=0",
                "-port.lance=0",
                *([f"-localSocket={run / 's3.sock'}"] if short else []),
            ]
        raise ValueError(part)

    def _up_seaweed(
        self,
        state: ClusterState,
        secret: ClusterSecrets,
        deadline: float,
        started: list[str],
        progress: Callable[[str], None],
    ) -> None:
        root = self.home.seaweed_dir
        if not any(self._running(state, part) for part in WEED_PARTS):
            # Fresh keys for a fresh SeaweedFS: its parts must all share one security.toml.
            write_security_config(root / "config")
            write_s3_identities(root / "identities.json", secret.s3_access_key, secret.s3_secret_key)
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        weed_env = weed_environment(root, **{procs.MARKER: state.cluster_id})
        for part in WEED_PARTS:
            if self._running(state, part):
                continue
            progress(f"SeaweedFS {part}")
            for folder in ("master", "filer", *VOLUMES):
                (root / folder).mkdir(mode=0o700, exist_ok=True)
            self._start(state, part, self._weed_argv(state, part), weed_env, root)
            started.append(part)
            if part != "s3":
                self._wait(state, part, lambda part=part: self._listens_all(state, part), deadline)  # type: ignore[misc]
        progress("S3 buckets")
        from gbadz import storage

        settings = self.s3_settings(state, secret)
        client = storage.make_client(settings, retries=0)
        self._wait(state, "s3", lambda: client.list_buckets() is not None, deadline)
        self._wait(state, "s3", lambda: self._ensure_buckets(settings), deadline)
        self._wait(state, "s3", lambda: self._writable(settings), deadline)

    @staticmethod
    def _ensure_buckets(settings: S3Settings) -> bool:
        from gbadz import storage

        client = storage.make_client(settings, retries=0)
        storage.ensure_buckets(client, settings)  # object lock and landing retention, as `storage init`
        if not client.bucket_exists(cenv.LOGS_BUCKET):
            client.make_bucket(cenv.LOGS_BUCKET)
        return True

    @staticmethod
    def _writable(settings: S3Settings) -> bool:
        from gbadz import storage

        client = storage.make_client(settings, retries=0)
        client.put_object(settings.delivery_bucket, READY_PROBE, io.BytesIO(b"ok"), 2)
        client.remove_object(settings.delivery_bucket, READY_PROBE)
        return True

    # -- PostgreSQL ------------------------------------------------------------------------
    def _databases(self, state: ClusterState) -> None:
        import psycopg
        from psycopg import sql

        from gbadz import db
        from gbadz.config import DatabaseSettings

        try:
            with psycopg.connect(state.postgres_url, autocommit=True, connect_timeout=5) as conn:
                for name in (state.gbadz_database, state.airflow_database):
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                        continue
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.OperationalError as exc:
            raise ServicesError(
                f"PostgreSQL at {db.describe_url(state.postgres_url)} refused the cluster's databases: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        engine = db.create_engine(
            DatabaseSettings(url=cenv.database_url(state.postgres_url, state.gbadz_database))
        )
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()

    def _drop_databases(self, state: ClusterState) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(state.postgres_url, autocommit=True, connect_timeout=5) as conn:
            for name in (state.gbadz_database, state.airflow_database):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- Airflow ---------------------------------------------------------------------------
    @staticmethod
    def _airflow() -> str:
        return str(Path(sys.executable).parent / "airflow")

    def _start_airflow(
        self,
        state: ClusterState,
        secret: ClusterSecrets,
        deadline: float,
        started: list[str],
        progress: Callable[[str], None],
    ) -> None:
        env = cenv.airflow_environment(state, self.home, secret, self.dags_folder)
        cwd = self.home.airflow_home
        self.home.write_airflow_passwords(secret)
        if not self._running(state, "airflow-api"):
            progress("airflow db migrate")
            migrate_log = self.home.logs_dir / "airflow-db-migrate.log"
            with open(migrate_log, "ab") as out:
                migrate_log.chmod(0o600)
                try:
                    result = subprocess.run(  # noqa: S603 - argv built here
                        [self._airflow(), "db", "migrate"],
                        env=env,
                        cwd=cwd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        timeout=max(deadline - time.monotonic(), 1.0),
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    raise ServicesError(
                        f"`airflow db migrate` did not finish in time: see {migrate_log}"
                    ) from None
            if result.returncode != 0:
                raise ServicesError(f"`airflow db migrate` failed: see {migrate_log}")
            progress("Airflow api-server")
            self._start(state, "airflow-api", self._api_server_argv(state), env, cwd)
            started.append("airflow-api")
        commands = {
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }
        for i in range(1, state.workers + 1):
            commands[f"worker-{i}"] = [
                "celery",
                "worker",
                "--skip-serve-logs",
                "--queues",
                state.celery_queue,
                "--celery-hostname",
                f"{state.celery_queue}-w{i}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        for part, args in commands.items():
            if not self._running(state, part):
                progress(f"Airflow {part}")
                self._start(state, part, [self._airflow(), *args], env, cwd)
                started.append(part)

    def _api_server_argv(self, state: ClusterState) -> list[str]:
        return [self._airflow(), "api-server", "--host", "127.0.0.1", "--port", str(state.ports["airflow"])]

    def _wait_airflow(self, state: ClusterState, secret: ClusterSecrets, deadline: float) -> None:
        self._wait(state, "airflow-api", lambda: self._airflow_health(state) is not None, deadline)
        for part in ("scheduler", "dag-processor"):
            self._wait(state, part, lambda part=part: self._airflow_part_healthy(state, part), deadline)  # type: ignore[misc]
        for i in range(1, state.workers + 1):
            part = f"worker-{i}"
            self._wait(state, part, lambda part=part: self._worker_ready(state, part), deadline)  # type: ignore[misc]
        self._wait(state, "dag-processor", lambda: self._dag_registered(state, secret), deadline)

    @staticmethod
    def _airflow_health(state: ClusterState) -> dict[str, Any] | None:
        try:
            resp = httpx.get(f"{cenv.airflow_url(state)}/api/v2/monitor/health", timeout=3)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        payload: dict[str, Any] = resp.json()
        return payload

    def _airflow_part_healthy(self, state: ClusterState, part: str) -> bool:
        health = self._airflow_health(state) or {}
        key = {"scheduler": "scheduler", "dag-processor": "dag_processor"}[part]
        return bool((health.get(key) or {}).get("status") == "healthy")

    @staticmethod
    def _worker_ready(state: ClusterState, part: str) -> bool:
        proc = state.procs[part]
        with open(proc.log_file, "rb") as fh:
            fh.seek(proc.log_offset)
            return b" ready." in fh.read()

    @staticmethod
    def airflow_token(state: ClusterState, secret: ClusterSecrets) -> str:
        resp = httpx.post(
            f"{cenv.airflow_url(state)}/auth/token",
            json={"username": AIRFLOW_USER, "password": secret.airflow_password},
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def _dag_registered(self, state: ClusterState, secret: ClusterSecrets) -> bool:
        token = self.airflow_token(state, secret)
        resp = httpx.get(
            f"{cenv.airflow_url(state)}/api/v2/dags/{INGEST_DAG}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        return resp.status_code == 200 and not resp.json().get("is_paused", True)

    # -- API replicas ----------------------------------------------------------------------
    def _start_replicas(
        self,
        state: ClusterState,
        secret: ClusterSecrets,
        started: list[str],
        progress: Callable[[str], None],
    ) -> None:
        for replica in REPLICAS:
            part = f"api-{replica}"
            if self._running(state, part):
                continue
            progress(f"gbadz API replica {replica}")
            env = cenv.replica_environment(state, self.home, secret, replica)
            argv = [
                sys.executable,
                "-m",
                "gbadz",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(state.ports[f"api_{replica}"]),
            ]
            self._start(state, part, argv, env, self.home.gbadz_home)
            started.append(part)

    def _wait_replicas(self, state: ClusterState, deadline: float) -> None:
        for replica in REPLICAS:
            part = f"api-{replica}"
            url = f"{cenv.replica_url(state, replica)}/readyz"
            self._wait(state, part, lambda url=url: httpx.get(url, timeout=3).status_code == 200, deadline)  # type: ignore[misc]

    # -- one part ----------------------------------------------------------------------------
    def start_part(self, part: str, *, timeout_s: float = UP_TIMEOUT_S) -> float:
        """Start one part that is not running (a killed volume server, Celery worker, api-server or
        replica) at the address its clients hold, and wait until the whole cluster is healthy
        again; the seconds it took. The api-server comes back without ``airflow db migrate``
        (its database is migrated already); every other part as ``up`` starts it."""
        began = time.monotonic()
        state = self.home.load()
        if part not in self.parts(state):
            raise BadRequest(f"{part}: not a part of cluster {state.name}")
        if self._running(state, part):
            raise BadRequest(f"{part}: already running (pid {state.procs[part].pid})")
        if part == "airflow-api":
            secret = self.home.secrets()
            env = cenv.airflow_environment(state, self.home, secret, self.dags_folder)
            self._start(state, part, self._api_server_argv(state), env, self.home.airflow_home)
            self._wait_airflow(state, secret, began + timeout_s)
        else:
            self.up(timeout_s=timeout_s)  # starts what is missing, waits until every part is healthy
        return time.monotonic() - began

    # -- settings --------------------------------------------------------------------------
    def settings(self) -> Settings:
        """The gbadz settings of the cluster's replicas (for an operator's in-process tools)."""
        from pydantic import SecretStr

        from gbadz.config import CryptoSettings, DatabaseSettings, OAuthSettings

        state, secret = self.home.load(), self.home.secrets()
        return Settings(
            env=state.env,
            home=self.home.gbadz_home,
            db=DatabaseSettings(url=cenv.database_url(state.postgres_url, state.gbadz_database)),
            s3=self.s3_settings(state, secret),
            crypto=CryptoSettings(
                keyring_path=self.home.keyring_path, passphrase=SecretStr(secret.keyring_passphrase)
            ),
            oauth=OAuthSettings(issuer=cenv.replica_url(state, "a")),
        )

    def secrets(self) -> ClusterSecrets:
        return self.home.secrets()

    # -- down ------------------------------------------------------------------------------
    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every process this cluster started (by PID, SIGTERM then SIGKILL); keep the data
        unless ``purge`` (then the cluster's folder, databases and Redis keys go too)."""
        if not self.home.exists():
            if purge and self.home.root.exists():
                shutil.rmtree(self.home.root)
            return []
        state = self.home.load()
        stopped = []
        # The apps first (replicas, Airflow), all at once, then SeaweedFS, all at once.
        weed = [p for p in state.procs if p in WEED_PARTS]
        for tier, grace in (
            ([p for p in state.procs if p not in WEED_PARTS], STOP_GRACE_S),
            (weed, STOP_GRACE_S),
        ):
            targets = {state.procs[p].pid: p for p in tier if state.procs[p].pid > 0}
            for pid in procs.stop([(pid, state.procs[p].start_ticks) for pid, p in targets.items()], grace):
                stopped.append(targets[pid])
            for part in tier:
                state.procs[part].pid = 0
        # Anything left with the cluster's marker (a child that left its group) goes too.
        leftovers = procs.marked(state.cluster_id)
        procs.stop([(pid, procs.start_ticks(pid)) for pid in leftovers], 5.0)
        self._remove_sockets(state)
        self.home.save(state)
        if purge:
            self._drop_databases(state)
            self._drop_redis_keys(state)
            shutil.rmtree(self.home.root)
        return stopped

    @staticmethod
    def _remove_sockets(state: ClusterState) -> None:
        """The unix sockets SeaweedFS puts in /tmp when the run folder's path is too long."""
        ports = {str(port) for port in state.ports.values()}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):  # noqa: S108 - where weed puts them
            if sock.stem.rsplit("-", 1)[-1] in ports and sock.is_socket():
                with contextlib.suppress(OSError):
                    sock.unlink()

    @staticmethod
    def _drop_redis_keys(state: ClusterState) -> None:
        import redis

        client = redis.Redis.from_url(state.redis_url, socket_timeout=5)
        try:
            for key in client.scan_iter(match=f"{state.redis_prefix}*", count=500):
                client.delete(key)
        except redis.RedisError as exc:
            log.warning("cluster.redis_cleanup_failed", error=type(exc).__name__)
        finally:
            client.close()

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self.home.load()
        parts = []
        health = None
        for part in self.parts(state):
            proc = state.procs.get(part)
            if proc is None:
                parts.append(PartStatus(part, 0, False, {}, [], False, "", 0))
                continue
            alive = procs.is_ours(proc.pid, proc.start_ticks)
            members = (procs.group_members(proc.pid, proc.start_ticks) or [proc.pid]) if alive else []
            bound = procs.listening(members) if alive else []
            if alive and part in {"scheduler", "dag-processor"} and health is None:
                health = self._airflow_health(state) or {}
            parts.append(
                PartStatus(
                    name=part,
                    pid=proc.pid if alive else 0,
                    alive=alive,
                    ports=proc.ports,
                    listening=sorted(f"{addr}:{port}" for addr, port, _ in bound),
                    healthy=alive and self._healthy(state, part, bound, health),
                    log_file=proc.log_file,
                    rss_bytes=procs.rss_bytes(proc.pid, proc.start_ticks) if alive else 0,
                )
            )
        return {
            "name": state.name,
            "folder": str(self.home.root),
            "up": all(p.healthy for p in parts),
            "parts": [p.__dict__ for p in parts],
            "rss_bytes": sum(p.rss_bytes for p in parts),
            "urls": self.urls(state),
            "airflow_login": {
                "username": AIRFLOW_USER,
                "password_file": str(self.home.airflow_passwords_file),
            },
            "databases": {"gbadz": state.gbadz_database, "airflow": state.airflow_database},
            "redis": {"url": state.redis_url, "key_prefix": state.redis_prefix, "queue": state.celery_queue},
        }

    def _healthy(
        self, state: ClusterState, part: str, bound: list[tuple[str, int, int]], health: dict[str, Any] | None
    ) -> bool:
        proc = state.procs[part]
        if not set(proc.ports.values()) <= {port for _, port, _ in bound}:
            return False
        try:
            if part in VOLUMES:
                return httpx.get(f"http://127.0.0.1:{proc.ports[part]}/status", timeout=3).status_code == 200
            if part == "airflow-api":
                return self._airflow_health(state) is not None
            if part in {"scheduler", "dag-processor"}:
                key = part.replace("-", "_")
                return bool(((health or {}).get(key) or {}).get("status") == "healthy")
            if part.startswith("worker-"):
                return self._worker_ready(state, part)
            if part.startswith("api-"):
                url = f"{cenv.replica_url(state, part[-1])}/readyz"
                return httpx.get(url, timeout=3).status_code == 200
        except (httpx.HTTPError, OSError):
            return False
        return True  # master, filer, s3: every port of theirs is listening

    @staticmethod
    def urls(state: ClusterState) -> dict[str, str]:
        return {
            "api_a": cenv.replica_url(state, "a"),
            "api_b": cenv.replica_url(state, "b"),
            "airflow": cenv.airflow_url(state),
            "s3": cenv.s3_endpoint(state),
        }
