"""Tokens from an organisation's own identity provider, trusted by its issuer and JWKS."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from gbadz.app import create_app
from gbadz.config import ExternalIssuer, OAuthSettings, Settings
from tests.api import bearer

ISSUER = "https://idp.hk-logistics.example/realms/gbadz"
HOME_ORG = "org-hk-logistics"


@pytest.fixture
def idp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-1"})


@pytest.fixture
def jwks_url(idp_key: RSAKey) -> Iterator[str]:
    """A real HTTP server on loopback publishing the identity provider's JWKS (as Keycloak does)."""
    body = json.dumps({"keys": [idp_key.as_dict(private=False)]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/protocol/openid-connect/certs"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def http(settings: Settings, jwks_url: str) -> Iterator[TestClient]:
    oauth = OAuthSettings(
        external_issuers=[ExternalIssuer(issuer=ISSUER, jwks_uri=jwks_url, organizations=[HOME_ORG])]
    )
    with TestClient(create_app(settings.model_copy(update={"oauth": oauth}))) as client:
        yield client


def _token(key: RSAKey, alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "user-42",
        "azp": "logistics-portal",
        "aud": "gbadz",
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
        "gbadz_org": HOME_ORG,
        "gbadz_role": "consumer",
        "scope": "catalog:read access:request admin",
    }
    claims.update(overrides)
    return str(jwt.encode({"alg": alg, "kid": key.kid}, claims, key))


class TestExternalIssuer:
    def test_mapped_to_org_and_role(self, http: TestClient, idp_key: RSAKey) -> None:
        """A token of the trusted issuer maps to its organisation and role; scopes are capped by the role."""
        me = http.get("/api/v1/me", headers=bearer(_token(idp_key)))
        assert 200 == me.status_code, me.text
        body = me.json()
        assert ("org-hk-logistics", "consumer", True, f"ext:{ISSUER}#logistics-portal") == (
            body["org_id"],
            body["role"],
            body["external"],
            body["client_id"],
        )
        assert ["access:request", "catalog:read"] == body["scopes"]
        assert 403 == http.get("/api/v1/organizations", headers=bearer(_token(idp_key))).status_code

    @pytest.mark.parametrize(
        "overrides",
        [
            {"gbadz_role": None},
            {"gbadz_role": "superuser"},
            {"gbadz_org": ""},
            {"aud": "someone-else"},
            {"exp": int(time.time()) - 3600},
        ],
    )
    def test_bad_claims(self, http: TestClient, idp_key: RSAKey, overrides: dict[str, Any]) -> None:
        """Missing mapping claims, a wrong audience or expiry are refused."""
        claims = {k: v for k, v in overrides.items() if v is not None}
        token = _token(idp_key, **claims) if claims else _token(idp_key)
        if overrides.get("gbadz_role", "x") is None:
            now = int(time.time())
            token = str(
                jwt.encode(
                    {"alg": "RS256", "kid": idp_key.kid},
                    {
                        "iss": ISSUER,
                        "sub": "u",
                        "aud": "gbadz",
                        "exp": now + 300,
                        "iat": now,
                        "jti": "j",
                        "gbadz_org": "o",
                    },
                    idp_key,
                )
            )
        assert 401 == http.get("/api/v1/me", headers=bearer(token)).status_code

    def test_same_kid_other_key(self, http: TestClient) -> None:
        """A token claiming the issuer's kid but signed by another key is refused."""
        impostor = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
        assert 401 == http.get("/api/v1/me", headers=bearer(_token(impostor))).status_code

    def test_symmetric_algorithm_is_refused(self, http: TestClient, idp_key: RSAKey) -> None:
        """HS256 is not in the issuer's allow-list, whatever the key."""
        from joserfc.jwk import OctKey

        key = OctKey.import_key(idp_key.as_dict(private=False)["n"].encode(), parameters={"kid": "idp-1"})
        token = str(
            jwt.encode(
                {"alg": "HS256", "kid": "idp-1"},
                {
                    "iss": ISSUER,
                    "sub": "u",
                    "aud": "gbadz",
                    "exp": int(time.time()) + 60,
                    "iat": int(time.time()),
                    "jti": "x",
                    "gbadz_org": "o",
                    "gbadz_role": "admin",
                },
                key,
            )
        )
        assert 401 == http.get("/api/v1/me", headers=bearer(token)).status_code

    def test_configuration_refuses_symmetric_algorithms(self) -> None:
        """An external issuer cannot be configured with HS256 or none."""
        with pytest.raises(ValueError, match="only asymmetric"):
            ExternalIssuer(issuer=ISSUER, jwks_uri="http://127.0.0.1/x", algorithms=["HS256"])


def _refusals(http: TestClient, token: str) -> list[Any]:
    """The audit events recording the refusal of this token (the lane's database outlives a test)."""
    from gbadz.audit import AuditEvent
    from gbadz.identity.tokens import unverified_claims

    jti = unverified_claims(token)["jti"]

    with http.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        return [
            event
            for event in session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.action == "token.claim_refused", AuditEvent.subject_id == ISSUER
                )
            )
            if event.details["jti"] == jti
        ]


