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
