"""gbadz as an OAuth 2.0 authorization server, on authlib, behind a small Starlette adapter.

authlib does the protocol (RFC 6749 client credentials; the authorization code grant with
PKCE S256 required (RFC 7636) for people signing in to the console; client authentication with
client_secret_basic / client_secret_post / private_key_jwt per RFC 7523, RFC 7662
introspection, RFC 7009 revocation); this module supplies storage, token minting
(:mod:`gbadz.identity.tokens`), the HTTP adapter and RFC 8414 metadata. authlib has no
FastAPI server integration, so the adapter lives here and nowhere else.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

import sqlalchemy as sa
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from gbadz import audit
from gbadz.config import OAuthSettings
from gbadz.identity.models import AuthorizationCode, OAuthClient, RevokedToken, UsedAssertion, User
from gbadz.identity.scopes import ROLE_SCOPES, SCOPES
from gbadz.identity.service import secret_matches
from gbadz.identity.tokens import OWN_ALGORITHMS, TokenRejected, TokenService, decode_and_validate

SECRET_METHODS = ("client_secret_basic", "client_secret_post")
ALL_AUTH_METHODS = [*SECRET_METHODS, "private_key_jwt"]
ASSERTION_ALGORITHMS = ["RS256", "PS256", "ES256", "Ed25519"]


class ClientRecord(ClientMixin):  # type: ignore[misc]
    """An OAuth client as authlib sees it."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.client_id = row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = ROLE_SCOPES.get(self.row.role, frozenset())
        if not scope:
            return " ".join(sorted(allowed))
        return " ".join(sorted(set(scope.split()) & allowed))

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.row.auth_method == "client_secret":
            return method in SECRET_METHODS
        return method == "private_key_jwt"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def get_default_redirect_uri(self) -> None:
        return None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False


CONSOLE_CLIENT_ID = "gbadz-console"
CONSOLE_CALLBACK = "/console/callback"
CODE_TTL_S = 60


class ConsoleClient(ClientMixin):  # type: ignore[misc]
    """The web console: a built-in public client (RFC 6749 §2.1) that may only use the
    authorization code grant with PKCE, and only redirect to its own callback."""

    client_id = CONSOLE_CLIENT_ID

    def __init__(self, issuer: str) -> None:
        self.redirect_uri = issuer + CONSOLE_CALLBACK

    def get_client_id(self) -> str:
        return CONSOLE_CLIENT_ID

    def get_allowed_scope(self, scope: str | None) -> str:
        # What a person finally gets is cut down to their role's scopes when the token is minted.
        people = set().union(*(ROLE_SCOPES[r] for r in ("provider", "consumer", "compliance_officer")))
        requested = set(scope.split()) if scope else people
        return " ".join(sorted(requested & people))

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri


class GbadzClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS


class StoredCode:
    """An authorization code row as authlib's grant reads it."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class PeopleAuthorizationCode(AuthorizationCodeGrant):  # type: ignore[misc]
    """RFC 6749 §4.1 for people: one-use codes, kept by hash, valid for a minute."""

    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["none"]
    server: GbadzAuthorizationServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        with self.server.sessions.begin() as session:
            session.execute(
                sa.delete(AuthorizationCode).where(AuthorizationCode.expires_at < datetime.now(UTC))
            )
            session.add(
                AuthorizationCode(
                    code_hash=_code_hash(code),
                    client_id=request.client.get_client_id(),
                    user_id=request.user.id,
                    redirect_uri=request.payload.redirect_uri or request.client.get_default_redirect_uri(),
                    scope=request.scope or "",
                    code_challenge=data["code_challenge"],
                    code_challenge_method=data.get("code_challenge_method") or "S256",
                    expires_at=datetime.fromtimestamp(time.time() + CODE_TTL_S, UTC),
                )
            )

    def query_authorization_code(self, code: str, client: Any) -> StoredCode | None:
        with self.server.sessions.begin() as session:
            # Deleted as it is read: a code works once, even when two exchanges race.
            row = session.scalar(
                sa.delete(AuthorizationCode)
                .where(AuthorizationCode.code_hash == _code_hash(code))
                .returning(AuthorizationCode)
            )
            if row is None or row.client_id != client.get_client_id():
                return None
            if row.expires_at < datetime.now(UTC):
                return None
            session.expunge(row)
            return StoredCode(row)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Already deleted when it was looked up."""

    def authenticate_user(self, authorization_code: StoredCode) -> User | None:
        with self.server.sessions() as session:
            user = session.get(User, authorization_code.row.user_id)
            if user is None or user.disabled_at is not None:
                return None
            session.expunge(user)
            return user


