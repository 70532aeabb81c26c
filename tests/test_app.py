"""The API's operational surface: liveness, readiness, request ids and the error shape."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gbadz import log as gbadz_log
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, Settings
from gbadz.deps import ReadSession
from gbadz.errors import Conflict, NotFound
from tests.api import free_port
from tests.conftest import wrong_secret


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


class Item(BaseModel):
    name: str
    size: int


def _with_probe_routes(app: FastAPI) -> FastAPI:
    """Routes that raise on purpose, to observe the error handlers from outside."""

    @app.post("/_probe/items/{item_id}")
    async def create_item(item_id: int, item: Item) -> Item:
        if item_id == 404:
            raise NotFound("dataset ds-404 not found")
        if item_id == 409:
            raise Conflict("dataset ds-409 already has version 3")
        if item_id == 500:
            raise RuntimeError("secret internals: password=hunter2")
        return item

    return app


class TestRoot:
    def test_root_leads_to_the_console(self, client: TestClient) -> None:
        """Opening the server's address lands in the console, and `/` is not an API operation."""
        response = client.get("/", follow_redirects=False)
        assert (307, "/console/") == (response.status_code, response.headers["location"])
        assert "/" not in client.get("/openapi.json").json()["paths"]


class TestLiveness:
    def test_healthz(self, client: TestClient) -> None:
        """Liveness answers without touching dependencies."""
        response = client.get("/healthz")
        assert (200, {"status": "ok"}) == (response.status_code, response.json())


class TestReadiness:
    def test_ready_with_real_services(self, client: TestClient) -> None:
        """With the database migrated and S3 reachable, /readyz says ready and why."""
        response = client.get("/readyz")
        assert 200 == response.status_code, response.text
        assert {"database", "s3"} == set(response.json()["checks"])
        assert "ok" == response.json()["checks"]["s3"]

    def test_wrong_s3_secret(self, settings: Settings) -> None:
        """A wrong S3 secret makes /readyz 503 with the same one-line reason the CLI gives."""
        bad = settings.model_copy(update={"s3": wrong_secret(settings.s3)})
        with TestClient(create_app(bad)) as client:
            response = client.get("/readyz")
        body = response.json()
        assert (503, "NotReady") == (response.status_code, body["error"])
        assert "SignatureDoesNotMatch" in body["detail"]
        assert "GBADZ_S3__SECRET_KEY" in body["detail"]
        assert body["request_id"] == response.headers["x-request-id"]
        assert body["checks"]["database"].startswith("ok")

    def test_unreachable_database(self, settings: Settings) -> None:
        """An unreachable database makes /readyz 503 naming the database and the setting."""
        bad = settings.model_copy(
            update={"db": DatabaseSettings(url="postgresql://gbadz@127.0.0.1:1/gbadz", connect_timeout_s=2)}
        )
        with TestClient(create_app(bad)) as client:
            response = client.get("/readyz")
        body = response.json()
        assert 503 == response.status_code
        assert "cannot connect to the database" in body["detail"]
        assert "GBADZ_DB__URL" in body["detail"]
        assert "ok" == body["checks"]["s3"]


class TestErrorShape:
    def test_unknown_route(self, client: TestClient) -> None:
        """An unknown path is a 404 in the gbadz error shape."""
        response = client.get("/no/such/route")
        body = response.json()
        assert (404, "NotFound") == (response.status_code, body["error"])
        assert body["request_id"] == response.headers["x-request-id"]

    def test_wrong_method(self, client: TestClient) -> None:
        """A wrong method is 405 in the same shape."""
        response = client.post("/healthz")
        assert (405, "MethodNotAllowed") == (response.status_code, response.json()["error"])

    def test_business_errors_keep_their_status(self, settings: Settings) -> None:
        """Expected errors come out with their own status and message, never as 500."""
        with TestClient(_with_probe_routes(create_app(settings))) as client:
            not_found = client.post("/_probe/items/404", json={"name": "a", "size": 1})
            conflict = client.post("/_probe/items/409", json={"name": "a", "size": 1})
        assert (404, "NotFound", "dataset ds-404 not found") == (
            not_found.status_code,
            not_found.json()["error"],
            not_found.json()["detail"],
        )
        assert (409, "Conflict") == (conflict.status_code, conflict.json()["error"])

    def test_validation_names_field_and_reason(self, settings: Settings) -> None:
        """Payload validation is 422 naming each bad field, without echoing the input."""
        with TestClient(_with_probe_routes(create_app(settings))) as client:
            response = client.post("/_probe/items/1", json={"name": "a", "size": "secret-big"})
        body = response.json()
        assert (422, "RequestValidationError") == (response.status_code, body["error"])
        assert ["body", "size"] == body["detail"][0]["loc"]
        assert "secret-big" not in response.text

    def test_a_body_that_is_not_utf8_is_a_validation_error(self, settings: Settings) -> None:
        """JSON that is not UTF-8 is 422 naming the body, like other malformed JSON (FastAPI said a bare 400)."""
        with TestClient(_with_probe_routes(create_app(settings))) as client:
            response = client.post(
                "/_probe/items/1", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
            )
        body = response.json()
        assert (422, "RequestValidationError") == (response.status_code, body["error"])
        assert [
            {"loc": ["body"], "msg": "the body is not UTF-8 encoded JSON", "type": "json_invalid"}
        ] == body["detail"]

    def test_unexpected_error_is_generic(self, settings: Settings) -> None:
        """A bug is a 500 with a generic message and the request id; internals are not leaked."""
        with TestClient(_with_probe_routes(create_app(settings)), raise_server_exceptions=False) as client:
            response = client.post("/_probe/items/500", json={"name": "a", "size": 1})
        body = response.json()
        assert (500, "InternalServerError") == (response.status_code, body["error"])
        assert "hunter2" not in response.text
        assert body["request_id"]
        assert body["request_id"] == response.headers["x-request-id"]


