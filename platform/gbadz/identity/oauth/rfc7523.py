"""RFC 7523 client authentication: ``private_key_jwt`` assertions, each jti used once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from gbadz.identity.models import UsedAssertion
from gbadz.identity.oauth.clients import ClientRecord
from gbadz.identity.tokens import TokenRejected, check_claim_types

if TYPE_CHECKING:
    from gbadz.identity.oauth.server import GbadzAuthorizationServer

ASSERTION_ALGORITHMS = ["RS256", "PS256", "ES256", "Ed25519"]


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 client authentication; each assertion's jti is accepted once."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: GbadzAuthorizationServer) -> None:
        super().__init__(validate_jti=True)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.endpoint("token"), self.server.settings.issuer]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        try:  # a crafted exp (text, 10**20) is a refused assertion, not a 500
            check_claim_types({"exp": claims.get("exp", time.time() + 300)})
        except TokenRejected:
            return False
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