class TestIssuerBounds:
    """Issue #20 item 6: an external issuer speaks only for its configured organisations and roles."""

    def test_other_organisation_is_refused(
        self, http: TestClient, idp_key: RSAKey, clients: dict[str, Any]
    ) -> None:
        """A genuine token of the issuer claiming another (real) organisation is 401 and audited once."""
        victim_org = clients["provider"].org_id
        token = _token(idp_key, gbadz_org=victim_org, gbadz_role="provider", scope="datasets:publish")
        for _ in range(2):
            response = http.get("/api/v1/datasets", headers=bearer(token))
            assert 401 == response.status_code, response.text
        events = _refusals(http, token)
        assert 1 == len(events)
        assert ("organisation", victim_org) == (
            events[0].details["refused"],
            events[0].details["claimed_org"],
        )

    @pytest.mark.parametrize("role", ["admin", "compliance_officer"])
    def test_privileged_role_is_refused(self, http: TestClient, idp_key: RSAKey, role: str) -> None:
        """Claiming admin or compliance officer without it being configured is 401; no client gets made."""
        token = _token(idp_key, gbadz_role=role, scope="admin catalog:read transfers:audit")
        response = http.post(
            "/api/v1/clients", json={"org_id": HOME_ORG, "role": "provider"}, headers=bearer(token)
        )
        assert 401 == response.status_code, response.text
        assert 401 == http.get("/api/v1/me", headers=bearer(token)).status_code
        assert ["role"] == [event.details["refused"] for event in _refusals(http, token)]

    def test_configured_role_is_accepted(self, settings: Settings, jwks_url: str, idp_key: RSAKey) -> None:
        """An issuer configured for the compliance-officer role may grant it, for its organisation only."""
        issuer = ExternalIssuer(
            issuer=ISSUER, jwks_uri=jwks_url, organizations=[HOME_ORG], roles=["compliance_officer"]
        )
        app = create_app(settings.model_copy(update={"oauth": OAuthSettings(external_issuers=[issuer])}))
        with TestClient(app) as client:
            officer = _token(idp_key, gbadz_role="compliance_officer", scope="transfers:audit")
            me = client.get("/api/v1/me", headers=bearer(officer))
            assert (200, "compliance_officer") == (me.status_code, me.json()["role"])
            consumer = _token(idp_key)
            assert 401 == client.get("/api/v1/me", headers=bearer(consumer)).status_code

    def test_subjects_are_named_under_their_issuer(
        self, settings: Settings, jwks_url: str, idp_key: RSAKey
    ) -> None:
        """A subject or client id minted to read as one of ours ("user:…", "gbz_…") is named under its issuer."""
        issuer = ExternalIssuer(issuer=ISSUER, jwks_uri=jwks_url, organizations=[HOME_ORG])
        app = create_app(settings.model_copy(update={"oauth": OAuthSettings(external_issuers=[issuer])}))
        with TestClient(app) as client:
            token = _token(idp_key, sub="user:ho.kayan", azp="gbz_000000000000000000000000")
            me = client.get("/api/v1/me", headers=bearer(token)).json()
        assert (f"ext:{ISSUER}#user:ho.kayan", f"ext:{ISSUER}#gbz_000000000000000000000000") == (
            me["subject"],
            me["client_id"],
        )

    def test_unconfigured_issuer_speaks_for_nobody(
        self, settings: Settings, jwks_url: str, idp_key: RSAKey
    ) -> None:
        """An issuer configured without organisations is trusted for none: deny unless a rule allows."""
        issuer = ExternalIssuer(issuer=ISSUER, jwks_uri=jwks_url)
        app = create_app(settings.model_copy(update={"oauth": OAuthSettings(external_issuers=[issuer])}))
        with TestClient(app) as client:
            assert 401 == client.get("/api/v1/me", headers=bearer(_token(idp_key))).status_code