class TestRequestId:
    def test_incoming_id_is_kept(self, client: TestClient) -> None:
        """A caller's well-formed X-Request-ID is echoed, so logs can be correlated."""
        response = client.get("/healthz", headers={"X-Request-ID": "trace-abc_123"})
        assert "trace-abc_123" == response.headers["x-request-id"]

    def test_malformed_id_is_replaced(self, client: TestClient) -> None:
        """A malformed or oversized id is replaced, never reflected."""
        response = client.get("/healthz", headers={"X-Request-ID": "<script>" + "x" * 100})
        assert "<script>" not in response.headers["x-request-id"]
        assert 32 == len(response.headers["x-request-id"])


def _with_failing_route(app: FastAPI) -> FastAPI:
    """A route whose frames hold a secret in a local variable when it fails."""

    def deeper(depth: int, bearer: str) -> None:
        if depth == 0:
            raise RuntimeError("the probe failed")
        deeper(depth - 1, bearer)

    @app.get("/_probe/fail")
    def fail() -> None:
        bearer = "tok-" + secrets.token_hex(8)
        SEEN.append(bearer)
        padding = {str(i): list(range(50)) for i in range(2000)}  # a large local, costly to render
        deeper(20, bearer + str(len(padding)))

    return app


SEEN: list[str] = []


@contextlib.contextmanager
def _served(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on loopback, with the server's error log as `gbadz serve` sets it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", access_log=False)
    )
    gbadz_log.quiet_server_errors()  # after uvicorn configured its loggers, as `gbadz serve` does
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class TestUnhandledErrorLog:
    @pytest.fixture(autouse=True)
    def _restore_logging(self) -> Iterator[None]:
        yield
        gbadz_log.configure("INFO")

    @pytest.mark.parametrize("level", ["INFO", "DEBUG"])
    def test_one_line_without_locals_in_bounded_time(
        self, settings: Settings, level: str, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """An unhandled error logs its class in one line (a traceback only at DEBUG), never a local variable."""
        gbadz_log.configure(level)
        SEEN.clear()
        app = _with_failing_route(create_app(settings.model_copy(update={"log_level": level})))
        capfd.readouterr()
        with _served(app) as base:
            assert 500 == httpx.get(f"{base}/_probe/fail", timeout=30).status_code  # first use: imports
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                response = httpx.get(f"{base}/_probe/fail", timeout=30)
                timings.append(time.perf_counter() - started)
                assert 500 == response.status_code
            time.sleep(0.2)  # let the server's log lines reach stderr
        logged = capfd.readouterr()
        text = logged.out + logged.err
        lines = [line for line in text.splitlines() if "unhandled error" in line]
        assert 6 == len(lines), text[-3000:]
        assert all("error=RuntimeError" in line and "request_id=" in line for line in lines)
        assert 6 == len(SEEN)
        assert not any(secret in text for secret in SEEN)  # no frame's locals, at any level
        assert "Exception in ASGI application" not in text  # logged once, by us
        assert ("Traceback" in text) == (level == "DEBUG")
        # Rendering a traceback with locals took about a second per error (issue #20, finding 4);
        # the median, because one answer on a shared machine can wait for a CPU.
        assert sorted(timings)[2] < 0.25, timings


class TestBusy:
    def test_a_request_that_cannot_get_a_session_in_time_is_503_with_retry_after(
        self, settings: Settings
    ) -> None:
        """With every request session taken past the pool timeout, the next request is 503 + Retry-After, not a hang."""
        busy = settings.model_copy(
            update={
                "api": settings.api.model_copy(update={"worker_threads": 1}),
                "db": settings.db.model_copy(update={"pool_timeout_s": 0.5}),
            }
        )
        app = create_app(busy)
        release = threading.Event()

        @app.get("/_probe/hold")
        def hold(session: ReadSession) -> dict[str, int]:
            value = int(session.execute(sa.text("SELECT 1")).scalar_one())
            release.wait(10)
            return {"value": value}

        with TestClient(app) as client:
            holder = threading.Thread(target=client.get, args=("/_probe/hold",))
            holder.start()
            time.sleep(0.3)  # the holder has the only session
            started = time.perf_counter()
            response = client.get("/_probe/hold")
            waited = time.perf_counter() - started
            release.set()
            holder.join(10)
            after = client.get("/healthz")
        body = response.json()
        assert (503, "DatabaseBusy", "1") == (
            response.status_code,
            body["error"],
            response.headers.get("retry-after"),
        )
        assert 0.4 < waited < 5, waited
        assert 200 == after.status_code
