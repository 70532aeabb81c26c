"""Liveness under load: a burst of requests degrades throughput, never the answer to /healthz.

Issue #20, finding 3: 64 connections on ``GET /api/v1/grants`` for 10 s left ``/healthz``
unanswered for 26-75 s (three minutes after a 60 s run). The background refreshers queried
the database on the event loop and waited for pooled connections that only the event loop
could release. Reproduced here before the fix on PostgreSQL: 309 requests in the 10 s, then
``/healthz`` unanswered for over 180 s.

The server is the real thing: ``gbadz serve`` in its own process over the lane's database
and the suite's SeaweedFS, with a real consumer token. The load comes from another process
(``tests/burst.py``) and the probe from this one, a new connection every 100 ms like a
kubelet's. Beside the burst, 100 connections never finish a request head: the server closes
them after its head timeout (2 s here; uvicorn alone keeps them for ever). Margins on a shared
2-core machine: the criterion is liveness, not throughput; the
burst only has to be a burst (a few hundred requests), and 100 ms is about ten times the probe's
usual answer under this load.
"""

from __future__ import annotations

import http.client
import json
import math
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gbadz import db
from gbadz.config import S3Settings
from gbadz.identity import service
from tests.api import free_port
from tests.conftest import cli_env

pytestmark = pytest.mark.e2e

BURST_S = 10.0
CONNECTIONS = 64
PROBE_EVERY_S = 0.1
HEAD_TIMEOUT_S = 2.0
IDLE = 100
BURST = Path(__file__).parent / "burst.py"


def _consumer(engine: Engine) -> tuple[str, str]:
    """Register a consumer organisation and client in the (migrated) lane database."""
    with db.make_sessionmaker(engine).begin() as session:
        org = service.create_organization(
            session, actor="test", name=f"burst-consumer-{secrets.token_hex(4)}", jurisdiction="HK"
        )
        issued = service.create_client(session, actor="test", org_id=org.id, role="consumer")
    return issued.client.client_id, issued.client_secret or ""


@pytest.fixture
def served_env() -> dict[str, str]:
    """Extra settings for the served process (a test class overrides this)."""
    return {}


@pytest.fixture
def served(
    database_url: str, engine: Engine, s3_settings: S3Settings, tmp_path: Path, served_env: dict[str, str]
) -> Iterator[tuple[int, str]]:
    """``gbadz serve`` on a loopback port over the lane's database; yields the port and a consumer token."""
    client_id, secret = _consumer(engine)
    port = free_port()
    env = cli_env(
        tmp_path / "home",
        **{"GBADZ_ENV": "test", "GBADZ_LOG_LEVEL": "WARNING", "GBADZ_API__ACCESS_LOG": "false"} | served_env,
        GBADZ_API__REQUEST_HEADER_TIMEOUT_S=str(HEAD_TIMEOUT_S),
        GBADZ_DB__URL=database_url,
        GBADZ_S3__ENDPOINT_URL=s3_settings.endpoint_url or "",
        GBADZ_S3__ACCESS_KEY=s3_settings.access_key or "",
        GBADZ_S3__SECRET_KEY=s3_settings.secret_key.get_secret_value() if s3_settings.secret_key else "",
        GBADZ_CRYPTO__PASSPHRASE="the test suite's keyring passphrase",
        GBADZ_CRYPTO__SCRYPT_LOG2_N="10",
        GBADZ_OAUTH__ISSUER=f"http://127.0.0.1:{port}",
    )
    errors = tmp_path / "serve.stderr"
    with errors.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "gbadz", "serve", "--port", str(port)],
            env=env,
            stdout=stderr,  # uvicorn's access log goes to stdout
            stderr=stderr,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gbadz serve did not start: " + errors.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        token = httpx.post(
            f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        ).json()["access_token"]
        yield port, token
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _probe(port: int, stop: threading.Event, answers: list[tuple[float, float, int]]) -> None:
    """GET /healthz on a new connection every 100 ms: (sent at, seconds to the answer, status)."""
    while not stop.is_set():
        sent = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            status = response.status
        except OSError:
            status = 0
        finally:
            connection.close()
        took = time.monotonic() - sent
        answers.append((sent, took, status))
        stop.wait(max(0.0, PROBE_EVERY_S - took))


