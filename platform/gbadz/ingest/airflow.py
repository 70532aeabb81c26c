"""A small client of Airflow 3's REST API: trigger the ingest DAG for an upload, read a run back.

Only what gbadz needs (ADR 0026): a token from ``POST /auth/token`` (cached until shortly before
it expires, fetched again on a 401), ``POST /api/v2/dags/{dag_id}/dagRuns`` with a
``dag_run_id`` gbadz chooses (Airflow answers 409 when that id exists: the run was already
triggered, so a second trigger starts nothing), and the run's state and its task instances'
states.

Errors are :class:`AirflowUnavailable` with a reason written here: the status code and what it
means, or the class of the connection error. Never the password, the token, the api-server's
address (the provider sees the reason; the operator's log names the address) or a body Airflow
sent back (an error body may echo what it was given).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from gbadz.config import AirflowSettings

#: Fetch a new token this long before the cached one expires.
TOKEN_MARGIN_S = 60.0
#: When a token's expiry cannot be read, keep it this long.
TOKEN_FALLBACK_S = 300.0
#: Airflow's final DAG run states.
FINAL = frozenset({"success", "failed"})


class AirflowUnavailable(Exception):
    """Airflow could not be reached or refused the call; ``reason`` is safe to store and show."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Triggered:
    dag_run_id: str
    created: bool  # False: Airflow already had a run with this id (409)
    state: str | None


@dataclass(frozen=True)
class RunState:
    dag_run_id: str
    state: str
    tasks: dict[str, str]

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def failing_task(self) -> str | None:
        """The first task that failed (the DAG's order), else one that could not run because of it."""
        for wanted in ("failed", "upstream_failed"):
            for task, state in self.tasks.items():
                if state == wanted:
                    return task
        return None


def dag_run_id(run_id: int, source_sha256: str, generation: int = 0) -> str:
    """The Airflow run id of an upload: the same upload (run id and bytes) always gives the same
    id, so Airflow itself refuses a second run of it (409). ``generation`` > 0 only after an
    operator queued a failed run again (``gbadz ingest-requeue``)."""
    base = f"gbadz-upload-{int(run_id)}-{source_sha256[:16].lower()}"
    return base if generation <= 0 else f"{base}-r{int(generation)}"


def _expiry(token: str) -> float:
    """The token's ``exp`` (read, not verified: Airflow verifies it), as a monotonic deadline."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        remaining = float(claims["exp"]) - time.time()
    except (IndexError, KeyError, TypeError, ValueError):
        remaining = TOKEN_FALLBACK_S
    return time.monotonic() + max(0.0, remaining - TOKEN_MARGIN_S)


class AirflowClient:
    """Thread-safe: the API's upload route and its background worker share one client."""

    def __init__(self, settings: AirflowSettings) -> None:
        if not settings.configured or settings.url is None:
            raise ValueError("Airflow is not configured: set GBADZ_AIRFLOW__URL, __USERNAME and __PASSWORD")
        self.settings = settings
        parts = urlsplit(settings.url)
        #: What the operator's log names: scheme, host and port only.
        self.where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.verify_tls
        self._http = httpx.Client(
            base_url=settings.url, timeout=settings.timeout_s, verify=verify, follow_redirects=False
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0

    def close(self) -> None:
        self._http.close()

    # -- authentication ------------------------------------------------------------------------

    def _login(self, timeout: float | None) -> str:
        password = self.settings.password.get_secret_value() if self.settings.password else ""
        response = self._send(
            "POST",
            "/auth/token",
            json={"username": self.settings.username, "password": password},
            timeout=timeout,
            token=None,
        )
        if response.status_code in (401, 403):
            raise AirflowUnavailable(
                f"Airflow refused the credentials of GBADZ_AIRFLOW__USERNAME ({response.status_code})",
                response.status_code,
            )
        if response.status_code not in (200, 201):
            raise AirflowUnavailable(
                f"Airflow answered {response.status_code} to the token request",
                response.status_code,
            )
        try:
            token = str(response.json()["access_token"])
        except (ValueError, KeyError, TypeError):
            raise AirflowUnavailable("Airflow sent no access token") from None
        return token

    def _bearer(self, timeout: float | None, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh or self._token is None or time.monotonic() >= self._token_until:
                token = self._login(timeout)
                self._token, self._token_until = token, _expiry(token)
            return self._token

    def _send(
        self, method: str, path: str, *, json: Any = None, timeout: float | None, token: str | None
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._http.request(
                method, path, json=json, headers=headers, timeout=timeout or self.settings.timeout_s
            )
        except httpx.TimeoutException:
            raise AirflowUnavailable("Airflow did not answer in time") from None
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow is unreachable ({type(exc).__name__})") from None

    def _call(
        self, method: str, path: str, *, json: Any = None, timeout: float | None = None
    ) -> httpx.Response:
        """One authenticated call; a 401 (token expired or revoked) fetches a token and tries once more."""
        response = self._send(method, path, json=json, timeout=timeout, token=self._bearer(timeout))
        if response.status_code == 401:
            response = self._send(
                method, path, json=json, timeout=timeout, token=self._bearer(timeout, fresh=True)
            )
        if response.status_code in (401, 403):
            raise AirflowUnavailable(
                f"Airflow refused GBADZ_AIRFLOW__USERNAME for {method} on the DAG ({response.status_code})",
                response.status_code,
            )
        return response

    # -- the DAG -------------------------------------------------------------------------------

    def _runs(self) -> str:
        return f"/api/v2/dags/{quote(self.settings.dag_id, safe='')}/dagRuns"

    def trigger(self, run_id: str, conf: dict[str, Any], *, timeout: float | None = None) -> Triggered:
        """Start a run of the DAG with this id and conf; an existing run of that id is not started again."""
        response = self._call(
            "POST",
            self._runs(),
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
            timeout=timeout,
        )
        if response.status_code == 409:
            return Triggered(run_id, created=False, state=None)
        if response.status_code in (200, 201):
            state = response.json().get("state") if response.content else None
            return Triggered(run_id, created=True, state=str(state) if state else None)
        explain = {
            400: "refused the run (the DAG has import errors, or its params changed)",
            404: f"does not know the DAG {self.settings.dag_id} (not parsed yet, or GBADZ_AIRFLOW__DAG_ID is wrong)",
        }.get(response.status_code, "failed")
        raise AirflowUnavailable(f"Airflow {explain} ({response.status_code})", response.status_code)

    def run_state(self, run_id: str, *, timeout: float | None = None) -> RunState | None:
        """The run's state and each task's state (``none`` for a task not scheduled yet); None when
        Airflow has no run with this id."""
        path = f"{self._runs()}/{quote(run_id, safe='')}"
        response = self._call("GET", path, timeout=timeout)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AirflowUnavailable(
                f"Airflow answered {response.status_code} for a DAG run", response.status_code
            )
        state = str(response.json().get("state") or "none")
        listed = self._call("GET", f"{path}/taskInstances", timeout=timeout)
        if listed.status_code != 200:
            raise AirflowUnavailable(
                f"Airflow answered {listed.status_code} for a run's tasks", listed.status_code
            )
        tasks = {
            str(ti.get("task_id"))[:100]: str(ti.get("state") or "none")[:40]
            for ti in listed.json().get("task_instances", [])
            if isinstance(ti, dict)
        }
        return RunState(run_id, state, tasks)
