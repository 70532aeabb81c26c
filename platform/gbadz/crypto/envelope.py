"""Streaming envelope encryption for whole objects (raw uploads), chunk by chunk.

Format (``GBZENV1``)::

    magic "GBZENV1\\n" | u32 header length | header JSON | chunk 0 | chunk 1 | ... | chunk n-1

Each chunk is AES-256-GCM ciphertext of up to ``chunk_size`` plaintext bytes plus its
16-byte tag. The nonce of chunk ``i`` is ``prefix(7) || i (u32, big-endian) || last(1)``
(the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár): reordering changes
``i``, truncation at a chunk boundary leaves a chunk whose ``last`` flag is wrong, and
appending breaks the final chunk. Every chunk's associated data is the SHA-256 of the
magic and header, so the header (data key id, context, chunk size) cannot be altered. The
data key is one per object, held by the :class:`KeyProvider` (so KEK rotation re-wraps it
and crypto-shredding destroys it); the header names it and its context.

Nothing holds more than two chunks in memory, so a multi-GB file streams through.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gbadz.crypto.keys import KeyContext, KeyProvider
from gbadz.errors import IntegrityCheckFailed

MAGIC = b"GBZENV1\n"
TAG = 16
DEFAULT_CHUNK = 1024 * 1024
MAX_CHUNK = 64 * 1024 * 1024
MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class EnvelopeInfo:
    dek_id: str
    context: KeyContext
    chunk_size: int
    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: str | None


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 2**32:
        raise IntegrityCheckFailed("object too large for one envelope (2**32 chunks)")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def _read_exact(src: BinaryIO, size: int, buf: bytearray | None = None) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; fewer only at end of stream."""
    parts = []
    remaining = size
    while remaining > 0:
        chunk = src.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def ciphertext_size(plaintext_size: int, header_len: int, chunk_size: int) -> int:
    chunks = max(1, -(-plaintext_size // chunk_size))
    return len(MAGIC) + 4 + header_len + plaintext_size + chunks * TAG


class EnvelopeEncryptor:
    """Encrypt one object as a stream of chunks; ``header`` first, then ``chunks``."""

    def __init__(
        self, provider: KeyProvider, context: KeyContext, *, chunk_size: int = DEFAULT_CHUNK
    ) -> None:
        if not 1024 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be between 1 KiB and {MAX_CHUNK} bytes")
        self.context = context
        self.chunk_size = chunk_size
        # One data key per object: its own context column names the object.
        self.dek_id = provider.data_key_id(context)
        self._aead = AESGCM(provider.data_key(self.dek_id))
        self._prefix = secrets.token_bytes(7)
        header = json.dumps(
            {
                "alg": "AES-256-GCM-STREAM",
                "dek_id": self.dek_id,
                "context": context.as_dict(),
                "chunk_size": chunk_size,
                "nonce_prefix": self._prefix.hex(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        self.header = MAGIC + struct.pack(">I", len(header)) + header
        self._aad = hashlib.sha256(self.header).digest()
        self._index = 0

    def seal(
        self, plaintext: bytes | memoryview, last: bool, out: bytearray | None = None
    ) -> bytes | bytearray:
        nonce = _nonce(self._prefix, self._index, last)
        self._index += 1
        if out is None:
            return self._aead.encrypt(nonce, bytes(plaintext), self._aad)
        self._aead.encrypt_into(nonce, plaintext, self._aad, out)
        return out


def encrypt_stream(
    provider: KeyProvider,
    src: BinaryIO,
    dst: BinaryIO,
    context: KeyContext,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    hash_plaintext: bool = True,
) -> EnvelopeInfo:
    """Encrypt ``src`` into ``dst`` in chunks; return what was written."""
    enc = EnvelopeEncryptor(provider, context, chunk_size=chunk_size)
    dst.write(enc.header)
    written = len(enc.header)
    digest = hashlib.sha256() if hash_plaintext else None
    total = 0
    current = bytearray(chunk_size)
    following = bytearray(chunk_size)
    out = bytearray(chunk_size + TAG)
    n = src.readinto(current)  # type: ignore[attr-defined]
    n = _fill(src, current, n)
    while True:
        m = _fill(src, following, src.readinto(following)) if n == chunk_size else 0  # type: ignore[attr-defined]
        last = m == 0
        view = memoryview(current)[:n]
        if digest is not None:
            digest.update(view)
        if n == chunk_size:
            dst.write(enc.seal(view, last, out))
        else:
            dst.write(enc.seal(view, last))
        written += n + TAG
        total += n
        if last:
            break
        current, following, n = following, current, m
    return EnvelopeInfo(
        enc.dek_id, context, chunk_size, total, written, digest.hexdigest() if digest else None
    )


def _fill(src: BinaryIO, buf: bytearray, got: int | None) -> int:
    """Keep reading into ``buf`` until it is full or the stream ends (readinto may be short)."""
    filled = got or 0
    while filled < len(buf):
        more = src.readinto(memoryview(buf)[filled:])  # type: ignore[attr-defined]
        if not more:
            break
        filled += more
    return filled


class EncryptingReader:
    """A read-only file object yielding the envelope of ``src``: hand it to an S3 upload."""

    def __init__(
        self,
        provider: KeyProvider,
        src: BinaryIO,
        context: KeyContext,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        hash_plaintext: bool = True,
    ) -> None:
        self._enc = EnvelopeEncryptor(provider, context, chunk_size=chunk_size)
        self._src = src
        self._pending = bytearray(self._enc.header)
        self._next = _read_exact(src, chunk_size)
        self._done = False
        self._digest = hashlib.sha256() if hash_plaintext else None
        self.plaintext_size = 0

    @property
    def dek_id(self) -> str:
        return self._enc.dek_id

    @property
    def plaintext_sha256(self) -> str:
        if self._digest is None:
            raise ValueError("created with hash_plaintext=False")
        return self._digest.hexdigest()

    def _advance(self) -> None:
        current = self._next
        self._next = (
            _read_exact(self._src, self._enc.chunk_size) if len(current) == self._enc.chunk_size else b""
        )
        last = not self._next
        if self._digest is not None:
            self._digest.update(current)
        self.plaintext_size += len(current)
        self._pending += self._enc.seal(current, last)
        self._done = last

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._advance()
        if size < 0 or size >= len(self._pending):
            data, self._pending = bytes(self._pending), bytearray()
            return data
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data


def read_header(src: BinaryIO) -> tuple[bytes, dict[str, object]]:
    magic = _read_exact(src, len(MAGIC))
    if magic != MAGIC:
        raise IntegrityCheckFailed("not a gbadz envelope (bad magic)")
    raw_len = _read_exact(src, 4)
    if len(raw_len) != 4:
        raise IntegrityCheckFailed("envelope truncated in its header")
    (length,) = struct.unpack(">I", raw_len)
    if length > MAX_HEADER:
        raise IntegrityCheckFailed("envelope header too large")
    header_bytes = _read_exact(src, length)
    if len(header_bytes) != length:
        raise IntegrityCheckFailed("envelope truncated in its header")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise IntegrityCheckFailed("envelope header is not JSON") from None
    return MAGIC + raw_len + header_bytes, header


def decrypt_stream(
    provider: KeyProvider, src: BinaryIO, dst: BinaryIO, *, expected: KeyContext | None = None
) -> EnvelopeInfo:
    """Decrypt an envelope into ``dst``; raise :class:`IntegrityCheckFailed` on any alteration.

    On failure ``dst`` may hold a verified prefix of the plaintext: callers write to a
    temporary file and keep it only when this returns.
    """
    full_header, header = read_header(src)
    try:
        context = KeyContext(**header["context"])  # type: ignore[arg-type]
        dek_id = str(header["dek_id"])
        chunk_size = int(header["chunk_size"])  # type: ignore[call-overload]
        prefix = bytes.fromhex(str(header["nonce_prefix"]))
    except (KeyError, TypeError, ValueError):
        raise IntegrityCheckFailed("envelope header is missing fields") from None
    if expected is not None and context != expected:
        raise IntegrityCheckFailed(
            f"envelope belongs to {context.as_dict()}, not to the expected {expected.as_dict()}"
        )
    if not 1024 <= chunk_size <= MAX_CHUNK or len(prefix) != 7:
        raise IntegrityCheckFailed("envelope header has an invalid chunk size or nonce")
    if provider.context_of(dek_id) != context:
        raise IntegrityCheckFailed("envelope header names a data key of another context")
    aead = AESGCM(provider.data_key(dek_id))
    aad = hashlib.sha256(full_header).digest()
    block = chunk_size + TAG
    current = _read_exact(src, block)
    index = 0
    total = 0
    digest = hashlib.sha256()
    while True:
        following = _read_exact(src, block) if len(current) == block else b""
        last = not following
        if len(current) < TAG:
            raise IntegrityCheckFailed(f"envelope truncated at chunk {index}")
        try:
            plain = aead.decrypt(_nonce(prefix, index, last), current, aad)
        except InvalidTag:
            raise IntegrityCheckFailed(
                f"chunk {index} failed authentication: the envelope was altered, truncated or reordered"
            ) from None
        digest.update(plain)
        dst.write(plain)
        total += len(plain)
        index += 1
        if last:
            break
        current = following
    size = len(full_header) + total + index * TAG
    return EnvelopeInfo(dek_id, context, chunk_size, total, size, digest.hexdigest())


class RangeDecryptor:
    """Random access into a stored envelope: which ciphertext bytes hold a plaintext range, and
    their plaintext, each chunk authenticated before any of it is released.

    The STREAM nonces depend only on a chunk's index and on whether it is the last one, and the
    number of chunks follows from the object's size, so any chunk decrypts on its own: a Range
    request costs the chunks it touches, not the object. Swapping in another envelope made with
    the same key changes the header (its random nonce prefix), which callers compare first.
    """

    def __init__(
        self,
        provider: KeyProvider,
        full_header: bytes,
        header: dict[str, object],
        ciphertext_size: int,
        *,
        expected: KeyContext | None = None,
    ) -> None:
        try:
            context = KeyContext(**header["context"])  # type: ignore[arg-type]
            dek_id = str(header["dek_id"])
            self.chunk_size = int(header["chunk_size"])  # type: ignore[call-overload]
            self._prefix = bytes.fromhex(str(header["nonce_prefix"]))
        except (KeyError, TypeError, ValueError):
            raise IntegrityCheckFailed("envelope header is missing fields") from None
        if expected is not None and context != expected:
            raise IntegrityCheckFailed("envelope belongs to another key context")
        if not 1024 <= self.chunk_size <= MAX_CHUNK or len(self._prefix) != 7:
            raise IntegrityCheckFailed("envelope header has an invalid chunk size or nonce")
        if provider.context_of(dek_id) != context:
            raise IntegrityCheckFailed("envelope header names a data key of another context")
        self._aead = AESGCM(provider.data_key(dek_id))
        self._aad = hashlib.sha256(full_header).digest()
        self._offset = len(full_header)
        body = ciphertext_size - self._offset
        block = self.chunk_size + TAG
        self.chunks = max(1, -(-body // block))
        self.plaintext_size = body - self.chunks * TAG
        if self.plaintext_size < 0 or (self.chunks > 1 and body - (self.chunks - 1) * block <= TAG):
            raise IntegrityCheckFailed("envelope size does not match its chunking")

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The (offset, length) of the ciphertext holding plaintext bytes ``start..end`` (inclusive)."""
        first, last = start // self.chunk_size, max(end, start) // self.chunk_size
        block = self.chunk_size + TAG
        begin = self._offset + first * block
        stop = min(self._offset + (last + 1) * block, self._offset + self.plaintext_size + self.chunks * TAG)
        return begin, stop - begin

    def decrypt(self, src: BinaryIO, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes ``start..end`` (inclusive) from ``src``, positioned at ``span(start, end)``.

        Raises :class:`IntegrityCheckFailed` at the first chunk that fails authentication, before
        yielding any byte of it.
        """
        first, last = start // self.chunk_size, max(end, start) // self.chunk_size
        block = self.chunk_size + TAG
        for index in range(first, last + 1):
            final = index == self.chunks - 1
            want = block if not final else self.plaintext_size - index * self.chunk_size + TAG
            sealed = _read_exact(src, want)
            if len(sealed) != want:
                raise IntegrityCheckFailed(f"envelope truncated at chunk {index}")
            try:
                plain = self._aead.decrypt(_nonce(self._prefix, index, final), sealed, self._aad)
            except InvalidTag:
                raise IntegrityCheckFailed(
                    f"chunk {index} failed authentication: the envelope was altered, truncated or reordered"
                ) from None
            base = index * self.chunk_size
            lo = max(start - base, 0)
            hi = min(end - base + 1, len(plain))
            if lo < hi:
                yield plain[lo:hi]
