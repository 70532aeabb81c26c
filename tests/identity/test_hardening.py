"""Issue #20 items 7 and 8 for identity: secrets out of logs and files, limiters, live revocation."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import log as gbadz_log
from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from tests.api import Client, make_client


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
