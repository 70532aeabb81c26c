"""Request-size limits applied before a route runs: bodies per route class, and the header block.

A body over its route's limit is refused with 413 before anything parses it and before the
caller is authenticated: at once when ``Content-Length`` says so, and as soon as the running
count passes the limit when the body is chunked (the rest is never read). Upload routes stream
to storage and get their own, larger limit (their routes check it too). The header block is
bounded by the HTTP server itself (:func:`server_options`), since no ASGI code sees headers
before the server has buffered them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbadz.config import Settings

#: ASGI scope key of a request the app makes to itself (the console's API calls): it runs
#: inside an outer request that already holds an admission slot, so it takes none. A scope
#: key, never a header: only code in this process can set one.
IN_PROCESS = "gbadz.in_process"


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
        # The console's upload form: the file plus 1 MiB for its multipart framing (issue #19).
        RouteLimit(
            frozenset({"POST"}),
            re.compile(rf"/console/provider/datasets/{segment}/uploads"),
            settings.api.max_upload_bytes + 1024 * 1024,
        ),
        RouteLimit(frozenset({"PUT"}), re.compile(rf"/api/v1/mechanisms/{segment}/document"), document_bytes),
        RouteLimit(
            frozenset({"POST"}),
            re.compile(rf"/console/mechanisms/{segment}/document"),
            console_document_bytes,
        ),
    ]


_HEAD_PIECE = 4096
_HEAD_TOO_LARGE_BODY = json.dumps(
    {"error": "RequestHeaderFieldsTooLarge", "detail": "the request line and headers are over the limit"}
).encode()
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    + f"connection: close\r\ncontent-length: {len(_HEAD_TOO_LARGE_BODY)}\r\n\r\n".encode()
    + _HEAD_TOO_LARGE_BODY
)


def bounded_httptools(max_head_bytes: int, head_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, refusing a request line plus headers over ``max_head_bytes``
    and closing a connection that sends no complete head within ``head_timeout_s``.

    httptools (llhttp) buffers a header block of any size (a 200 MB one was accepted). Bytes are
    counted as they arrive, before the parser sees them, from the end of one request's headers
    to the end of the next one's; past the limit the server answers 431 and closes. uvicorn's
    h11 protocol has the same bound built in (``h11_max_incomplete_event_size``) but serves about
    a third of httptools' requests per second here.

    uvicorn closes a kept-alive connection idle for ``timeout_keep_alive`` after a response, but
    arms no timer for a new connection, and any byte received cancels the keep-alive timer: a
    connection that never sends a request, or sends its head a byte at a time, stays open for
    ever (measured: 200 of them still open after a minute). Each costs a file descriptor; enough
    of them and accept() fails for everyone. The head deadline covers both."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_body = False
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            # While a head is arriving, feed it in small pieces so that body bytes sent in the
            # same segment are not counted as head; the rest of the segment goes in at once.
            while data and not self._in_body:
                piece, data = data[:_HEAD_PIECE], data[_HEAD_PIECE:]
                self._head_bytes += len(piece)
                if self._head_bytes > max_head_bytes:
                    self.transport.write(_HEAD_TOO_LARGE)
                    self.transport.close()
                    return
                super().data_received(piece)
                if self.transport.is_closing():
                    return
            if data:
                super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_body, self._head_bytes = True, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_deadline = self.loop.call_later(head_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _expired(self) -> None:
            self._head_deadline = None
            cycle: Any = self.cycle  # None until a request's head arrives (typed as always set)
            if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return BoundedHttpToolsProtocol


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options that bound what a client can make the server buffer and hold: the request
    line plus headers at ``api.max_header_bytes`` (431 or 400, and the connection closed), a
    head within ``api.request_header_timeout_s``, kept-alive idle connections ``api.keep_alive_s``."""
    limit = settings.api.max_header_bytes
    try:
        protocol: Any = bounded_httptools(limit, settings.api.request_header_timeout_s)
    except ImportError:  # httptools is optional in uvicorn: h11 bounds the head itself
        protocol = "h11"
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": limit,
        # No route speaks WebSocket: refuse upgrades rather than hand the connection elsewhere.
        "ws": "none",
        # gbadz decides whom to believe about the client's address (api.trusted_proxies); uvicorn
        # would otherwise take X-Forwarded-For from any local peer (issue #20 item 8).
        "proxy_headers": False,
        "timeout_keep_alive": settings.api.keep_alive_s,
        "access_log": settings.api.access_log,
    }
