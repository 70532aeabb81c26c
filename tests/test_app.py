"""The API's operational surface: liveness, readiness, request ids and the error shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gbadz.app import create_app
from gbadz.config import DatabaseSettings, Settings
from gbadz.errors import Conflict, NotFound
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
