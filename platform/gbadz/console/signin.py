"""The sign-in page of the authorization endpoint (RFC 6749 §3.1): the form a person fills in.

The protocol (parsing the authorization request, checking the person, issuing the code)
is the authorization server's, in :mod:`gbadz.identity.authorize`; this module renders the
page, protects the form with a double-submit token and rate limits failed sign-ins per
username and per address.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gbadz.console.web import FormTooLarge, read_form, render
from gbadz.identity import people
from gbadz.identity.authorize import authorization_request, check_person, issue_code, redirect_error
from gbadz.identity.oauth import FailureLimiter, GbadzAuthorizationServer

SIGNIN_COOKIE = "__Host-gbadz_signin"
MAX_FORM_BYTES = 8 * 1024


def _error_page(request: Request, message: str) -> Response:
    return render(request, "error.html", status_code=400, title="Sign-in failed", message=message)


def build_router(server: GbadzAuthorizationServer, limiter: FailureLimiter) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def _consent(request: Request) -> tuple[OAuth2Request, Any] | Response:
        oauth_request = authorization_request(server, request)
        if oauth_request is None:
            return _error_page(request, "A parameter of the sign-in link is repeated.")
        try:
            grant = server.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            redirected = redirect_error(error)
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

        user = await run_in_threadpool(check_person, server, username, password)
        if user is None:
            limiter.failed(*keys)
            return _form(
                request, 400, errors={"password": "The username or the password is wrong."}, username=username
            )

        status, _, headers = await run_in_threadpool(issue_code, server, oauth_request, grant, user, address)
        location = dict(headers).get("Location")
        if status != 302 or not location:
            return _error_page(request, "The sign-in could not be completed.")
        response = RedirectResponse(location, status_code=302)
        response.delete_cookie(SIGNIN_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
        return response

    return router
