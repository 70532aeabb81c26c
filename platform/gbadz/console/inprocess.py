"""The console's calls to its own API, in process: one ASGI call into the app, no HTTP client.

A page calls ``/api/v1/...`` with the signed-in person's bearer token (ADR 0013). The call runs
the whole app as a request from outside does (request id, body limit, exception handlers,
routing, the token's authentication and every rule of the route) with two differences:

- It takes no admission slot (``limits.IN_PROCESS``): the page that makes it already holds
  one. Taking a second one deadlocked the console under load: with every slot held by pages
  waiting for their inner calls, the inner calls queued behind the next pages until the
  queue timeout (issue #19; ADR 0019's slots are per outer request).
- No HTTP client stands between: httpx over ``ASGITransport`` built a request, parsed its URL,
  encoded the query and read cookies on every call, about half of what the API's fast paths
  themselves cost. The answer is still an ``httpx.Response`` (status, headers, content), so
  what the pages read is unchanged; a call with a form, files or a streamed body (an upload)
  goes through httpx as before.

The scope marker is a key of the ASGI scope, which only code in this process can set: nothing
a client sends (headers, path, query) becomes a scope key, so no request from outside can skip
admission, and none skips authentication (there is no such switch).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import httpx
from fastapi import FastAPI
from starlette.types import Message, Receive, Send

from gbadz.limits import IN_PROCESS

# What the API sees as the caller's address, as httpx's ASGITransport said before.
CLIENT = ("127.0.0.1", 123)
_SIMPLE = frozenset({"params", "json", "content", "headers"})


def _query(params: Mapping[str, Any] | None) -> str:
    """A query string as httpx would send it (lists repeat the key; booleans are true/false)."""
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            text = "true" if item is True else "false" if item is False else "" if item is None else str(item)
            pairs.append((key, text))
    return urlencode(pairs)


class InProcess:
    """Calls into ``app`` as an ASGI application, answering ``httpx.Response`` objects."""

    def __init__(self, app: FastAPI, base_url: str) -> None:
        self.app = app
        parts = urlsplit(base_url)
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.host_header = parts.netloc.encode("latin-1") or b"localhost"
        self._fallback: httpx.AsyncClient | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        streamed = not isinstance(kwargs.get("content"), str | bytes | bytearray | memoryview | None)
        if not set(kwargs) <= _SIMPLE or "?" in path or streamed:
            # Forms, files and streamed bodies (an upload read chunk by chunk, never whole).
            return await self._through_httpx(method, path, **kwargs)
        headers: list[tuple[bytes, bytes]] = [(b"host", self.host_header)]
        body = b""
        if kwargs.get("json") is not None:
            body = jsonlib.dumps(
                kwargs["json"], ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            headers.append((b"content-type", b"application/json"))
        elif kwargs.get("content") is not None:
            content = kwargs["content"]
            body = content.encode() if isinstance(content, str) else bytes(content)
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", str(len(body)).encode()))
        for name, value in (kwargs.get("headers") or {}).items():
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        query = _query(kwargs.get("params"))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": self.scheme,
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "server": (self.host, self.port),
            "client": CLIENT,
            IN_PROCESS: True,
        }
        return await self._run(scope, body, method, path, query)

    async def _run(
        self, scope: dict[str, Any], body: bytes, method: str, path: str, query: str
    ) -> httpx.Response:
        sent_body = False
        done = asyncio.Event()
        status = 500
        response_headers: Sequence[tuple[bytes, bytes]] = ()
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # as a client that stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = message.get("headers") or ()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        finally:
            done.set()
        url = f"{self.scheme}://{self.host_header.decode('latin-1')}{path}" + (f"?{query}" if query else "")
        return httpx.Response(
            status,
            headers=list(response_headers),
            content=b"".join(chunks),
            request=httpx.Request(method, url),
        )

    async def _through_httpx(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Forms, files and streamed bodies: httpx encodes them, over a transport that marks the
        scope the same way."""
        if self._fallback is None:
            base = f"{self.scheme}://{self.host_header.decode('latin-1')}"
            self._fallback = httpx.AsyncClient(transport=_MarkedTransport(self.app), base_url=base)
        response = await self._fallback.request(method, path, **kwargs)
        self._fallback.cookies.clear()  # the API sets none; never let one person's reach another's call
        return response


class _MarkedTransport(httpx.ASGITransport):
    def __init__(self, app: FastAPI) -> None:
        async def marked(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
            await app({**scope, IN_PROCESS: True}, receive, send)

        super().__init__(app=marked, client=CLIENT)
