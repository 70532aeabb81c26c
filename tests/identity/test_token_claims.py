"""Crafted claims in signed tokens (#20 finding 5): out-of-range times and claims of the wrong
type are 401, never 500, for our own tokens and for a trusted external issuer's (a real second key pair)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from gbadz.app import create_app
from gbadz.config import ExternalIssuer, OAuthSettings, Settings
from tests.api import bearer, make_client

ISSUER = "https://idp.example/realms/gbadz"
# A second issuer naming its role and scope claims itself (role_claim, scope_claim).
CUSTOM = "https://idp.example/realms/custom"
NOW = int(time.time())
CRAFTED: list[dict[str, Any]] = [
    {"exp": 10**20},
    {"exp": 1e300},
    {"exp": float("inf")},
    {"exp": "tomorrow"},
    {"exp": True},
    {"exp": [NOW + 300]},
    {"iat": 10**20},
    {"iat": -(10**20)},
    {"iat": "now"},
    {"nbf": 10**20},
    {"nbf": {"at": NOW}},
    {"sub": 42},
    {"sub": {"id": "x"}},
    {"jti": ["a", "b"]},
    {"scope": 5},
    {"client_id": None},
    {"gbadz_org": {"id": "org"}},
    {"gbadz_role": ["consumer"]},
]


def _ids(claims: dict[str, Any]) -> str:
    name, value = next(iter(claims.items()))
    return f"{name}={str(value)[:12]}"


@pytest.fixture
def idp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-1"})


@pytest.fixture
def app(settings: Settings, idp_key: RSAKey, tmp_path: Path) -> FastAPI:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [idp_key.as_dict(private=False)]}))
    oauth = OAuthSettings(
        external_issuers=[
            ExternalIssuer(issuer=ISSUER, jwks_file=jwks, organizations=["org-x"]),
            ExternalIssuer(
                issuer=CUSTOM, jwks_file=jwks, organizations=["org-x"], role_claim="role", scope_claim="scp"
            ),
        ]
    )
    return create_app(settings.model_copy(update={"oauth": oauth}))


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "user-42",
        "client_id": "portal",
        "aud": "gbadz",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_hex(8),
        "gbadz_org": "org-x",
        "gbadz_role": "consumer",
        "scope": "catalog:read",
    }
    claims.update(overrides)
    return claims


class TestCraftedClaims:
    def test_own_token(self, http: TestClient, app: FastAPI) -> None:
        """Tokens signed with our own key but carrying a crafted claim are each 401 with an invalid_token challenge."""
        key = app.state.tokens._signing_key()
        answers = {}
        for overrides in CRAFTED:
            claims = _claims(app.state.settings.oauth.issuer, **overrides)
            header = {"alg": "Ed25519", "typ": "at+jwt", "kid": key.kid}
            token = jwt.encode(header, claims, key, algorithms=["Ed25519"])
            response = http.get("/api/v1/datasets", headers=bearer(token))
            challenge = "invalid_token" in response.headers.get("www-authenticate", "")
            answers[_ids(overrides)] = (response.status_code, challenge)
        assert dict.fromkeys(answers, (401, True)) == answers

    def test_external_token(self, http: TestClient, idp_key: RSAKey) -> None:
        """A trusted external issuer's tokens with a crafted claim are each 401, never 500."""
        answers = {}
        for overrides in CRAFTED:
            token = jwt.encode({"alg": "RS256", "kid": idp_key.kid}, _claims(ISSUER, **overrides), idp_key)
            answers[_ids(overrides)] = http.get("/api/v1/datasets", headers=bearer(token)).status_code
        assert dict.fromkeys(answers, 401) == answers

    def test_plain_tokens_still_pass(self, http: TestClient, app: FastAPI, idp_key: RSAKey) -> None:
        """The same tokens without the crafted claim are accepted (the tests above can fail)."""
        key = app.state.tokens._signing_key()
        own = jwt.encode(
            {"alg": "Ed25519", "typ": "at+jwt", "kid": key.kid},
            _claims(app.state.settings.oauth.issuer),
            key,
            algorithms=["Ed25519"],
        )
        external = jwt.encode({"alg": "RS256", "kid": idp_key.kid}, _claims(ISSUER), idp_key)
        assert [200, 200] == [
            http.get("/api/v1/me", headers=bearer(own)).status_code,
            http.get("/api/v1/me", headers=bearer(external)).status_code,
        ]

    def test_custom_claim_names(self, http: TestClient, idp_key: RSAKey) -> None:
        """An issuer's own role and scope claims of the wrong type are 401, never a TypeError's 500."""

        def status(**overrides: Any) -> int:
            claims = _claims(CUSTOM, role="consumer", scp=["catalog:read"]) | overrides
            token = jwt.encode({"alg": "RS256", "kid": idp_key.kid}, claims, idp_key)
            return http.get("/api/v1/me", headers=bearer(token)).status_code

        crafted = [{"role": ["consumer"]}, {"role": {"r": 1}}, {"scp": [["catalog:read"]]}, {"scp": {"a": 1}}]
        assert [401] * len(crafted) == [status(**c) for c in crafted]
        assert status() == 200  # the same token with well-typed claims passes


class TestCraftedClientAssertion:
    def test_refused_not_500(self, http: TestClient, app: FastAPI) -> None:
        """private_key_jwt client assertions with a crafted exp are refused as invalid_client, never 500."""
        key = RSAKey.generate_key(2048, parameters={"kid": "k"})
        client = make_client(
            app, "provider", auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
        )
        answers = {}
        for exp in (10**20, 1e300, "tomorrow", -1):
            claims = {
                "iss": client.client_id,
                "sub": client.client_id,
                "aud": f"{app.state.settings.oauth.issuer}/oauth/token",
                "exp": exp,
                "iat": int(time.time()),
                "jti": secrets.token_hex(8),
            }
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": jwt.encode({"alg": "RS256", "kid": "k"}, claims, key),
            }
            response = http.post("/oauth/token", data=form)
            answers[str(exp)] = (response.status_code in (400, 401), response.json().get("error"))
        assert dict.fromkeys(answers, (True, "invalid_client")) == answers
