"""Console fixtures: the app behind an https base URL (its cookies are Secure) and a signed-in browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from tests.console.world import Person, World, build

BASE = "https://console.test"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"oauth": OAuthSettings(issuer=BASE)}))


@pytest.fixture
def world(app: FastAPI, settings: Settings, tmp_path: Path) -> World:
    return build(app, settings, tmp_path)


@pytest.fixture
def browser_client(app: FastAPI) -> Callable[[], TestClient]:
    opened: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(app, base_url=BASE, follow_redirects=False)
        opened.append(client)
        return client

    return make


def sign_in(client: TestClient, person: Person, next_path: str = "/console/") -> TestClient:
    """Walk the real flow: console -> authorization endpoint -> sign-in form -> callback."""
    start = client.get(f"/console/login?next={next_path}")
    assert 303 == start.status_code
    page = client.get(start.headers["location"])
    assert 200 == page.status_code, page.text
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    posted = client.post(
        start.headers["location"],
        data={"username": person.username, "password": person.password, "signin_token": token.group(1)},
    )
    assert 302 == posted.status_code, posted.text
    finished = client.get(posted.headers["location"])
    assert 303 == finished.status_code, finished.text
    return client


@pytest.fixture
def signed_in(world: World, browser_client: Callable[[], TestClient]) -> Callable[[str], TestClient]:
    def make(role: str) -> TestClient:
        return sign_in(browser_client(), world.people[role])

    return make
