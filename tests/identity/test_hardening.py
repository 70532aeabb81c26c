"""Issue #20 items 7 and 8 for identity: secrets out of logs and files, limiters, live revocation."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import log as gbadz_log
from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from tests.api import Client, basic, make_client


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """gbadz's own logging at its most verbose (DEBUG, every library), restored afterwards."""
    gbadz_log.configure("DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        structlog.reset_defaults()


def _basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


class TestSecretsStayOutOfLogs:
    def test_failed_client_authentication(
        self,
        settings: Settings,
        debug_logs: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Failed client authentications, however mangled, log neither the secret nor a prefix of it."""
        app: FastAPI = create_app(
            settings.model_copy(update={"oauth": OAuthSettings(failed_auth_limit=1000)})
        )
        client: Client = make_client(app, "consumer")
        secret = str(client.client_secret)
        grant = {"grant_type": "client_credentials"}
        attempts: list[tuple[dict[str, str], dict[str, str]]] = [
            (grant, _basic(f"{client.client_id}:{secret}x")),  # a wrong secret
            (grant, _basic(f"{secret}:{client.client_id}")),  # fields swapped
            (grant, _basic(secret)),  # the secret alone
            (grant, _basic(f"{secret}:")),  # the secret as the id, no secret
            (grant | {"client_id": secret}, {}),  # the secret in the id field of a form
            (grant, {"Authorization": f"Basic {secret}"}),  # not base64 at all
            (
                grant,
                {"Authorization": "Basic " + base64.b64encode(b"\xb4" + secret.encode()).decode()},
            ),  # not UTF-8
            (
                grant,
                _basic(f"{client.client_id}\x00{secret[:10]}:{secret}"),
            ),  # NUL: PostgreSQL refused it with a 500
            (grant | {"client_id": f"{client.client_id}\x00", "client_secret": secret}, {}),
            (grant | {"client_id": secret, "client_secret": client.client_id}, {}),
            (grant | {"client_id": client.client_id + secret[:10], "client_secret": secret}, {}),
        ]
        statuses = []
        with TestClient(app) as http:
            for form, headers in attempts:
                for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke"):
                    response = http.post(path, data=form | {"token": "x"}, headers=headers)
                    statuses.append(response.status_code)
        assert all(status in (400, 401) for status in statuses), statuses
        out, err = capfd.readouterr()
        logged = out + err + debug_logs.text
        assert secret not in logged
        assert secret[:10] not in logged


def _person(app: FastAPI, role: str = "consumer") -> tuple[str, str]:
    """A person in an organisation of their own, and an access token minted for them as the console does."""
    import secrets

    from gbadz.identity import people, service

    with app.state.sessionmaker.begin() as session:
        org = service.create_organization(
            session, actor="test", name=f"people-{secrets.token_hex(4)}", jurisdiction="HK"
        )
        user = people.create_user(
            session,
            actor="test",
            org_id=org.id,
            username=f"p{secrets.token_hex(4)}",
            display_name="A Person",
            role=role,
            password=secrets.token_urlsafe(16),
        )
        username, org_id = user.username, org.id
    token = app.state.authorization_server.person_token_for(username, org_id, role)["access_token"]
    return username, str(token)


class TestDisabledPersonToken:
    def test_refused_once_disabled(self, app: FastAPI) -> None:
        """A disabled person's bearer token is refused within the revocation refresh (1 s), not at expiry."""
        from gbadz.identity import people

        username, token = _person(app)
        with TestClient(app) as http:
            headers = {"Authorization": f"Bearer {token}"}
            assert 200 == http.get("/api/v1/me", headers=headers).status_code
            # Disabled as `gbadz users disable` does: another process, straight in the database.
            with app.state.sessionmaker.begin() as session:
                people.disable_user(session, actor="cli:admin", username=username)
            started = time.monotonic()
            while http.get("/api/v1/me", headers=headers).status_code == 200:
                assert time.monotonic() - started < 3.0, "the disabled person's token still works"
                time.sleep(0.05)
            refused = http.get("/api/v1/me", headers=headers)
            assert 401 == refused.status_code
            assert "disabled" in refused.json()["detail"]
            introspected = http.post(
                "/oauth/introspect", data={"token": token}, headers=basic(make_client(app, "admin"))
            )
            assert {"active": False} == introspected.json()


def _limited_app(settings: Settings, limit: int = 5, proxies: list[str] | None = None) -> FastAPI:
    from gbadz.config import ApiSettings

    return create_app(
        settings.model_copy(
            update={
                "oauth": OAuthSettings(failed_auth_limit=limit),
                "api": ApiSettings(trusted_proxies=proxies or []),
            }
        )
    )


def _token_status(http: TestClient, client: Client, forwarded: str | None = None) -> int:
    headers = basic(client) | ({"X-Forwarded-For": forwarded} if forwarded else {})
    return http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=headers).status_code


def _wrong(client: Client) -> Client:
    return Client(client.client_id, "a-guess", client.org_id, client.role)


class TestClientAuthenticationLimits:
    def test_forwarded_for_is_ignored_without_a_trusted_proxy(self, settings: Settings) -> None:
        """A guesser rotating X-Forwarded-For is still counted under its socket address, and stopped."""
        app = _limited_app(settings)
        victim = make_client(app, "consumer")
        with TestClient(app, client=("192.0.2.10", 40000)) as attacker:
            statuses = [_token_status(attacker, _wrong(victim), f"198.51.100.{i}") for i in range(7)]
        assert [401] * 5 + [429] * 2 == statuses

    def test_a_trusted_proxy_forwards_the_client_address(self, settings: Settings) -> None:
        """Behind a trusted proxy the right-most forwarded address counts; entries the client wrote do not."""
        app = _limited_app(settings, proxies=["192.0.2.0/28"])
        victim = make_client(app, "consumer")
        with TestClient(app, client=("192.0.2.1", 40000)) as proxy:
            statuses = [
                _token_status(proxy, _wrong(victim), f"203.0.113.{i}, 203.0.113.77") for i in range(6)
            ]
            assert [401] * 5 + [429] == statuses
            # Another client behind the same proxy is not held back by the guesser.
            assert 200 == _token_status(proxy, victim, "198.51.100.9")
            # A chain through a second trusted proxy still names the client before it.
            assert 429 == _token_status(proxy, victim, "198.51.100.9, 203.0.113.77, 192.0.2.3")

    def test_a_client_cannot_be_locked_out_by_a_stranger(self, settings: Settings) -> None:
        """Failures against a client id from one address never refuse its owner elsewhere."""
        app = _limited_app(settings)
        victim = make_client(app, "consumer")
        with TestClient(app, client=("192.0.2.20", 40000)) as attacker:
            statuses = [_token_status(attacker, _wrong(victim)) for _ in range(12)]
        assert [401] * 5 + [429] * 7 == statuses
        with TestClient(app, client=("198.51.100.20", 40000)) as owner:
            assert 200 == _token_status(owner, victim)

    def test_limits_hold_across_replicas(self, settings: Settings) -> None:
        """Two API processes on one database share the counts: failures at one are refused at the other."""
        first, second = _limited_app(settings), _limited_app(settings)
        victim = make_client(first, "consumer")
        with TestClient(first, client=("192.0.2.30", 40000)) as one:
            assert [401] * 5 == [_token_status(one, _wrong(victim)) for _ in range(5)]
        with TestClient(second, client=("192.0.2.30", 40001)) as other:
            refused = other.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(victim)
            )
            assert 429 == refused.status_code
            assert 0 < int(refused.headers["retry-after"]) <= 61
