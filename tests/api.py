"""Shared API fixtures: a real app, real organisations and clients, real tokens (used by every API test)."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from gbadz.embedded import free_loopback_ports
from gbadz.identity import service


@dataclass
class Client:
    client_id: str
    client_secret: str | None
    org_id: str
    role: str


def make_client(app: FastAPI, role: str, jurisdiction: str = "HK", **kwargs: object) -> Client:
    with app.state.sessionmaker.begin() as session:
        org = service.create_organization(
            session,
            actor="test",
            name=f"{role}-org-{secrets.token_hex(4)}",
            jurisdiction=jurisdiction,
            operator=role == "admin",  # only the operator's clients may be administrators
        )
        issued = service.create_client(session, actor="test", org_id=org.id, role=role, **kwargs)  # type: ignore[arg-type]
        return Client(issued.client.client_id, issued.client_secret, org.id, role)


def basic(client: Client) -> dict[str, str]:
    raw = f"{client.client_id}:{client.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def fetch_token(http: TestClient, client: Client, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    response = http.post("/oauth/token", data=data, headers=basic(client))
    assert 200 == response.status_code, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def clients(app: FastAPI) -> dict[str, Client]:
    """One client per role, each in an organisation of its own."""
    return {role: make_client(app, role) for role in ("provider", "consumer", "compliance_officer", "admin")}


def free_port() -> int:
    """A loopback port to listen on, outside the range outgoing connections draw from."""
    return free_loopback_ports(1)["0"]


@pytest.fixture
def live_server(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The API served by uvicorn on a loopback port, its issuer set to that address."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    live_settings = settings.model_copy(update={"oauth": OAuthSettings(issuer=base)})
    application = create_app(live_settings)
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield base, application
    finally:
        server.should_exit = True
        thread.join(10)
