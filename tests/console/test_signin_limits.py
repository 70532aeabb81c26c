"""Issue #20 item 8: sign-in limits stop guessing without letting a stranger lock a person out."""

from __future__ import annotations

import re
import secrets

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.config import ConsoleSettings, OAuthSettings, Settings
from gbadz.console.signin import DEVICE_COOKIE
from gbadz.identity import people, service
from tests.console.conftest import BASE
from tests.console.test_console import _authorize_url, _pkce

PASSWORD = "correct horse battery staple"


@pytest.fixture
def limited(settings: Settings) -> tuple[FastAPI, str]:
    """An app with small limits (2 per username and address, 4 per username) and one person."""
    console = ConsoleSettings(
        failed_signin_limit=2, failed_signin_user_limit=4, failed_signin_address_limit=50
    )
    app = create_app(settings.model_copy(update={"oauth": OAuthSettings(issuer=BASE), "console": console}))
    username = f"nurse.{secrets.token_hex(3)}"
    with app.state.sessionmaker.begin() as session:
        org = service.create_organization(session, actor="test", name=f"h-{username}", jurisdiction="HK")
        people.create_user(
            session,
            actor="test",
            org_id=org.id,
            username=username,
            display_name="A Nurse",
            role="consumer",
            password=PASSWORD,
        )
    return app, username


def _browser(app: FastAPI, address: str) -> TestClient:
    return TestClient(app, base_url=BASE, follow_redirects=False, client=(address, 40000))


def _attempt(browser: TestClient, username: str, password: str) -> int:
    url = _authorize_url(_pkce()[1])
    page = browser.get(url)
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    answer = browser.post(
        url, data={"username": username, "password": password, "signin_token": token.group(1)}
    )
    return answer.status_code


class TestSignInLimits:
    def test_guessing_from_one_address_is_stopped(self, limited: tuple[FastAPI, str]) -> None:
        """Two wrong passwords from an address, then 429 there, even for the right one."""
        app, username = limited
        with _browser(app, "192.0.2.40") as attacker:
            statuses = [_attempt(attacker, username, "not-it") for _ in range(3)]
            assert [400, 400, 429] == statuses
            assert 429 == _attempt(attacker, username, PASSWORD)

    def test_forwarded_for_does_not_reset_the_count(self, limited: tuple[FastAPI, str]) -> None:
        """Without a trusted proxy, a new X-Forwarded-For per attempt changes nothing."""
        app, username = limited
        with _browser(app, "192.0.2.41") as attacker:
            statuses = []
            for i in range(3):
                attacker.headers["X-Forwarded-For"] = f"198.51.100.{i}"
                statuses.append(_attempt(attacker, username, "not-it"))
        assert [400, 400, 429] == statuses

    def test_a_distributed_guess_is_stopped_but_the_owners_browser_gets_in(
        self, limited: tuple[FastAPI, str]
    ) -> None:
        """Guesses from many addresses stop unknown browsers; the person's own browser still signs in."""
        app, username = limited
        with _browser(app, "198.51.100.50") as own:
            assert 302 == _attempt(own, username, PASSWORD)  # signed in before: a device cookie
            assert own.cookies.get(DEVICE_COOKIE)
            statuses = []
            for i in range(6):  # one guess each from six addresses
                with _browser(app, f"203.0.113.{i}") as bot:
                    statuses.append(_attempt(bot, username, "not-it"))
            assert [400] * 4 + [429] * 2 == statuses  # the username's limit across unknown browsers
            # A fresh browser, even with the right password, waits until the guessing stops...
            with _browser(app, "198.51.100.60") as fresh:
                assert 429 == _attempt(fresh, username, PASSWORD)
            # ...but the person's own browser is counted on its own and gets in.
            assert 302 == _attempt(own, username, PASSWORD)

    def test_a_forged_or_foreign_device_cookie_is_no_pass(self, limited: tuple[FastAPI, str]) -> None:
        """A device cookie of another person, or a tampered one, counts as no cookie."""
        app, username = limited
        with _browser(app, "198.51.100.70") as own:
            assert 302 == _attempt(own, username, PASSWORD)
            cookie = str(own.cookies.get(DEVICE_COOKIE))
        for i in range(4):
            with _browser(app, f"203.0.113.{100 + i}") as bot:
                assert 400 == _attempt(bot, username, "not-it")
        payload, tag = cookie.split(".")
        for forged in (payload[:-2] + "AA." + tag, cookie + "x", "a.b"):
            with _browser(app, "198.51.100.71") as mallory:
                mallory.cookies.set(DEVICE_COOKIE, forged)
                assert 429 == _attempt(mallory, username, PASSWORD)