def _burst(port: int, path: str, token: str, seconds: float) -> dict[str, Any]:
    """Run ``tests/burst.py`` (64 connections on ``path``) and return its report."""
    burst = subprocess.run(
        [sys.executable, str(BURST), str(port), path, str(CONNECTIONS), str(seconds), f"Bearer {token}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    report: dict[str, Any] = json.loads(burst.stdout)
    return report


def _idle_connections(port: int) -> list[socket.socket]:
    """Connections that never finish a request: half send nothing, half half a request head."""
    sockets = []
    for i in range(IDLE):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (the read sees the end of the stream, or a reset)."""
    sock.settimeout(0.5)
    try:
        return b"" == sock.recv(1024)
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


class TestBurstOnGrants:
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_healthz_answers_within_100_ms_throughout_a_64_connection_burst(
        self, served: tuple[int, str]
    ) -> None:
        """64 connections on the grants list for 10 s beside 100 idle ones: /healthz answers in under 100 ms throughout."""
        port, token = served
        path = "/api/v1/grants"
        # A short burst first: the first use of a route imports and compiles what it needs, and
        # the first burst starts the worker threads and opens the pool's connections, once.
        _burst(port, path, token, 1.0)
        idle = _idle_connections(port)
        answers: list[tuple[float, float, int]] = []
        stop = threading.Event()
        prober = threading.Thread(target=_probe, args=(port, stop, answers), daemon=True)
        prober.start()
        try:
            report = _burst(port, path, token, BURST_S)
        finally:
            stop.set()
            prober.join(130)
        during = [
            (took, status) for sent, took, status in answers if report["started"] <= sent <= report["ended"]
        ]
        statuses = report["statuses"]

        assert len(during) >= BURST_S / PROBE_EVERY_S * 0.8, f"the probe ran {len(during)} times"
        assert {200} == {status for _, status in during}
        # Under 100 ms throughout. The suite runs this beside another test worker on two cores, so
        # one probe in a hundred may be late by a scheduler tick — never by a quarter second.
        # (bench/bench_load.py measures the strict maximum on a quiet machine.)
        late = sorted(took for took, _ in during if took >= 0.1)
        slowest = max(took for took, _ in during)
        # One in a hundred, rounded up: 10 s of probes every 100 ms put 99 inside the burst's
        # window, and floor division allowed none (seen failing once, on the burst's first probe).
        allowed = math.ceil(len(during) / 100)
        assert len(late) <= allowed, f"/healthz over 100 ms {len(late)} times: {late} ({statuses})"
        assert slowest < 0.25, f"/healthz took {slowest * 1000:.0f} ms during the burst ({statuses})"
        # It was a burst, and it degraded into successes or "busy, retry", never into errors.
        assert statuses.get("200", 0) >= 300, statuses
        assert set(statuses) <= {"200", "503"}, statuses
        # The connections that never sent a full request head were closed after the head timeout
        # (uvicorn alone keeps them open for ever), and they did not slow the probe above.
        assert IDLE == sum(_closed_by_server(sock) for sock in idle)


SLOW = 8  # slow-body clients: twice the slots the server below has


class TestSlowBodies:
    @pytest.fixture
    def served_env(self) -> dict[str, str]:
        # Four slots, a 3 s queue and a 3 s body deadline: without the fix the grants call below
        # waits the whole queue timeout and gets 503; with it, it is answered at once.
        return {
            "GBADZ_API__MAX_ACTIVE_REQUESTS": "4",
            "GBADZ_API__QUEUE_TIMEOUT_S": "3",
            "GBADZ_API__REQUEST_BODY_TIMEOUT_S": "3",
        }

    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    def test_trickled_bodies_hold_no_slot_and_are_cut_off(self, served: tuple[int, str]) -> None:
        """Unauthenticated clients trickling request bodies cannot take the slots others need (review of #20)."""
        port, token = served
        head = (
            b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ng"
        )
        slow = []
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(head)
            slow.append(sock)
        try:
            time.sleep(0.5)  # every slow request has reached the server
            started = time.monotonic()
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/grants",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            took = time.monotonic() - started
            assert (200, True) == (answer.status_code, took < 2.0), f"{answer.status_code} after {took:.2f} s"
            # Past the body deadline each trickling client is answered 408 and closed.
            firsts = [sock.recv(64) for sock in slow]
            assert [True] * SLOW == [first.startswith(b"HTTP/1.1 408") for first in firsts], firsts
        finally:
            for sock in slow:
                sock.close()


class TestAccessLog:
    @pytest.fixture
    def served_env(self) -> dict[str, str]:
        return {"GBADZ_LOG_LEVEL": "INFO", "GBADZ_API__ACCESS_LOG": "true"}

    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    def test_delivery_tickets_stay_out_of_the_access_log(
        self, served: tuple[int, str], tmp_path: Path
    ) -> None:
        """A delivery-file URL is logged without its ticket, a bearer credential for the data (review of #20)."""
        port, _ = served
        ticket = "eyJnIjoiUkVWSUVXLVRJQ0tFVCJ9.c2lnbmF0dXJlLXNlY3JldA"
        assert 404 == httpx.get(f"http://127.0.0.1:{port}/api/v1/delivery-files/{ticket}?x=1").status_code
        log = tmp_path / "serve.stderr"
        deadline = time.monotonic() + 5
        while (
            "/delivery-files/[ticket]" not in log.read_text(errors="replace") and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        assert "/delivery-files/[ticket]" in text
        assert "c2lnbmF0dXJl" not in text
        assert "eyJnIjoi" not in text

    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    def test_form_tokens_stay_out_of_the_access_log(self, served: tuple[int, str], tmp_path: Path) -> None:
        """A multipart form's ``?csrf=`` token is logged as [redacted], the rest of the address kept."""
        port, _ = served
        token = "Zm9ybS10b2tlbi1zZWNyZXQtdmFsdWU"
        httpx.post(f"http://127.0.0.1:{port}/console/provider/datasets?x=1&csrf={token}&etag=a", timeout=10)
        httpx.get(f"http://127.0.0.1:{port}/console/login?CSRF={token}", timeout=10)
        log = tmp_path / "serve.stderr"
        deadline = time.monotonic() + 5
        while log.read_text(errors="replace").count("[redacted]") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        assert "/console/provider/datasets?x=1&csrf=[redacted]&etag=a" in text
        assert "/console/login?CSRF=[redacted]" in text
        assert token not in text