class RequiredS256(CodeChallenge):  # type: ignore[misc]
    """PKCE is required on every authorization request, and only with S256 (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 client authentication; each assertion's jti is accepted once."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: GbadzAuthorizationServer) -> None:
        super().__init__(validate_jti=True)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.endpoint("token"), self.server.settings.issuer]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        exp = datetime.fromtimestamp(int(claims.get("exp", time.time() + 300)), UTC)
        with self.server.sessions.begin() as session:
            session.execute(sa.delete(UsedAssertion).where(UsedAssertion.expires_at < datetime.now(UTC)))
            try:
                with session.begin_nested():
                    session.add(UsedAssertion(jti=f"{claims.get('sub')}:{jti}", expires_at=exp))
            except IntegrityError:
                return False
        return True

    def resolve_client_public_key(self, client: ClientRecord) -> KeySet:
        try:
            return KeySet.import_key_set(client.row.jwks or {"keys": []})  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            # Registration validates the JWKS; a stored set that still fails is the client's problem, not a 500.
            raise InvalidClientError(description="the client's registered keys cannot be used") from None


class TokenView(dict[str, Any]):
    """A decoded access token as authlib's introspection and revocation endpoints handle it."""

    def __init__(self, claims: dict[str, Any], server: GbadzAuthorizationServer) -> None:
        super().__init__(claims)
        self.server = server

    def check_client(self, client: ClientRecord) -> bool:
        return client.row.client_id == self.get("client_id") or client.row.role == "admin"

    def get_scope(self) -> str:
        return str(self.get("scope", ""))

    def is_expired(self) -> bool:
        return int(self.get("exp", 0)) + self.server.settings.leeway_s < time.time()

    def is_revoked(self) -> bool:
        """Revoked, or its client revoked, or not yet valid: in every case not active."""
        return not self.server.is_active(self)


class _OwnTokens:
    """What introspection and revocation share: client auth methods and finding our token."""

    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS
    gbadz: GbadzAuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenView | None:
        claims = self.gbadz.verify_signature_only(token_string)
        return TokenView(claims, self.gbadz) if claims is not None else None


class Introspection(_OwnTokens, IntrospectionEndpoint):  # type: ignore[misc]
    def __init__(self, server: GbadzAuthorizationServer) -> None:
        super().__init__(server=server)
        self.gbadz = server

    def check_permission(self, token: TokenView, client: ClientRecord, request: Any) -> bool:
        # RFC 7662 §4: only the token's own client, or an admin (a resource server), may look.
        return token.check_client(client)

    def introspect_token(self, token: TokenView) -> dict[str, Any]:
        if not self.gbadz.is_active(token):
            return {"active": False}
        return {
            "active": True,
            "token_type": "Bearer",
            "client_id": token["client_id"],
            "scope": token.get("scope", ""),
            "sub": token["sub"],
            "aud": token["aud"],
            "iss": token["iss"],
            "exp": token["exp"],
            "iat": token["iat"],
            "nbf": token.get("nbf"),
            "jti": token["jti"],
            "gbadz_org": token.get("gbadz_org"),
            "gbadz_role": token.get("gbadz_role"),
        }


class Revocation(_OwnTokens, RevocationEndpoint):  # type: ignore[misc]
    def __init__(self, server: GbadzAuthorizationServer) -> None:
        super().__init__(server=server)
        self.gbadz = server

    def revoke_token(self, token: TokenView, request: Any) -> None:
        exp = datetime.fromtimestamp(int(token["exp"]), UTC)
        with self.gbadz.sessions.begin() as session:
            # Entries past their expiry protect nothing any more.
            session.execute(sa.delete(RevokedToken).where(RevokedToken.expires_at < datetime.now(UTC)))
            if session.get(RevokedToken, token["jti"]) is None:
                session.add(RevokedToken(jti=token["jti"], expires_at=exp))
                audit.record(
                    session,
                    actor=f"client:{request.client.get_client_id()}",
                    action="token.revoked",
                    subject_type="access_token",
                    subject_id=token["jti"],
                    details={"token_client_id": token.get("client_id")},
                )
        self.gbadz.on_revocation()


