"""The resource server: who is calling, and may they call this route?

Every protected route depends on :func:`require_scopes`. A request without a valid bearer
token gets 401 with an RFC 6750 ``WWW-Authenticate`` challenge; a valid token lacking a
scope gets 403 ``insufficient_scope``. Our own tokens are checked against our JWKS, the
revocation list and the client's status; tokens of a configured external issuer are
checked against that issuer's JWKS and mapped to an organisation and role by its claims.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
from fastapi import Depends, Request
from joserfc.jwk import KeySet
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from gbadz import audit
from gbadz.config import ExternalIssuer, OAuthSettings
from gbadz.errors import InsufficientScope, Unauthenticated
from gbadz.identity.models import OAuthClient, Organization, RevokedToken, User
from gbadz.identity.scopes import ROLE_SCOPES
from gbadz.identity.service import Viewer, Viewers
from gbadz.identity.tokens import (
    Principal,
    TokenRejected,
    TokenService,
    decode_and_validate,
    unverified_claims,
)
from gbadz.log import get_logger

log = get_logger("gbadz.identity.auth")

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

    def cold(self) -> bool:
        return self._cached is None or time.monotonic() - self._cached[0] >= self.TTL_S

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


class ClaimRefused(TokenRejected):
    """A trusted external issuer's token claims an organisation or role the issuer may not assert."""

    def __init__(self, issuer: str, claims: dict[str, Any], what: str, description: str) -> None:
        super().__init__(description)
        self.issuer = issuer
        self.what = what
        self.jti = str(claims.get("jti", ""))[:128]
        self.subject = str(claims.get("sub", ""))[:200]
        self.claims = claims


class RevocationView:
    """Revoked token ids, revoked clients, disabled people and organisations, kept in memory and re-read from the database.

    A background task (:meth:`load` through :func:`gbadz.background.every`, started with the
    app) re-reads them every ``refresh_s`` with one indexed query, in a worker thread on the
    app's background engine; requests only read the snapshot. If the snapshot is older than
    ``max_age_s`` (no refresher running, or it is stuck), a request has it re-read, off the
    event loop (:meth:`Authenticator.authenticate_async`). Guarantee: a revocation takes
    effect at once on the replica that made it (it calls :meth:`invalidate`); on PostgreSQL
    every other replica re-reads as the revoking transaction's ``NOTIFY`` arrives
    (:class:`gbadz.background.Listener`, milliseconds), and within ``refresh_s`` if a
    notification is lost (``max_age_s`` at worst; ADR 0027).
    """

    def __init__(
        self, sessions: sessionmaker[Session], refresh_s: float = 1.0, max_age_s: float = 5.0
    ) -> None:
        self.sessions = sessions
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self._loaded_at = -1e9  # when the query of the current snapshot started (monotonic)
        self._force_until = 0.0
        self._jtis: frozenset[str] = frozenset()
        self._clients: frozenset[str] = frozenset()
        self._people: frozenset[str] = frozenset()
        self._orgs: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._swap = threading.Lock()

    def stale(self, arrived: float | None = None) -> bool:
        """Whether a request that arrived at ``arrived`` (monotonic; default now) needs a re-read."""
        now = time.monotonic()
        arrived = now if arrived is None else arrived
        if now - self._loaded_at > self.max_age_s:
            return True
        # Just after an invalidation, only a read that started after the request arrived will do.
        return arrived < self._force_until and self._loaded_at < arrived

    def invalidate(self) -> None:
        # Re-read for every request for a moment, so the change is seen once its transaction commits.
        self._force_until = time.monotonic() + 2.0

    def refresh(self, arrived: float | None = None) -> None:
        """Re-read unless a read that serves ``arrived`` finished while this thread waited (one at a time)."""
        arrived = time.monotonic() if arrived is None else arrived
        with self._lock:
            if not self.stale(arrived):
                return
            self.load()

    def load(self) -> None:
        """Read the revoked tokens, clients, disabled people and organisations (the background refresh calls this every ``refresh_s``)."""
        started = time.monotonic()
        with self.sessions() as session:
            now = datetime.now(UTC)
            jtis = frozenset(
                session.scalars(sa.select(RevokedToken.jti).where(RevokedToken.expires_at > now))
            )
            clients = frozenset(
                session.scalars(sa.select(OAuthClient.client_id).where(OAuthClient.revoked_at.is_not(None)))
            )
            people = frozenset(
                "user:" + name
                for name in session.scalars(sa.select(User.username).where(User.disabled_at.is_not(None)))
            )
            orgs = frozenset(
                session.scalars(sa.select(Organization.id).where(Organization.disabled_at.is_not(None)))
            )
        with self._swap:  # a read that started earlier never replaces a later one
            if started >= self._loaded_at:
                self._jtis, self._clients, self._people, self._orgs = jtis, clients, people, orgs
                self._loaded_at = started

    def check(self, principal: Principal, arrived: float | None = None) -> None:
        """Raise :class:`TokenRejected` if the token or its client was revoked.

        Re-reads a stale snapshot first: from a worker thread only (the event loop calls
        :meth:`Authenticator.authenticate_async`, which refreshes in a thread before this).
        """
        if self.stale(arrived):
            self.refresh(arrived)
        if principal.jti in self._jtis:
            raise TokenRejected("the token was revoked")
        if not principal.external and principal.client_id in self._clients:
            raise TokenRejected("the token's client was revoked")
        # A person's token dies with their account (issue #20 item 8), not at its expiry.
        if not principal.external and principal.subject in self._people:
            raise TokenRejected("the person's account is disabled")
        # Every token of a disabled organisation dies with it (issue #19), an external issuer's
        # included: the issuer speaks for the organisation, and the organisation is out.
        if principal.org_id in self._orgs:
            raise TokenRejected("the organisation is disabled")


