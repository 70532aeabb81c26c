"""RFC 7009 token revocation: a revoked token's jti is kept until it would have expired."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from authlib.oauth2.rfc7009 import RevocationEndpoint

from gbadz import audit
from gbadz.identity.models import RevokedToken
from gbadz.identity.oauth.rfc7662 import TokenView, _OwnTokens

if TYPE_CHECKING:
    from gbadz.identity.oauth.server import GbadzAuthorizationServer


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
