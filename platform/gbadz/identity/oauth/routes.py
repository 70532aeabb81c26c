"""HTTP routes of the authorization server: token, introspection, revocation, JWKS and RFC 8414 metadata.

authlib has no FastAPI server integration, so this small adapter turns Starlette requests into
authlib's and back, and applies the failed-authentication limits.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from gbadz.errors import ErrorBody
from gbadz.identity.oauth.clients import ALL_AUTH_METHODS
from gbadz.identity.oauth.limits import FailureLimiter, Network, client_address
from gbadz.identity.oauth.rfc7523 import ASSERTION_ALGORITHMS
from gbadz.identity.oauth.server import GbadzAuthorizationServer
from gbadz.identity.scopes import SCOPES


class _FormRequest(OAuth2Request):  # type: ignore[misc]  # authlib ships no types
    """authlib's request whose form may be empty (its own raises NotImplementedError on an empty
    body, which answered 500 to an empty unauthenticated POST: issue #20 item 4)."""

    @property
    def form(self) -> dict[str, str]:
        return dict(self._body or {})


def _oauth_request(server: GbadzAuthorizationServer, path: str, headers: Any, body: bytes) -> OAuth2Request:
    form = {
        k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items()
    }
    oauth_request = _FormRequest("POST", f"{server.settings.issuer}{path}", headers=headers)
    oauth_request.payload = BasicOAuth2Payload(form)
    oauth_request._body = form  # authlib's client authentication reads request.form
    return oauth_request


def _basic_unreadable(headers: dict[str, str]) -> bool:
    """A Basic credential that is not base64 of UTF-8 ``id:secret`` (authlib answered it with a
    500 whose traceback quoted the header's decoding)."""
    import base64
    import binascii

    auth = headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return False
    try:
        return ":" not in base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return True


class OAuthErrorBody(BaseModel):
    """An error of the authorization server, in the shape RFC 6749 §5.2 sets."""

    error: str
    error_description: str | None = None


# What these endpoints answer besides 200 (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 7662 §2.3).
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthErrorBody,
        "description": "invalid_request | invalid_grant | unsupported_grant_type …",
    },
    401: {"model": OAuthErrorBody, "description": "invalid_client: the client did not authenticate"},
    413: {"model": OAuthErrorBody, "description": "the body is larger than 64 KiB"},
    422: {"model": ErrorBody, "description": "RequestValidationError: a value no client can have (a NUL)"},
    429: {"model": OAuthErrorBody, "description": "too many failed authentications; see Retry-After"},
}
_CLIENT_AUTH = ("client_id", "client_secret", "client_assertion_type", "client_assertion")


def _form(*fields: str) -> dict[str, Any]:
    """The form-encoded body an endpoint reads, for the OpenAPI document (it parses the body itself)."""
    schema = {"type": "object", "properties": {name: {"type": "string"} for name in (*fields, *_CLIENT_AUTH)}}
    return {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}}


def build_router(
    server: GbadzAuthorizationServer, limiter: FailureLimiter, trusted: tuple[Network, ...] = ()
) -> APIRouter:
    router = APIRouter(tags=["oauth"])
    limit = server.settings.failed_auth_limit

    async def _run(request: Request, endpoint: str | None) -> Response:
        body = await request.body()
        if len(body) > 64 * 1024:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "request body too large"}, status_code=413
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.client.host if request.client else None
        address = client_address(peer, headers.get("x-forwarded-for"), trusted)
        # Counted per address only: client secrets are 256-bit random values that no rate of
        # guessing reaches, and a count per client id let anyone lock a client out (ADR 0021).
        limits = {f"client-auth-addr:{address}": limit}
        # authlib reads e.g. headers.get("Authorization"): hand it the case-insensitive mapping.
        oauth_request = _oauth_request(server, request.url.path, request.headers, body)

        def call() -> tuple[int, Any, list[tuple[str, str]]]:
            # In a worker thread: the shared counters are database writes. The attempt is counted
            # before the credentials are checked (a failure until it succeeds, ADR 0027).
            attempt = limiter.attempt(limits)
            wait = attempt.wait
            if wait is not None:
                return (
                    429,
                    {
                        "error": "too_many_requests",
                        "error_description": f"too many failed authentications; retry in {wait}s",
                    },
                    [("Retry-After", str(wait))],
                )
            if _basic_unreadable(headers):
                attempt.failed()
                return (
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "the Basic credentials are not base64 of id:secret",
                    },
                    [("WWW-Authenticate", 'Basic realm="gbadz"')],
                )
            if endpoint is None:
                answer = server.create_token_response(oauth_request)
            else:
                answer = server.create_endpoint_response(endpoint, oauth_request)
            payload = answer[1]
            if isinstance(payload, dict) and payload.get("error") == "invalid_client":
                attempt.failed()
            else:
                attempt.succeeded()
            return answer  # type: ignore[no-any-return]

        status, payload, response_headers = await run_in_threadpool(call)
        response = JSONResponse(payload, status_code=status)
        for name, value in response_headers:
            if name.lower() != "content-type":
                response.headers[name] = value
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post(
        "/oauth/token",
        summary="Token endpoint (RFC 6749 §3.2; client credentials grant)",
        responses=_ERRORS,
        openapi_extra=_form("grant_type", "scope", "code", "redirect_uri", "code_verifier"),
    )
    async def token(request: Request) -> Response:
        return await _run(request, None)

    @router.post(
        "/oauth/introspect",
        summary="Token introspection (RFC 7662)",
        responses=_ERRORS,
        openapi_extra=_form("token", "token_type_hint"),
    )
    async def introspect(request: Request) -> Response:
        return await _run(request, "introspection")

    @router.post(
        "/oauth/revoke",
        summary="Token revocation (RFC 7009)",
        responses=_ERRORS,
        openapi_extra=_form("token", "token_type_hint"),
    )
    async def revoke(request: Request) -> Response:
        return await _run(request, "revocation")

    @router.get("/oauth/jwks", summary="Public keys that sign gbadz access tokens (RFC 7517)")
    async def jwks() -> JSONResponse:
        keys = await run_in_threadpool(server.tokens.jwks)
        return JSONResponse(keys, headers={"Cache-Control": "public, max-age=60"})

    @router.get("/.well-known/oauth-authorization-server", summary="Authorization server metadata (RFC 8414)")
    async def metadata() -> JSONResponse:
        methods = ALL_AUTH_METHODS
        return JSONResponse(
            {
                "issuer": server.settings.issuer,
                "token_endpoint": server.endpoint("token"),
                "jwks_uri": server.endpoint("jwks"),
                "introspection_endpoint": server.endpoint("introspect"),
                "revocation_endpoint": server.endpoint("revoke"),
                "authorization_endpoint": server.endpoint("authorize"),
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [*methods, "none"],
                "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
                "introspection_endpoint_auth_methods_supported": methods,
                "revocation_endpoint_auth_methods_supported": methods,
                "scopes_supported": sorted(SCOPES),
                "service_documentation": f"{server.settings.issuer}/docs",
            },
            headers={"Cache-Control": "public, max-age=300"},
        )

    return router