class FailureLimiter:
    """Sliding-window count of failed client authentications per key (client id, address).

    In-process: each API replica limits on its own, which bounds a brute force at
    replicas x limit per window.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window = window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and now - events[0] > self.window:
            events.popleft()
        return events

    def retry_after(self, *keys: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in keys:
                events = self._trim(key, now)
                if len(events) >= self.limit:
                    waits.append(int(self.window - (now - events[0])) + 1)
            return max(waits) if waits else None

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._trim(key, now).append(now)


class GbadzAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(
        self, settings: OAuthSettings, sessions: sessionmaker[Session], tokens: TokenService
    ) -> None:
        super().__init__(scopes_supported=sorted(SCOPES))
        self.settings = settings
        self.sessions = sessions
        self.tokens = tokens
        self.register_grant(GbadzClientCredentials)
        self.register_grant(PeopleAuthorizationCode, [RequiredS256(required=True)])
        self.console_client = ConsoleClient(settings.issuer)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(self))
        self.register_token_generator("default", self._generate_token)
        self.register_endpoint(Introspection(self))
        self.register_endpoint(Revocation(self))

    def on_revocation(self) -> None:
        """Hook: set by the app so the resource server re-reads revocations at once."""

    def endpoint(self, name: str) -> str:
        return f"{self.settings.issuer}/oauth/{name}"

    # -- authlib hooks -------------------------------------------------------------
    def query_client(self, client_id: str) -> ClientRecord | ConsoleClient | None:
        if client_id == CONSOLE_CLIENT_ID:
            return self.console_client
        with self.sessions() as session:
            row = session.get(OAuthClient, client_id)
            if row is None or row.revoked_at is not None:
                return None
            session.expunge(row)
            return ClientRecord(row)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """JWT access tokens are self-contained: nothing to store."""

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers or [])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def _generate_token(
        self,
        grant_type: str,
        client: ClientRecord | ConsoleClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        if isinstance(user, User):
            return self.person_token(user, scope)
        assert isinstance(client, ClientRecord)
        granted = client.get_allowed_scope(scope)
        token, ttl = self.tokens.issue(
            client_id=client.row.client_id, org_id=client.row.org_id, role=client.row.role, scope=granted
        )
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": granted}

    def person_token(self, user: User, scope: str | None = None) -> dict[str, Any]:
        return self.person_token_for(user.username, user.org_id, user.role, scope)

    def person_token_for(
        self, username: str, org_id: str, role: str, scope: str | None = None
    ) -> dict[str, Any]:
        """A token for a person signed in through the console: their organisation, their role's scopes."""
        allowed = ROLE_SCOPES.get(role, frozenset()) - {"admin"}
        granted = " ".join(sorted(allowed & set(scope.split()) if scope else allowed))
        token, ttl = self.tokens.issue(
            client_id=CONSOLE_CLIENT_ID, subject=f"user:{username}", org_id=org_id, role=role, scope=granted
        )
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": granted}

    # -- token state ----------------------------------------------------------------
    def verify_signature_only(self, token: str) -> dict[str, Any] | None:
        """Claims of one of our tokens whose signature verifies, even if expired; else None."""
        try:
            return decode_and_validate(
                token,
                self.tokens.key_set(),
                algorithms=OWN_ALGORITHMS,
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                leeway=10**9,  # expiry is judged by is_active, not here
                require_typ=True,
            )
        except TokenRejected:
            return None

    def is_active(self, claims: dict[str, Any]) -> bool:
        now = time.time()
        if (
            int(claims.get("exp", 0)) + self.settings.leeway_s < now
            or int(claims.get("nbf", 0)) - self.settings.leeway_s > now
        ):
            return False
        with self.sessions() as session:
            if session.get(RevokedToken, claims["jti"]) is not None:
                return False
            if claims.get("client_id") == CONSOLE_CLIENT_ID:
                return True
            client = session.get(OAuthClient, claims.get("client_id"))
            return client is not None and client.revoked_at is None


