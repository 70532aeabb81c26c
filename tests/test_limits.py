"""Request-size limits against a real uvicorn on loopback, configured as ``gbadz serve`` runs it
(#20 finding 5): bodies are refused before they are read in full and before authentication; an
oversized header block closes the connection."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from gbadz.limits import server_options
from tests.api import free_port

BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 256 * 1024
HEADER_LIMIT = 16 * 1024


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, int]]:
    """The API under uvicorn with ``gbadz serve``'s server options and small limits."""
    port = free_port()
    limited = settings.model_copy(
        update={
            "oauth": OAuthSettings(issuer=f"http://127.0.0.1:{port}"),
            "api": settings.api.model_copy(
                update={
                    "max_body_bytes": BODY_LIMIT,
                    "max_upload_bytes": UPLOAD_LIMIT,
                    "max_header_bytes": HEADER_LIMIT,
                }
            ),
        }
    )
    config = uvicorn.Config(
        create_app(limited), host="127.0.0.1", port=port, log_level="warning", **server_options(limited)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer (read until the server closes)."""
    data = b""
    sock.settimeout(5)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
    }
    return int(lines[0].split()[1]), headers, body


def _send_all(sock: socket.socket, chunks: Iterator[bytes]) -> tuple[int, bool]:
    """Send until done or the server stops taking data; (bytes sent, whether it was cut off)."""
    sent = 0
    sock.settimeout(2)
    for chunk in chunks:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return sent, True
        sent += len(chunk)
    return sent, False


class TestBodyLimit:
    def test_declared_oversized_body_is_refused_before_it_is_sent(self, served: tuple[str, int]) -> None:
        """A Content-Length over the limit gets 413 in the error shape at once, unauthenticated, with no body sent."""
        started = time.monotonic()
        with socket.create_connection(served) as sock:
            sock.sendall(
                b"POST /api/v1/access-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 157286400\r\n\r\n"
            )
            status, headers, body = _answer(sock)
        assert 413 == status
        assert "close" == headers.get("connection")
        payload = json.loads(body)
        assert ("PayloadTooLarge", {"error", "detail", "request_id"}) == (payload["error"], set(payload))
        assert payload["request_id"] == headers["x-request-id"]
        assert time.monotonic() - started < 2

    def test_chunked_bodies_are_cut_off(self, served: tuple[str, int]) -> None:
        """Four unauthenticated chunked 32 MiB bodies: each refused with 413 after about the limit, RSS flat."""
        piece = b"[" + b"1," * (32 * 1024) + b"1]"
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        rss_before = _rss_bytes()
        for _ in range(4):
            with socket.create_connection(served) as sock:
                sock.sendall(
                    b"POST /oauth/introspect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                sent, cut = _send_all(sock, (frame for _ in range(32 * 1024 * 1024 // len(frame))))
                status, _, body = _answer(sock)
            assert (413, "PayloadTooLarge") == (status, json.loads(body)["error"])
            assert cut, f"the server took all {sent:,} bytes"
        assert _rss_bytes() - rss_before < 40 * 1024 * 1024

    def test_form_body_is_bounded_before_authentication(self, served: tuple[str, int]) -> None:
        """The token endpoint's form is bounded like JSON: 413, not a client-authentication failure."""
        with socket.create_connection(served) as sock:
            body = b"grant_type=client_credentials&x=" + b"a" * (BODY_LIMIT + 1)
            sock.sendall(
                b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, _, _ = _answer(sock)
        assert 413 == status

    def test_upload_route_has_its_own_limit(self, served: tuple[str, int]) -> None:
        """An upload may exceed the JSON limit but not its own; over it, 413 before the caller is checked."""
        with socket.create_connection(served) as sock:
            sock.sendall(
                b"POST /api/v1/datasets/some-dataset/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                + f"Content-Length: {UPLOAD_LIMIT + 1}\r\n\r\n".encode()
            )
            over, _, _ = _answer(sock)
        with socket.create_connection(served) as sock:
            sock.sendall(
                b"POST /api/v1/datasets/some-dataset/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                + f"Content-Length: {BODY_LIMIT * 2}\r\nConnection: close\r\n\r\n".encode()
                + b"a" * (BODY_LIMIT * 2)
            )
            under, _, _ = _answer(sock)
        assert (413, 401) == (over, under)

    def test_document_route_has_its_own_limit(self, served: tuple[str, int]) -> None:
        """A filed document over 20 MiB is 413 before the caller is checked; under it, 401."""
        answers = []
        for size in (20 * 1024 * 1024 + 1, BODY_LIMIT * 2):
            with socket.create_connection(served) as sock:
                sock.sendall(
                    b"PUT /api/v1/mechanisms/1/document HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\n"
                    + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
                )
                if size < 1024 * 1024:
                    sock.sendall(b"%" * size)
                answers.append(_answer(sock)[0])
        assert [413, 401] == answers

    def test_deeply_nested_json_within_the_limit(self, served: tuple[str, int]) -> None:
        """60,000 nested arrays (under the limit) are a 4xx at once, not a 500 from the JSON parser."""
        body = b"[" * 60_000
        started = time.monotonic()
        with socket.create_connection(served) as sock:
            sock.sendall(
                b"POST /api/v1/transfer-assessments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            status = _answer(sock)[0]
        assert (400, True) == (status, time.monotonic() - started < 2)

    def test_malformed_content_length(self, served: tuple[str, int]) -> None:
        """A Content-Length that is not one whole number (a Unicode digit) is 400, not 500."""
        with socket.create_connection(served) as sock:
            sock.sendall("POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: ²\r\n\r\n".encode())
            status, _, _ = _answer(sock)
        assert status in (400, 413)


class TestHeaderLimit:
    @pytest.mark.parametrize(
        "line",
        [b"X-Padding: " + b"a" * 1000 + b"\r\n", b"a" * 65536],
        ids=["many-header-lines", "one-endless-header"],
    )
    def test_oversized_header_block_closes_the_connection(self, served: tuple[str, int], line: bytes) -> None:
        """Up to 64 MiB of headers: 431 and the connection closed after about the limit, RSS flat."""
        rss_before = _rss_bytes()
        with socket.create_connection(served) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
            sent, cut = _send_all(sock, (line for _ in range(64 * 1024 * 1024 // len(line))))
            status, _, _ = _answer(sock)
        assert 431 == status
        assert cut, f"the server took {sent:,} bytes of headers"
        assert _rss_bytes() - rss_before < 40 * 1024 * 1024
        with socket.create_connection(served) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert 200 == _answer(sock)[0]
