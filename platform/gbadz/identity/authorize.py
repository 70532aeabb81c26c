"""The authorization endpoint (RFC 6749 §3.1): the protocol side of signing a person in.

Only the console's built-in public client uses it, with PKCE S256 required. The sign-in form
is protected against cross-site submission by a double-submit token (cookie + hidden field),
failed sign-ins are rate limited per username and per address, and errors about the client
or its redirect URI are shown, never redirected (RFC 6749 §4.1.2.1). The page itself is the
console's (``gbadz.console.signin``); this module parses the request, checks the person and
issues the code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gbadz import audit
from gbadz.identity import people
from gbadz.identity.oauth import GbadzAuthorizationServer


def authorization_request(server: GbadzAuthorizationServer, request: Request) -> OAuth2Request | None:
    """The authorization request in the query string; None if a parameter is repeated (§3.1)."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        return None
    oauth_request = OAuth2Request(
        request.method, f"{server.settings.issuer}{request.url.path}?{request.url.query}"
    )
    oauth_request.payload = BasicOAuth2Payload(dict(pairs))
    return oauth_request


def redirect_error(error: OAuth2Error) -> Response | None:
    """The error sent back to a validated redirect URI, or None when there is none to trust."""
    if not error.redirect_uri:
        return None
    status, _, headers = error()
    location = dict(headers).get("Location")
    return RedirectResponse(location, status_code=302) if location and status == 302 else None


def check_person(server: GbadzAuthorizationServer, username: str, password: str) -> Any:
    """The active person with this username and password, detached from its session; None otherwise."""
    with server.sessions() as session:
        user = people.authenticate(session, username, password)
        if user is not None:
            session.expunge(user)
        return user


def issue_code(
    server: GbadzAuthorizationServer, oauth_request: OAuth2Request, grant: Any, user: Any, address: str
) -> tuple[int, Any, list[tuple[str, str]]]:
    """Issue the authorization code for a signed-in person and audit the sign-in (RFC 6749 §4.1.2)."""
    result = server.create_authorization_response(oauth_request, grant_user=user, grant=grant)
    with server.sessions.begin() as session:
        audit.record(
            session,
            actor=f"user:{user.username}",
            action="user.signed_in",
            subject_type="user",
            subject_id=user.id,
            details={"client_id": oauth_request.payload.client_id, "address": address},
        )
    return result  # type: ignore[no-any-return]
