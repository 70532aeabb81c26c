"""RFC 6749 grants: client credentials for API clients, the authorization code for people (§4.1, §4.4)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant

from gbadz.identity.models import AuthorizationCode, Organization, User
from gbadz.identity.oauth.clients import ALL_AUTH_METHODS, CODE_TTL_S

if TYPE_CHECKING:
    from gbadz.identity.oauth.server import GbadzAuthorizationServer


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
            org = session.get(Organization, user.org_id)
            if org is None or org.disabled_at is not None:
                return None
            session.expunge(user)
            return user
