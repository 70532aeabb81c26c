"""The authorization endpoint (RFC 6749 §3.1): where a person signs in with username and password.

Only the console's built-in public client uses it, with PKCE S256 required. The sign-in form
is protected against cross-site submission by a double-submit token (cookie + hidden field),
failed sign-ins are rate limited per username and per address, and errors about the client
or its redirect URI are shown here, never redirected (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gbadz import audit
from gbadz.access import people
from gbadz.access.oauth import FailureLimiter, GbadzAuthorizationServer
from gbadz.console.web import FormTooLarge, read_form, render

SIGNIN_COOKIE = "__Host-gbadz_signin"
MAX_FORM_BYTES = 8 * 1024


def _oauth_request(server: GbadzAuthorizationServer, request: Request) -> OAuth2Request | None:
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


def _error_page(request: Request, message: str) -> Response:
    return render(request, "error.html", status_code=400, title="Sign-in failed", message=message)


def _redirect_error(error: OAuth2Error) -> Response | None:
    """The error sent back to a validated redirect URI, or None when there is none to trust."""
    if not error.redirect_uri:
        return None
    status, _, headers = error()
    location = dict(headers).get("Location")
    return RedirectResponse(location, status_code=302) if location and status == 302 else None


def build_router(server: GbadzAuthorizationServer, limiter: FailureLimiter) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def _consent(request: Request) -> tuple[OAuth2Request, Any] | Response:
        oauth_request = _oauth_request(server, request)
        if oauth_request is None:
            return _error_page(request, "A parameter of the sign-in link is repeated.")
        try:
            grant = server.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            redirected = _redirect_error(error)
            return redirected or _error_page(request, error.description or error.error)
        return oauth_request, grant

    def _form(request: Request, status_code: int = 200, **context: Any) -> Response:
        token = secrets.token_urlsafe(24)
        response = render(
            request,
            "signin.html",
            status_code=status_code,
            action=f"{request.url.path}?{request.url.query}",
            signin_token=token,
            **{"errors": {}, "username": ""} | context,
        )
        response.set_cookie(
            SIGNIN_COOKIE, token, max_age=900, secure=True, httponly=True, samesite="lax", path="/"
        )
        return response

    @router.get("/oauth/authorize")
    async def authorize_page(request: Request) -> Response:
        consent = _consent(request)
        if isinstance(consent, Response):
            return consent
        return _form(request)

    @router.post("/oauth/authorize")
    async def authorize(request: Request) -> Response:
        consent = _consent(request)
        if isinstance(consent, Response):
            return consent
        oauth_request, grant = consent
        try:
            form = await read_form(request, MAX_FORM_BYTES, max_fields=10)
        except FormTooLarge:
            return _error_page(request, "The sign-in form is too large.")
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        sent, expected = str(form.get("signin_token") or ""), request.cookies.get(SIGNIN_COOKIE, "")
        if not expected or not hmac.compare_digest(sent, expected):
            return _form(request, 400, errors={"form": "The sign-in form expired. Please sign in again."})
        errors = {}
        if not username:
            errors["username"] = "Enter your username."
        if not password:
            errors["password"] = "Enter your password."  # noqa: S105 (a message, not a secret)
        if errors:
            return _form(request, 400, errors=errors, username=username)
        address = request.client.host if request.client else "unknown"
        keys = (f"signin-addr:{address}", f"signin-user:{people.normalise_username(username)}")
        wait = limiter.retry_after(*keys)
        if wait is not None:
            response = _form(
                request, 429, errors={"form": "Too many failed sign-ins. Try again in a few minutes."}
            )
            response.headers["Retry-After"] = str(wait)
            return response

        def check() -> Any:
            with server.sessions() as session:
                user = people.authenticate(session, username, password)
                if user is not None:
                    session.expunge(user)
                return user

        user = await run_in_threadpool(check)
        if user is None:
            limiter.failed(*keys)
            return _form(
                request, 400, errors={"password": "The username or the password is wrong."}, username=username
            )

        def issue() -> tuple[int, Any, list[tuple[str, str]]]:
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

        status, _, headers = await run_in_threadpool(issue)
        location = dict(headers).get("Location")
        if status != 302 or not location:
            return _error_page(request, "The sign-in could not be completed.")
        response = RedirectResponse(location, status_code=302)
        response.delete_cookie(SIGNIN_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
        return response

    return router
