"""The authorization server: authlib's, wired to gbadz's storage, grants, endpoints and token minting."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import sqlalchemy as sa
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from sqlalchemy.orm import Session, sessionmaker

from gbadz.config import OAuthSettings
from gbadz.identity.models import OAuthClient, Organization, RevokedToken, User
from gbadz.identity.oauth.clients import CONSOLE_CLIENT_ID, ClientRecord, ConsoleClient
from gbadz.identity.oauth.rfc6749 import GbadzClientCredentials, PeopleAuthorizationCode
from gbadz.identity.oauth.rfc7009 import Revocation
from gbadz.identity.oauth.rfc7523 import PrivateKeyJWT
from gbadz.identity.oauth.rfc7636 import RequiredS256
from gbadz.identity.oauth.rfc7662 import Introspection
from gbadz.identity.scopes import ROLE_SCOPES, SCOPES
from gbadz.identity.tokens import OWN_ALGORITHMS, TokenRejected, TokenService, decode_and_validate

# authlib logs at DEBUG the client id as sent ("Authenticate <id> via client_secret_basic
# failed"; a client that puts its secret in the id field, or sends the Basic value unencoded,
# gets the secret logged) and every token it issues ("Issue token {...}"). Nothing it says
# below WARNING is worth a credential in the log, whatever level gbadz itself logs at.
logging.getLogger("authlib").setLevel(logging.WARNING)
CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
        if not CLIENT_ID.fullmatch(client_id):
            # Ours are gbz_ + hex: anything else (a NUL byte, 10 KB, a pasted secret) is no
            # client, and must not reach the database (PostgreSQL refused NUL with a 500).
            return None
        with self.sessions() as session:
            row = session.get(OAuthClient, client_id)
            if row is None or row.revoked_at is not None:
                return None
            org = session.get(Organization, row.org_id)
            if org is None or org.disabled_at is not None:
                return None  # a disabled organisation's clients get no new tokens
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
        # An administrator's session holds exactly what an admin client holds, nothing more.
        allowed = ROLE_SCOPES.get(role, frozenset())
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
            org = session.get(Organization, str(claims.get("gbadz_org", "")))
            if org is None or org.disabled_at is not None:
                return False
            if claims.get("client_id") == CONSOLE_CLIENT_ID:
                user = session.scalar(
                    sa.select(User).where(User.username == str(claims.get("sub", "")).removeprefix("user:"))
                )
                return user is not None and user.disabled_at is None
            client = session.get(OAuthClient, claims.get("client_id"))
            return client is not None and client.revoked_at is None
