"""gbadz as an OAuth 2.0 authorization server and resource server, attacked as well as used."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey, RSAKey

from gbadz import audit
from gbadz.config import OAuthSettings, Settings
from gbadz.identity.scopes import ROLE_SCOPES
from tests.api import Client, basic, bearer, fetch_token, make_client


def _b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _claims(app: FastAPI, client: Client, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": app.state.settings.oauth.issuer,
        "sub": client.client_id,
        "aud": "gbadz",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_hex(8),
        "client_id": client.client_id,
        "scope": "catalog:read access:request",
        "gbadz_org": client.org_id,
        "gbadz_role": client.role,
    }
    claims.update(overrides)
    return claims


def _sign_with_ours(app: FastAPI, claims: dict[str, Any], **header: Any) -> str:
    key = app.state.tokens._signing_key()
    return str(
        jwt.encode(
            {"alg": "Ed25519", "typ": "at+jwt", "kid": key.kid, **header}, claims, key, algorithms=["Ed25519"]
        )
    )


def _rejected(http: TestClient, token: str) -> httpx.Response:
    response = http.get("/api/v1/me", headers=bearer(token))
    assert 401 == response.status_code, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "Unauthenticated" == response.json()["error"]
    return response


class TestDiscoveryAndStandardClient:
    def test_metadata_lists_every_endpoint(self, http: TestClient, app: FastAPI) -> None:
        """RFC 8414 metadata names the issuer, every endpoint and every auth method."""
        meta = http.get("/.well-known/oauth-authorization-server").json()
        issuer = app.state.settings.oauth.issuer
        assert issuer == meta["issuer"]
        for name, path in [
            ("token_endpoint", "token"),
            ("jwks_uri", "jwks"),
            ("introspection_endpoint", "introspect"),
            ("revocation_endpoint", "revoke"),
            ("authorization_endpoint", "authorize"),
        ]:
            assert f"{issuer}/oauth/{path}" == meta[name]
        # "none": the console is a public client (authorization code + PKCE), per RFC 7636.
        assert {"client_secret_basic", "client_secret_post", "private_key_jwt", "none"} == set(
            meta["token_endpoint_auth_methods_supported"]
        )
        assert ["client_credentials", "authorization_code"] == meta["grant_types_supported"]
        assert ["code"] == meta["response_types_supported"]
        assert ["S256"] == meta["code_challenge_methods_supported"]

    def test_authlib_client_with_secret(self, live_server: tuple[str, FastAPI]) -> None:
        """authlib's own OAuth2Client discovers the token endpoint, gets a token and calls a protected route."""
        base, application = live_server
        client = make_client(application, "consumer")
        meta = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
        with OAuth2Client(client.client_id, client.client_secret, scope="catalog:read") as oauth:
            token = oauth.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
            assert "catalog:read" == token["scope"]
            me = oauth.get(f"{base}/api/v1/me")
        assert (200, client.client_id, "consumer") == (
            me.status_code,
            me.json()["client_id"],
            me.json()["role"],
        )

    def test_authlib_client_with_private_key_jwt(self, live_server: tuple[str, FastAPI]) -> None:
        """An organisation that will not share secrets authenticates with a signed assertion (RFC 7523)."""
        base, application = live_server
        key = RSAKey.generate_key(2048, parameters={"kid": "org-key-1"})
        client = make_client(
            application,
            "provider",
            "CN-SZ",
            auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=False)]},
        )
        meta = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
        with OAuth2Client(
            client.client_id,
            key.as_dict(private=True),
            token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"]),
        ) as oauth:
            oauth.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
            me = oauth.get(f"{base}/api/v1/me")
        assert (200, "provider") == (me.status_code, me.json()["role"])

    def test_assertion_replay_is_refused(self, live_server: tuple[str, FastAPI]) -> None:
        """The same client assertion cannot be used twice."""
        base, application = live_server
        key = RSAKey.generate_key(2048, parameters={"kid": "k"})
        client = make_client(
            application,
            "provider",
            auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=False)]},
        )
        now = int(time.time())
        assertion = jwt.encode(
            {"alg": "RS256", "kid": "k"},
            {
                "iss": client.client_id,
                "sub": client.client_id,
                "aud": f"{base}/oauth/token",
                "exp": now + 60,
                "iat": now,
                "jti": "once",
            },
            key,
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        assert 200 == httpx.post(f"{base}/oauth/token", data=form).status_code
        replay = httpx.post(f"{base}/oauth/token", data=form)
        assert (400, "invalid_client") == (replay.status_code, replay.json()["error"])

    def test_secret_by_post(self, http: TestClient, clients: dict[str, Client]) -> None:
        """client_secret_post works as well as basic, and the token is JWT (RFC 9068) with the right claims."""
        client = clients["compliance_officer"]
        response = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            },
        )
        body = response.json()
        assert (200, "Bearer", 900, "no-store") == (
            response.status_code,
            body["token_type"],
            body["expires_in"],
            response.headers["cache-control"],
        )
        header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
        claims = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "==="))
        assert ("Ed25519", "at+jwt") == (header["alg"], header["typ"])
        assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"} <= set(claims)
        assert set(body["scope"].split()) == set(ROLE_SCOPES["compliance_officer"])


