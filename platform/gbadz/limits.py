"""Request-size limits applied before a route runs: bodies per route class, and the header block.

A body over its route's limit is refused with 413 before anything parses it and before the
caller is authenticated: at once when ``Content-Length`` says so, and as soon as the running
count passes the limit when the body is chunked (the rest is never read). Upload routes stream
to storage and get their own, larger limit (their routes check it too). The header block is
bounded by the HTTP server itself (:func:`server_options`), since no ASGI code sees headers
before the server has buffered them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbadz.config import Settings


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """A larger (or smaller) body limit for the routes whose method and path match."""

    methods: frozenset[str]
    path: re.Pattern[str]
    limit: int


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a chunked body passes its limit (FastAPI re-raises HTTP errors
    from body parsing as they are, so the app's handler answers it in the project's shape)."""

    def __init__(self, limit: int) -> None:
        # Close the connection after the answer: otherwise the server reads (and drops) the rest.
        super().__init__(
            413, f"body: over the {limit:,}-byte limit for this route", headers={"Connection": "close"}
        )
        self.limit = limit


class BodyLimit:
    """ASGI middleware: bound every request body by its route class's limit."""

    def __init__(self, app: ASGIApp, default: int, routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = tuple(routes)

    def limit_for(self, method: str, path: str) -> int:
        for route in self.routes:
            if method in route.methods and route.path.fullmatch(path):
                return route.limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = [v for k, v in scope.get("headers") or [] if k == b"content-length"]
        if declared:
            text = declared[0].decode("latin-1").strip()
            if len(declared) > 1 or not (text.isascii() and text.isdigit()) or len(text) > 20:
                await _refuse(scope, send, 400, "BadRequest", "Content-Length: not one whole number")
                return
            if int(text) > limit:
                await _refuse(scope, send, 413, "PayloadTooLarge", f"body: over the {limit:,}-byte limit")
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(scope, send, 413, "PayloadTooLarge", str(exc.detail))


async def _refuse(scope: Scope, send: Send, status: int, error: str, detail: str) -> None:
    """An error answer in the project's shape (ADR 0003); the connection is closed after it."""
    request_id = (scope.get("state") or {}).get("request_id")
    body = json.dumps({"error": error, "detail": detail, "request_id": request_id}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_limits(settings: Settings, document_bytes: int, console_document_bytes: int) -> list[RouteLimit]:
    """The route classes with a limit of their own: uploads for ingestion and filed documents."""
    segment = r"[^/]+"
    return [
        RouteLimit(
            frozenset({"POST", "PUT"}),
            re.compile(rf"/api/v1/datasets/{segment}/uploads"),
            settings.api.max_upload_bytes,
        ),
        RouteLimit(frozenset({"PUT"}), re.compile(rf"/api/v1/mechanisms/{segment}/document"), document_bytes),
        RouteLimit(
            frozenset({"POST"}),
            re.compile(rf"/console/mechanisms/{segment}/document"),
            console_document_bytes,
        ),
    ]


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options that bound what a client can make the server buffer.

    h11 refuses a request line plus header block over ``api.max_header_bytes`` (400 and the
    connection closed); httptools, uvicorn's default when installed, has no such bound (a 200 MB
    header block was accepted)."""
    return {"http": "h11", "h11_max_incomplete_event_size": settings.api.max_header_bytes}