def _oauth_request(server: GbadzAuthorizationServer, path: str, headers: Any, body: bytes) -> OAuth2Request:
    form = {
        k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items()
    }
    oauth_request = OAuth2Request("POST", f"{server.settings.issuer}{path}", headers=headers)
    oauth_request.payload = BasicOAuth2Payload(form)
    oauth_request._body = form  # authlib's client authentication reads request.form
    return oauth_request


def _client_hint(headers: dict[str, str], body: bytes) -> str:
    """The client id a request claims to be (for rate limiting only; never trusted)."""
    import base64

    form = parse_qs(body.decode("utf-8", errors="replace"))
    if "client_id" in form:
        return form["client_id"][0][:100]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            return base64.b64decode(auth[6:]).decode().split(":", 1)[0][:100]
        except (ValueError, UnicodeDecodeError):
            return "malformed"
    if "client_assertion" in form:
        from gbadz.identity.tokens import unverified_claims

        try:
            return str(unverified_claims(form["client_assertion"][0]).get("sub", "unknown"))[:100]
        except TokenRejected:
            return "malformed"
    return "anonymous"


def build_router(server: GbadzAuthorizationServer, limiter: FailureLimiter) -> APIRouter:
    router = APIRouter(tags=["oauth"])

    async def _run(request: Request, endpoint: str | None) -> Response:
        body = await request.body()
        if len(body) > 64 * 1024:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "request body too large"}, status_code=413
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        address = request.client.host if request.client else "unknown"
        keys = (f"addr:{address}", f"client:{_client_hint(headers, body)}")
        wait = limiter.retry_after(*keys)
        if wait is not None:
            return JSONResponse(
                {
                    "error": "too_many_requests",
                    "error_description": f"too many failed authentications; retry in {wait}s",
                },
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        # authlib reads e.g. headers.get("Authorization"): hand it the case-insensitive mapping.
        oauth_request = _oauth_request(server, request.url.path, request.headers, body)

        def call() -> tuple[int, Any, list[tuple[str, str]]]:
            if endpoint is None:
                return server.create_token_response(oauth_request)  # type: ignore[no-any-return]
            return server.create_endpoint_response(endpoint, oauth_request)  # type: ignore[no-any-return]

        status, payload, response_headers = await run_in_threadpool(call)
        if isinstance(payload, dict) and payload.get("error") == "invalid_client":
            limiter.failed(*keys)
        response = JSONResponse(payload, status_code=status)
        for name, value in response_headers:
            if name.lower() != "content-type":
                response.headers[name] = value
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/oauth/token", summary="Token endpoint (RFC 6749 §3.2; client credentials grant)")
    async def token(request: Request) -> Response:
        return await _run(request, None)

    @router.post("/oauth/introspect", summary="Token introspection (RFC 7662)")
    async def introspect(request: Request) -> Response:
        return await _run(request, "introspection")

    @router.post("/oauth/revoke", summary="Token revocation (RFC 7009)")
    async def revoke(request: Request) -> Response:
        return await _run(request, "revocation")

    @router.get("/oauth/jwks", summary="Public keys that sign gbadz access tokens (RFC 7517)")
    async def jwks() -> JSONResponse:
        keys = await run_in_threadpool(server.tokens.jwks)
        return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})

    @router.get("/.well-known/oauth-authorization-server", summary="Authorization server metadata (RFC 8414)")
    async def metadata() -> JSONResponse:
        methods = ALL_AUTH_METHODS
        return JSONResponse(
            {
                "issuer": server.settings.issuer,
                "token_endpoint": server.endpoint("token"),
                "jwks_uri": server.endpoint("jwks"),
                "introspection_endpoint": server.endpoint("introspect"),
                "revocation_endpoint": server.endpoint("revoke"),
                "authorization_endpoint": server.endpoint("authorize"),
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [*methods, "none"],
                "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
                "introspection_endpoint_auth_methods_supported": methods,
                "revocation_endpoint_auth_methods_supported": methods,
                "scopes_supported": sorted(SCOPES),
                "service_documentation": f"{server.settings.issuer}/docs",
            },
            headers={"Cache-Control": "public, max-age=300"},
        )

    return router