class TestTokenEndpointRefusals:
    def test_wrong_secret(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A wrong secret is invalid_client (401)."""
        client = clients["consumer"]
        wrong = Client(client.client_id, "not-the-secret", client.org_id, client.role)
        response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(wrong))
        assert (401, "invalid_client") == (response.status_code, response.json()["error"])

    def test_unsupported_grant(self, http: TestClient, clients: dict[str, Client]) -> None:
        """Only the client credentials grant is offered."""
        response = http.post(
            "/oauth/token",
            data={"grant_type": "password", "username": "u", "password": "p"},
            headers=basic(clients["consumer"]),
        )
        assert (400, "unsupported_grant_type") == (response.status_code, response.json()["error"])

    def test_unknown_scope(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A scope the server does not know is invalid_scope."""
        response = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "root"},
            headers=basic(clients["consumer"]),
        )
        assert (400, "invalid_scope") == (response.status_code, response.json()["error"])

    def test_scope_beyond_role_is_narrowed(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A consumer asking for admin gets no admin scope, and admin routes answer 403."""
        token = fetch_token(http, clients["consumer"], scope="admin catalog:read")
        response = http.get("/api/v1/organizations", headers=bearer(token))
        assert 403 == response.status_code
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]

    def test_revoked_client(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """A revoked client's credentials get no token, and its existing tokens stop working."""
        client = clients["provider"]
        token = fetch_token(http, client)
        admin = fetch_token(http, clients["admin"])
        assert (
            200 == http.post(f"/api/v1/clients/{client.client_id}/revoke", headers=bearer(admin)).status_code
        )
        response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client))
        assert (401, "invalid_client") == (response.status_code, response.json()["error"])
        _rejected(http, token)

    def test_crafted_client_ids_are_422(self, http: TestClient, clients: dict[str, Client]) -> None:
        """An id no client can have (a NUL byte, a newline, 10 KB, a superscript) is 422 on revoke, never a database 500."""
        admin = bearer(fetch_token(http, clients["admin"]))
        crafted = ["gbz_%00", "gbz_%0Ax", "x" * 10_000, "gbz_%C2%B2"]
        assert [422] * len(crafted) == [
            http.post(f"/api/v1/clients/{cid}/revoke", headers=admin).status_code for cid in crafted
        ]
        assert (
            404 == http.post("/api/v1/clients/gbz_000000000000000000000000/revoke", headers=admin).status_code
        )

    def test_brute_force_is_rate_limited(self, settings: Settings) -> None:
        """After too many failures from an address, it is refused with 429 for every client, even with the right secret."""
        limited = settings.model_copy(update={"oauth": OAuthSettings(failed_auth_limit=5)})
        from gbadz.app import create_app

        application = create_app(limited)
        victim = make_client(application, "consumer")
        other = make_client(application, "consumer")
        with TestClient(application) as http:
            wrong = Client(victim.client_id, "guess", victim.org_id, victim.role)
            statuses = [
                http.post(
                    "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(wrong)
                ).status_code
                for _ in range(5)
            ]
            assert [401] * 5 == statuses
            blocked = http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(victim)
            )
            assert 429 == blocked.status_code
            assert int(blocked.headers["retry-after"]) > 0
            # The same address is blocked for any client id too.
            assert (
                429
                == http.post(
                    "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(other)
                ).status_code
            )


