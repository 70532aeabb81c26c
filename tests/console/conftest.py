"""Console fixtures: the app behind an https base URL (its cookies are Secure) and a signed-in browser."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gbadz.app import create_app
from gbadz.config import OAuthSettings, S3Settings, Settings
from tests.conftest import lane_settings
from tests.console.world import Person, World, build

if TYPE_CHECKING:
    from playwright.sync_api import Browser

BASE = "https://console.test"


def _console_app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"oauth": OAuthSettings(issuer=BASE)}))


@pytest.fixture(scope="module")
def shared(
    database_url: str, engine: Engine, s3_settings: S3Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FastAPI, Settings, World]:
    """One app and world per module and lane: two ingests and three password hashes, built once.

    Tests that change what others read (approve the pending request, disable a person, trip the
    sign-in limiter) are marked ``fresh_world`` and get an app and world of their own.
    """
    home = tmp_path_factory.mktemp("console")
    settings = lane_settings(database_url, s3_settings, home / "home")
    app = _console_app(settings)
    return app, settings, build(app, settings, home)


def _fresh(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("fresh_world") is not None


@pytest.fixture
def app(request: pytest.FixtureRequest, database_url: str) -> FastAPI:
    """The shared app of the module's lane, or one of its own for a ``fresh_world`` test."""
    if _fresh(request):
        return _console_app(request.getfixturevalue("settings"))
    return request.getfixturevalue("shared")[0]  # type: ignore[no-any-return]


@pytest.fixture
def world(request: pytest.FixtureRequest, app: FastAPI) -> World:
    if _fresh(request):
        return build(app, request.getfixturevalue("settings"), request.getfixturevalue("tmp_path"))
    return request.getfixturevalue("shared")[2]  # type: ignore[no-any-return]


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, once per test module (browser tests only ask for it)."""
    from playwright.sync_api import sync_playwright

    from tests.console.browsing import CHROMIUM, FLAGS

    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make setup` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()
