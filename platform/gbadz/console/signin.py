"""The sign-in page of the authorization endpoint (RFC 6749 §3.1): the form a person fills in.

The protocol (parsing the authorization request, checking the person, issuing the code)
is the authorization server's, in :mod:`gbadz.identity.authorize`; this module renders the
page, protects the form with a double-submit token and limits failed sign-ins (ADR 0021):

- per address (the socket peer, or what a trusted proxy forwarded), whatever the username;
- per (username, address), so a stranger elsewhere cannot lock a person out;
- per username across addresses, a distributed guess, but only for browsers that never
  signed in as that person: a successful sign-in leaves a device cookie (signed, naming the
  person and a random device id) and such a browser is counted on its own instead. Whoever
  hammers a username cannot extend a lockout to the browsers its owner uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gbadz.config import ConsoleSettings
from gbadz.console.web import FormTooLarge, read_form, render
from gbadz.crypto.keys import KeyProvider
from gbadz.identity import people
from gbadz.identity.authorize import authorization_request, check_person, issue_code, redirect_error
from gbadz.identity.oauth import FailureLimiter, GbadzAuthorizationServer
from gbadz.identity.oauth.limits import Network, client_address

SIGNIN_COOKIE = "__Host-gbadz_signin"
DEVICE_COOKIE = "__Host-gbadz_device"
MAX_FORM_BYTES = 8 * 1024


class DeviceCookies:
    """A browser's proof that it signed in as a person before: ``username|device|expiry`` with
    an HMAC-SHA256 tag under a key derived (HKDF) from a keyring signing key."""

    KEY_NAME = "console-device"

    def __init__(self, provider: KeyProvider, ttl_s: int) -> None:
        self.provider = provider
        self.ttl_s = ttl_s
        self._key: bytes | None = None

    def _mac(self, payload: bytes) -> bytes:
        if self._key is None:
            _, private = self.provider.signing_key(self.KEY_NAME)
            raw = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            self._key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"gbadz device cookie"
            ).derive(raw)
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, username: str) -> str:
        expiry = int(time.time()) + self.ttl_s
        payload = f"{username}|{secrets.token_urlsafe(12)}|{expiry}".encode()
        return _b64(payload) + "." + _b64(self._mac(payload))

    def device_for(self, value: str | None, username: str) -> str | None:
        """The device id if ``value`` is a valid, unexpired cookie of this person's, else None."""
        if not value or len(value) > 300 or value.count(".") != 1:
            return None
        try:
            payload, tag = (
                base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in value.split(".")
            )
        except ValueError:
            return None
        if not hmac.compare_digest(tag, self._mac(payload)):
            return None
        name, _, rest = payload.decode(errors="replace").partition("|")
        device, _, expiry = rest.partition("|")
        if name != username or not expiry.isdigit() or int(expiry) < time.time():
            return None
        return device


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _error_page(request: Request, message: str) -> Response:
    return render(request, "error.html", status_code=400, title="Sign-in failed", message=message)


def build_router(
    server: GbadzAuthorizationServer,
    limiter: FailureLimiter,
    settings: ConsoleSettings | None = None,
    trusted: tuple[Network, ...] = (),
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    console = settings or ConsoleSettings()
    devices = DeviceCookies(server.tokens.provider, console.device_ttl_s)

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
        peer = request.client.host if request.client else None
        address = client_address(peer, request.headers.get("x-forwarded-for"), trusted)
        name = people.normalise_username(username)[:100]
        limits = {f"signin-addr:{address}": console.failed_signin_address_limit}
        device = devices.device_for(request.cookies.get(DEVICE_COOKIE), name)
        if device is not None:
            limits[f"signin-device:{device}"] = console.failed_signin_limit
        else:
            limits[f"signin-user-addr:{name}|{address}"] = console.failed_signin_limit
            limits[f"signin-user:{name}"] = console.failed_signin_user_limit
        # Counted before the password is checked, uncounted if it was right (ADR 0027): guesses
        # sent at once, to one replica or several, never get more than the limit checked.
        attempt = await run_in_threadpool(limiter.attempt, limits)
        wait = attempt.wait
        if wait is not None:
            response = _form(
                request, 429, errors={"form": "Too many failed sign-ins. Try again in a few minutes."}
            )
            response.headers["Retry-After"] = str(wait)
            return response

        user = await run_in_threadpool(check_person, server, username, password)
        if user is None:
            attempt.failed()
            return _form(
                request, 400, errors={"password": "The username or the password is wrong."}, username=username
            )

        await run_in_threadpool(attempt.succeeded)
        status, _, headers = await run_in_threadpool(issue_code, server, oauth_request, grant, user, address)
        location = dict(headers).get("Location")
        if status != 302 or not location:
            return _error_page(request, "The sign-in could not be completed.")
        response = RedirectResponse(location, status_code=302)
        response.delete_cookie(SIGNIN_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
        if device is None:
            response.set_cookie(
                DEVICE_COOKIE,
                devices.issue(name),
                max_age=console.device_ttl_s,
                secure=True,
                httponly=True,
                samesite="lax",
                path="/",
            )
        return response

    return router
