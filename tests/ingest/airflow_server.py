"""A real Airflow 3 for tests: api-server + scheduler (LocalExecutor) + dag-processor on loopback.

Its own AIRFLOW_HOME and SQLite metadata database, the repo's ``dags/``, a SimpleAuthManager user
with a generated password, one JWT secret for all three components, and the GBADZ_* settings of
the test's app in their environment (the DAG's tasks read the app's database, S3 and keyring).
Every process is started in a session of its own and stopped by its id (process group): SIGTERM,
then SIGKILL after a grace (the api-server sometimes ignores SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gbadz.embedded import free_loopback_ports

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "gbadz_ingest"
USER = "gbadz-trigger"


@dataclass
class AirflowServer:
    home: Path
    port: int
    username: str
    password: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30)

    def dag_runs(self) -> list[dict[str, object]]:
        response = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
        response.raise_for_status()
        return list(response.json()["dag_runs"])

    def start_api_server(self) -> None:
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port))

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.home / f"{name}.log").open("ab")
        airflow = str(Path(sys.executable).parent / "airflow")
        self.processes[name] = subprocess.Popen(
            [airflow, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
            start_new_session=True,
        )
        log.close()

    def stop(self, name: str, grace_s: float = 10.0) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # the group of the process we started, by its id
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Its children (the executor's workers, gunicorn's) share its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def wait_healthy(self, timeout_s: float = 180.0) -> None:
        """The api-server answers and the DAG is parsed, active and unpaused."""
        deadline = time.monotonic() + timeout_s
        last = "not started"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"airflow {name} exited {process.returncode}: see {self.home}/{name}.log"
                    )
            try:
                response = self.get(f"/api/v2/dags/{DAG_ID}")
                if response.status_code == 200 and not response.json().get("is_paused"):
                    return
                last = f"DAG: {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(1.0)
        raise RuntimeError(f"Airflow not ready after {timeout_s:.0f} s ({last}); logs in {self.home}")


def start(home: Path, gbadz_env: dict[str, str]) -> AirflowServer:
    """Migrate a fresh metadata database, then start the three components; ready when it returns."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_loopback_ports(1)["0"]
    password = secrets.token_urlsafe(24)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    passwords.chmod(0o600)
    inherited = {
        k: v
        for k, v in os.environ.items()  # noqa: TID251 - the components need PATH, HOME and friends
        if not k.startswith(("GBADZ_", "AIRFLOW"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env = (
        inherited
        | gbadz_env
        | {
            "PATH": venv_bin + os.pathsep + inherited.get("PATH", ""),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(48),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        }
    )
    server = AirflowServer(home, port, USER, password, env)
    airflow = str(Path(sys.executable).parent / "airflow")
    migrated = subprocess.run(
        [airflow, "db", "migrate"], env=env, cwd=home, capture_output=True, timeout=300, check=False
    )
    if migrated.returncode != 0:
        raise RuntimeError("airflow db migrate failed: " + migrated.stderr.decode()[-2000:])
    try:
        server.start_api_server()
        server._spawn("scheduler", "scheduler", "--skip-serve-logs")
        server._spawn("dag-processor", "dag-processor")
        server.wait_healthy()
    except BaseException:
        server.stop_all()
        raise
    return server
