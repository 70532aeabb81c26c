"""Clients as authlib sees them (RFC 6749 §2): registered clients and the console's built-in public client."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import ClientMixin

from gbadz.identity.models import OAuthClient
from gbadz.identity.scopes import ROLE_SCOPES
from gbadz.identity.service import secret_matches

SECRET_METHODS = ("client_secret_basic", "client_secret_post")
ALL_AUTH_METHODS = [*SECRET_METHODS, "private_key_jwt"]
CONSOLE_CLIENT_ID = "gbadz-console"
CONSOLE_CALLBACK = "/console/callback"
CODE_TTL_S = 60


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
        people = set().union(
            *(ROLE_SCOPES[r] for r in ("provider", "consumer", "compliance_officer", "admin"))
        )
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