class Authenticator:
    CACHE_SIZE = 10_000

    def __init__(
        self, settings: OAuthSettings, tokens: TokenService, sessions: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.sessions = sessions
        self.external = {e.issuer: ExternalIssuerKeys(e) for e in settings.external_issuers}
        self.revocations = RevocationView(sessions)
        # Verified tokens: signature and claims cannot change, so a token is verified once and
        # afterwards only its expiry and revocation are checked.
        self._verified: dict[str, Principal] = {}
        self._refusals_audited: set[str] = set()

    def needs_network(self, authorization: str | None) -> bool:
        """Whether authenticating this header would fetch an external issuer's JWKS."""
        token = (authorization or "").partition(" ")[2].strip()
        if not self.external or token in self._verified:
            return False
        try:
            issuer = unverified_claims(token).get("iss")
        except TokenRejected:
            return False
        keys = self.external.get(issuer) if isinstance(issuer, str) else None
        return keys is not None and keys.cold()

    async def authenticate_async(self, authorization: str | None) -> Principal:
        """:meth:`authenticate` for the event loop: the database and the network only in threads.

        JWT checks are CPU work and the revocation snapshot is in memory, so a request is
        authenticated on the loop; a stale snapshot is re-read in a thread of the loop's default
        executor (outside the request threads' limiter, on the background engine) and fetching an
        external issuer's JWKS goes to a request thread.
        """
        if self.needs_network(authorization):
            return await run_in_threadpool(self.authenticate, authorization)
        arrived = time.monotonic()
        if self.revocations.stale(arrived):
            await asyncio.to_thread(self.revocations.refresh, arrived)
        refused: list[ClaimRefused] = []
        try:
            return self.authenticate(authorization, arrived, on_refusal=refused.append)
        finally:
            # The audit record is a database write: never on the event loop (issue #20 item 3).
            for refusal in refused:
                await asyncio.to_thread(self._audit_refusal, refusal)

    def authenticate(
        self,
        authorization: str | None,
        arrived: float | None = None,
        on_refusal: Callable[[ClaimRefused], object] | None = None,
    ) -> Principal:
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
            principal = self._verified.get(token)
            if principal is None:
                principal = self._verify(token)
            elif principal.expires_at.timestamp() + self.settings.leeway_s < time.time():
                self._verified.pop(token, None)
                raise TokenRejected("the token expired")
            self.revocations.check(principal, arrived)
        except TokenRejected as exc:
            if isinstance(exc, ClaimRefused):
                (on_refusal or self._audit_refusal)(exc)
            raise Unauthenticated(exc.description, headers=_challenge(exc.error, exc.description)) from None
        return principal

    def _audit_refusal(self, refusal: ClaimRefused) -> None:
        """Record an external token that overreached its issuer, once per token."""
        key = f"{refusal.issuer}|{refusal.jti}"
        if key in self._refusals_audited:
            return
        if len(self._refusals_audited) >= self.CACHE_SIZE:
            self._refusals_audited.clear()
        self._refusals_audited.add(key)
        cfg = self.external[refusal.issuer].issuer
        claimed = {
            "claimed_org": str(refusal.claims.get(cfg.org_claim, ""))[:100],
            "claimed_role": str(refusal.claims.get(cfg.role_claim, ""))[:32],
        }
        try:
            audit.record_detached(
                self.sessions,
                actor=f"external:{refusal.subject}@{refusal.issuer}"[:200],
                action="token.claim_refused",
                subject_type="external_issuer",
                subject_id=refusal.issuer[:200],
                details={"refused": refusal.what, "jti": refusal.jti, **claimed},
            )
        except SQLAlchemyError as exc:
            # The token is refused either way; the database being down must not turn that into a 500.
            log.warning("could not audit a refused external token", error=type(exc).__name__)

    def _verify(self, token: str) -> Principal:
        issuer = unverified_claims(token).get("iss")
        if issuer == self.settings.issuer:
            principal = self.tokens.principal(self.tokens.decode(token))
        elif isinstance(issuer, str) and issuer in self.external:
            principal = self._external(token, self.external[issuer])
        else:
            raise TokenRejected("the token's issuer is not trusted")
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = principal
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
        # A claim of another type (a list, an object) is no mapping either: never a TypeError.
        if not isinstance(org, str) or not org or not isinstance(role, str) or role not in ROLE_SCOPES:
            raise TokenRejected(f"the token lacks a valid {cfg.org_claim!r} / {cfg.role_claim!r} mapping")
        # The issuer speaks only for the organisations and roles configured for it (issue #20
        # item 6): a signature proves who issued the token, not that the issuer may say this.
        if org not in cfg.organizations:
            raise ClaimRefused(
                cfg.issuer, claims, "organisation", "the issuer may not speak for this organisation"
            )
        if role not in cfg.roles:
            raise ClaimRefused(cfg.issuer, claims, "role", "the issuer may not grant this role")
        raw_scope = claims.get(cfg.scope_claim, "")
        if isinstance(raw_scope, str):
            requested = set(raw_scope.split())
        elif isinstance(raw_scope, list) and all(isinstance(s, str) for s in raw_scope):
            requested = set(raw_scope)
        else:
            raise TokenRejected(
                f"the token's {cfg.scope_claim!r} claim is neither a string nor a list of strings"
            )
        # Named under their issuer: an external identity provider cannot mint a subject or client
        # id that reads as one of ours (a "user:…" or a "gbz_…") in the audit trail or in the
        # "never the same person twice" checks of an approval.
        namespace = f"ext:{cfg.issuer}#"
        return Principal(
            subject=namespace + str(claims["sub"]),
            client_id=namespace + str(claims.get("client_id") or claims.get("azp") or claims["sub"]),
            org_id=org,
            role=str(role),
            # An external issuer cannot grant more than the role allows here.
            scopes=frozenset(requested & ROLE_SCOPES[str(role)]),
            jti=str(claims["jti"]),
            issuer=cfg.issuer,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            external=True,
        )


async def authorize(
    authenticator: Authenticator, authorization: str | None, scopes: Sequence[str]
) -> Principal:
    """The principal of an ``Authorization`` header value, after checking it holds every scope
    listed: what :func:`require_scopes` does for a route, and the console for a read it makes
    without an HTTP round trip (``gbadz.console.routes.Api``)."""
    principal = await authenticator.authenticate_async(authorization)
    missing = sorted(set(scopes) - principal.scopes)
    if missing:
        raise InsufficientScope(
            f"this operation needs the scope(s) {' '.join(missing)}",
            headers=_challenge("insufficient_scope", scope=" ".join(scopes)),
        )
    return principal


def require_scopes(*scopes: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's principal, after checking it holds every scope listed."""

    async def dependency(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        principal = await authorize(authenticator, request.headers.get("authorization"), scopes)
        request.state.principal = principal
        return principal

    dependency.required_scopes = scopes  # type: ignore[attr-defined]  # read by the authorization-matrix test
    return dependency


Authenticated = Annotated[Principal, Depends(require_scopes())]
Admin = Annotated[Principal, Depends(require_scopes("admin"))]


def actor_of(principal: Principal) -> str:
    """Who did it, for the audit trail: the client, or the person when a person signed in."""
    if principal.subject != principal.client_id:
        return f"{principal.role}:{principal.subject} via {principal.client_id}@{principal.org_id}"
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


def viewer_of(request: Request, session: Session, principal: Principal) -> Viewer:
    """The caller's organisation and registered jurisdiction (cached per process)."""
    viewers: Viewers = request.app.state.viewers
    return viewers.of(session, principal.org_id)
