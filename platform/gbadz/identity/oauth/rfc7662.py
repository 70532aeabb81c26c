"""RFC 7662 token introspection over gbadz's own JWT access tokens."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from gbadz.identity.oauth.clients import ALL_AUTH_METHODS, ClientRecord

if TYPE_CHECKING:
    from gbadz.identity.oauth.server import GbadzAuthorizationServer


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
