"""The resource server: who is calling, and may they call this route?

Every protected route depends on :func:`require_scopes`. A request without a valid bearer
token gets 401 with an RFC 6750 ``WWW-Authenticate`` challenge; a valid token lacking a
scope gets 403 ``insufficient_scope``. Our own tokens are checked against our JWKS, the
revocation list and the client's status; tokens of a configured external issuer are
checked against that issuer's JWKS and mapped to an organisation and role by its claims.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from gbadz.access.identity import ROLE_SCOPES
from gbadz.access.models import OAuthClient, RevokedToken
from gbadz.access.tokens import Principal, TokenRejected, TokenService, decode_and_validate, unverified_claims
from gbadz.config import ExternalIssuer, OAuthSettings
from gbadz.errors import InsufficientScope, Unauthenticated

REALM = "gbadz"


def _challenge(
    error: str | None = None, description: str | None = None, scope: str | None = None
) -> dict[str, str]:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="' + description.replace('"', "'") + '"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


class ExternalIssuerKeys:
    """An external issuer's JWKS, from a file or its URI, cached for five minutes."""

    TTL_S = 300.0

    def __init__(self, issuer: ExternalIssuer) -> None:
        self.issuer = issuer
        self._cached: tuple[float, KeySet] | None = None

    def key_set(self) -> KeySet:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.TTL_S:
            return self._cached[1]
        try:
            if self.issuer.jwks_file is not None:
                data = json.loads(self.issuer.jwks_file.read_text())
            else:
                response = httpx.get(self.issuer.jwks_uri or "", timeout=5.0)
                response.raise_for_status()
                data = response.json()
            keys = KeySet.import_key_set(data)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            raise TokenRejected(f"cannot load the JWKS of {self.issuer.issuer}: {exc}") from None
        self._cached = (now, keys)
        return keys


class Authenticator:
    def __init__(
        self, settings: OAuthSettings, tokens: TokenService, sessions: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.sessions = sessions
        self.external = {e.issuer: ExternalIssuerKeys(e) for e in settings.external_issuers}

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("a bearer access token is required", headers=_challenge())
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "the Authorization header must be 'Bearer <token>'",
                headers=_challenge("invalid_request", "use the Bearer scheme"),
            )
        token = token.strip()
        try:
            issuer = unverified_claims(token).get("iss")
            if issuer == self.settings.issuer:
                principal = self._own(token)
            elif isinstance(issuer, str) and issuer in self.external:
                principal = self._external(token, self.external[issuer])
            else:
                raise TokenRejected("the token's issuer is not trusted")
        except TokenRejected as exc:
            raise Unauthenticated(exc.description, headers=_challenge(exc.error, exc.description)) from None
        return principal

    def _own(self, token: str) -> Principal:
        principal = self.tokens.principal(self.tokens.decode(token))
        with self.sessions() as session:
            if session.get(RevokedToken, principal.jti) is not None:
                raise TokenRejected("the token was revoked")
            client = session.get(OAuthClient, principal.client_id)
            if client is None or client.revoked_at is not None:
                raise TokenRejected("the token's client was revoked")
        return principal

    def _external(self, token: str, keys: ExternalIssuerKeys) -> Principal:
        cfg = keys.issuer
        claims = decode_and_validate(
            token,
            keys.key_set(),
            algorithms=cfg.algorithms,
            issuer=cfg.issuer,
            audience=cfg.audience,
            leeway=self.settings.leeway_s,
            require_typ=False,
        )
        org, role = claims.get(cfg.org_claim), claims.get(cfg.role_claim)
        if not isinstance(org, str) or not org or role not in ROLE_SCOPES:
            raise TokenRejected(f"the token lacks a valid {cfg.org_claim!r} / {cfg.role_claim!r} mapping")
        raw_scope = claims.get(cfg.scope_claim, "")
        requested = set(raw_scope.split() if isinstance(raw_scope, str) else raw_scope)
        return Principal(
            subject=str(claims["sub"]),
            client_id=str(claims.get("client_id") or claims.get("azp") or claims["sub"]),
            org_id=org,
            role=str(role),
            # An external issuer cannot grant more than the role allows here.
            scopes=frozenset(requested & ROLE_SCOPES[str(role)]),
            jti=str(claims["jti"]),
            issuer=cfg.issuer,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            external=True,
        )


def require_scopes(*scopes: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's principal, after checking it holds every scope listed."""

    async def dependency(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        principal = await run_in_threadpool(authenticator.authenticate, request.headers.get("authorization"))
        missing = sorted(set(scopes) - principal.scopes)
        if missing:
            raise InsufficientScope(
                f"this operation needs the scope(s) {' '.join(missing)}",
                headers=_challenge("insufficient_scope", scope=" ".join(scopes)),
            )
        request.state.principal = principal
        return principal

    dependency.required_scopes = scopes  # type: ignore[attr-defined]  # read by the authorization-matrix test
    return dependency


Authenticated = Annotated[Principal, Depends(require_scopes())]
Admin = Annotated[Principal, Depends(require_scopes("admin"))]
CatalogReader = Annotated[Principal, Depends(require_scopes("catalog:read"))]


def actor_of(principal: Principal) -> str:
    return f"{principal.role}:{principal.client_id}@{principal.org_id}"


def describe(principal: Principal) -> dict[str, Any]:
    return {
        "subject": principal.subject,
        "client_id": principal.client_id,
        "org_id": principal.org_id,
        "role": principal.role,
        "scopes": sorted(principal.scopes),
        "issuer": principal.issuer,
        "expires_at": principal.expires_at.isoformat(),
        "external": principal.external,
    }