class TestResourceServerAttacks:
    def test_no_token(self, http: TestClient) -> None:
        """No token: 401 with a bare Bearer challenge."""
        response = http.get("/api/v1/me")
        assert (401, 'Bearer realm="gbadz"') == (response.status_code, response.headers["www-authenticate"])

    def test_wrong_scheme(self, http: TestClient) -> None:
        """A non-Bearer scheme is invalid_request."""
        response = http.get("/api/v1/me", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert 401 == response.status_code
        assert 'error="invalid_request"' in response.headers["www-authenticate"]

    def test_valid_token_works(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """The control: a token we sign with good claims is accepted."""
        token = _sign_with_ours(app, _claims(app, clients["consumer"]))
        assert 200 == http.get("/api/v1/me", headers=bearer(token)).status_code

    def test_deprecated_eddsa_name(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """Only the allow-listed algorithm name passes, even for a correct signature under our key."""
        key = app.state.tokens._signing_key()
        token = jwt.encode(
            {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid},
            _claims(app, clients["consumer"]),
            key,
            algorithms=["EdDSA"],
        )
        _rejected(http, token)

    def test_alg_none(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """An unsigned token (alg none) is refused."""
        kid = app.state.tokens._signing_key().kid
        token = (
            f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{_b64(_claims(app, clients['consumer']))}."
        )
        _rejected(http, token)

    def test_hs256_with_public_key(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """HS256 keyed with our published public key (the key-confusion attack) is refused."""
        jwk = http.get("/oauth/jwks").json()["keys"][0]
        secret = jwk["x"].encode()
        signing_input = f"{_b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': jwk['kid']})}.{_b64(_claims(app, clients['consumer']))}"
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        _rejected(http, f"{signing_input}.{_b64(sig)}")

    def test_other_issuer(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """A token from an issuer we do not trust is refused."""
        key = OKPKey.generate_key("Ed25519", parameters={"kid": "evil"})
        claims = _claims(app, clients["consumer"], iss="https://idp.example.net")
        _rejected(
            http,
            jwt.encode(
                {"alg": "Ed25519", "kid": "evil", "typ": "at+jwt"}, claims, key, algorithms=["Ed25519"]
            ),
        )

    def test_other_audience(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """A token of ours minted for another audience is refused."""
        _rejected(http, _sign_with_ours(app, _claims(app, clients["consumer"], aud="another-api")))

    def test_expired(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """An expired token (beyond the leeway) is refused."""
        now = int(time.time())
        _rejected(
            http,
            _sign_with_ours(
                app, _claims(app, clients["consumer"], exp=now - 120, iat=now - 1000, nbf=now - 1000)
            ),
        )

    def test_not_yet_valid(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """A token whose nbf lies in the future (beyond the leeway) is refused."""
        _rejected(http, _sign_with_ours(app, _claims(app, clients["consumer"], nbf=int(time.time()) + 600)))

    def test_tampered_payload(self, http: TestClient, clients: dict[str, Client]) -> None:
        """Changing the payload of a real token (role upgrade) breaks its signature."""
        token = fetch_token(http, clients["consumer"])
        head, payload, sig = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
        claims["scope"] = "admin catalog:read"
        _rejected(http, f"{head}.{_b64(claims)}.{sig}")

    def test_unknown_key_id(self, http: TestClient, app: FastAPI, clients: dict[str, Client]) -> None:
        """A token signed by a key that is not in our JWKS is refused, whatever its claims."""
        key = OKPKey.generate_key("Ed25519", parameters={"kid": "not-ours"})
        claims = _claims(app, clients["consumer"])
        _rejected(
            http,
            jwt.encode(
                {"alg": "Ed25519", "kid": "not-ours", "typ": "at+jwt"}, claims, key, algorithms=["Ed25519"]
            ),
        )

    def test_key_id_of_ours_but_wrong_key(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """A forged token claiming our kid but signed with another key is refused."""
        kid = app.state.tokens._signing_key().kid
        key = OKPKey.generate_key("Ed25519", parameters={"kid": kid})
        _rejected(
            http,
            jwt.encode(
                {"alg": "Ed25519", "kid": kid, "typ": "at+jwt"},
                _claims(app, clients["consumer"]),
                key,
                algorithms=["Ed25519"],
            ),
        )

    def test_garbage(self, http: TestClient) -> None:
        """Garbage in the bearer is a 401, never a 500."""
        for token in ("abc", "a.b.c", "a.b", "." * 5, "eyJhbGciOiJub25lIn0." + "x" * 5000):
            _rejected(http, token)


class TestRevocationAndIntrospection:
    def test_revoked_token(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A token revoked by its client (RFC 7009) stops working at once; the revocation is audited."""
        client = clients["consumer"]
        token = fetch_token(http, client)
        assert 200 == http.get("/api/v1/me", headers=bearer(token)).status_code
        response = http.post("/oauth/revoke", data={"token": token}, headers=basic(client))
        assert 200 == response.status_code, response.text
        _rejected(http, token)

    def test_introspection(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A client may introspect its own token; another client learns nothing; revoked means inactive."""
        client = clients["consumer"]
        token = fetch_token(http, client)
        own = http.post("/oauth/introspect", data={"token": token}, headers=basic(client)).json()
        assert (True, client.client_id, "consumer") == (own["active"], own["client_id"], own["gbadz_role"])
        stranger = http.post(
            "/oauth/introspect", data={"token": token}, headers=basic(clients["provider"])
        ).json()
        assert {"active": False} == stranger
        admin = http.post("/oauth/introspect", data={"token": token}, headers=basic(clients["admin"])).json()
        assert admin["active"] is True
        http.post("/oauth/revoke", data={"token": token}, headers=basic(client))
        assert {"active": False} == http.post(
            "/oauth/introspect", data={"token": token}, headers=basic(client)
        ).json()

    def test_introspection_needs_client_authentication(
        self, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """Introspection without client credentials is refused."""
        token = fetch_token(http, clients["consumer"])
        response = http.post("/oauth/introspect", data={"token": token})
        assert 401 == response.status_code


class TestKeyRotation:
    def test_old_tokens_survive_rotation(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """After rotating the signing key, the JWKS holds both keys; old tokens still work; new ones use the new key."""
        old = fetch_token(http, clients["consumer"])
        old_kid = json.loads(base64.urlsafe_b64decode(old.split(".")[0] + "=="))["kid"]
        new_kid = app.state.tokens.rotate()
        kids = [k["kid"] for k in http.get("/oauth/jwks").json()["keys"]]
        assert [new_kid, old_kid] == kids
        assert 200 == http.get("/api/v1/me", headers=bearer(old)).status_code
        new = fetch_token(http, clients["consumer"])
        assert new_kid == json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"]


class TestAdminApi:
    def test_create_organization_and_client(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """An admin registers an organisation and a client; both changes are audited."""
        admin = fetch_token(http, clients["admin"])
        name = f"Macao Tourism Board {secrets.token_hex(3)}"
        org = http.post(
            "/api/v1/organizations",
            json={"name": name, "jurisdiction": "MO", "gba_registered": True},
            headers=bearer(admin),
        )
        assert 201 == org.status_code, org.text
        created = http.post(
            "/api/v1/clients", json={"org_id": org.json()["id"], "role": "provider"}, headers=bearer(admin)
        )
        assert 201 == created.status_code
        assert created.json()["client_secret"]
        with app.state.sessionmaker() as session:
            events = audit.AuditRepository(session).for_subject("organization", org.json()["id"])
        assert ["organization.created"] == [e.action for e in events]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "x", "jurisdiction": "SG"}, "jurisdiction"),
            ({"name": "", "jurisdiction": "HK"}, "name"),
            ({"jurisdiction": "HK"}, "name"),
            ({"name": "x", "jurisdiction": "HK", "ciio": "maybe"}, "ciio"),
            ({"name": "x", "jurisdiction": "HK", "colour": "red"}, "colour"),
        ],
    )
    def test_bad_organization_input(
        self, http: TestClient, clients: dict[str, Client], body: dict[str, Any], field: str
    ) -> None:
        """Bad organisation input is a 422 naming the field."""
        response = http.post(
            "/api/v1/organizations", json=body, headers=bearer(fetch_token(http, clients["admin"]))
        )
        assert 422 == response.status_code
        assert field in [str(p) for err in response.json()["detail"] for p in err["loc"]]

    def test_unknown_jurisdiction_lists_valid_codes(
        self, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """The jurisdiction error lists every valid code."""
        response = http.post(
            "/api/v1/organizations",
            json={"name": "x", "jurisdiction": "SG"},
            headers=bearer(fetch_token(http, clients["admin"])),
        )
        assert "CN-GZ CN-SZ CN-ZH CN-FS CN-HZ CN-DG CN-ZS CN-JM CN-ZQ CN HK MO OTHER" in response.text

    def test_conflicts_and_missing(self, http: TestClient, clients: dict[str, Client]) -> None:
        """Duplicate names 409; a client for an unknown organisation 404; revoking twice 409."""
        admin = bearer(fetch_token(http, clients["admin"]))
        name = f"dup-{secrets.token_hex(3)}"
        assert (
            201
            == http.post(
                "/api/v1/organizations", json={"name": name, "jurisdiction": "HK"}, headers=admin
            ).status_code
        )
        assert (
            409
            == http.post(
                "/api/v1/organizations", json={"name": name, "jurisdiction": "HK"}, headers=admin
            ).status_code
        )
        assert (
            404
            == http.post(
                "/api/v1/clients", json={"org_id": "nope", "role": "consumer"}, headers=admin
            ).status_code
        )
        target = clients["consumer"].client_id
        assert 200 == http.post(f"/api/v1/clients/{target}/revoke", headers=admin).status_code
        assert 409 == http.post(f"/api/v1/clients/{target}/revoke", headers=admin).status_code

    def test_unusable_jwks_is_refused_and_never_a_500(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """A JWKS that is not one is refused at registration; a stored bad set is invalid_client, not 500."""
        response = http.post(
            "/api/v1/clients",
            json={
                "org_id": clients["consumer"].org_id,
                "role": "consumer",
                "auth_method": "private_key_jwt",
                "jwks": {"keys": [{"kty": "bogus"}]},
            },
            headers=bearer(fetch_token(http, clients["admin"])),
        )
        assert (400, True) == (response.status_code, response.json()["detail"].startswith("jwks:"))
        from gbadz.identity.models import OAuthClient

        with app.state.sessionmaker.begin() as session:  # a row written before registration checked keys
            session.get(OAuthClient, clients["provider"].client_id).jwks = {"keys": [{"kty": "bogus"}]}  # type: ignore[union-attr]
            session.get(OAuthClient, clients["provider"].client_id).auth_method = "private_key_jwt"  # type: ignore[union-attr]
        now = int(time.time())
        cid = clients["provider"].client_id
        claims = {
            "iss": cid,
            "sub": cid,
            "aud": f"{app.state.settings.oauth.issuer}/oauth/token",
            "exp": now + 60,
            "iat": now,
            "jti": "j1",
        }
        assertion = f"{_b64({'alg': 'RS256', 'kid': 'k'})}.{_b64(claims)}.c2ln"
        token = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
        assert (400, "invalid_client") == (token.status_code, token.json()["error"])

    def test_private_key_client_must_not_register_private_keys(
        self, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """Registering a JWKS that contains a private key is refused."""
        key = RSAKey.generate_key(2048)
        response = http.post(
            "/api/v1/clients",
            json={
                "org_id": clients["consumer"].org_id,
                "role": "consumer",
                "auth_method": "private_key_jwt",
                "jwks": {"keys": [key.as_dict(private=True)]},
            },
            headers=bearer(fetch_token(http, clients["admin"])),
        )
        assert (400, "BadRequest") == (response.status_code, response.json()["error"])


class TestRevocationAcrossReplicas:
    def test_other_replica_stops_accepting_within_its_refresh(self, settings: Settings) -> None:
        """Two API replicas on one database: a token revoked through one is refused by the other within ~1 s."""
        from gbadz.app import create_app

        replica_a, replica_b = create_app(settings), create_app(settings)
        client = make_client(replica_a, "consumer")
        with TestClient(replica_a) as a, TestClient(replica_b) as b:
            token = fetch_token(a, client)
            assert (
                200 == b.get("/api/v1/me", headers=bearer(token)).status_code
            )  # b has verified and cached it
            assert 200 == a.post("/oauth/revoke", data={"token": token}, headers=basic(client)).status_code
            assert (
                401 == a.get("/api/v1/me", headers=bearer(token)).status_code
            )  # at once on the revoking replica
            deadline = time.monotonic() + 3.0
            while b.get("/api/v1/me", headers=bearer(token)).status_code == 200:
                assert time.monotonic() < deadline, "replica b still accepts a token revoked 3 s ago"
                time.sleep(0.1)


class TestEmptyBodies:
    @pytest.mark.parametrize("path", ["/oauth/introspect", "/oauth/revoke", "/oauth/token"])
    def test_an_empty_unauthenticated_body_is_a_4xx_not_a_500(self, http: TestClient, path: str) -> None:
        """Issue #20 item 4: an empty POST with no credentials is refused as a client error."""
        for kwargs in ({}, {"data": {}}, {"content": b"", "headers": {"Content-Type": "application/json"}}):
            answer = http.post(path, **kwargs)  # type: ignore[arg-type]
            assert 400 <= answer.status_code < 500, (path, kwargs, answer.status_code, answer.text[:200])
