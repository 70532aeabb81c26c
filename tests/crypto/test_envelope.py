"""Streaming envelope encryption: round trips, and every alteration detected."""

from __future__ import annotations

import hashlib
import io
import os
import secrets

import pytest

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.crypto.envelope import (
    MAGIC,
    TAG,
    EncryptingReader,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    read_header,
)
from gbadz.crypto.keys import KeyContext, LocalKeyProvider
from gbadz.errors import IntegrityCheckFailed, KeyDestroyed

CHUNK = 1024
CTX = KeyContext("hk-deliveries", "raw", "upload-0001.csv", "pi")


def _seal(provider: LocalKeyProvider, data: bytes, ctx: KeyContext = CTX) -> bytes:
    out = io.BytesIO()
    encrypt_stream(provider, io.BytesIO(data), out, ctx, chunk_size=CHUNK)
    return out.getvalue()


def _open(provider: LocalKeyProvider, blob: bytes, expected: KeyContext | None = None) -> bytes:
    out = io.BytesIO()
    decrypt_stream(provider, io.BytesIO(blob), out, expected=expected)
    return out.getvalue()


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, _ = read_header(io.BytesIO(blob))
    body = blob[len(header) :]
    return header, [body[i : i + CHUNK + TAG] for i in range(0, len(body), CHUNK + TAG)]


class TestRoundTrip:
    @pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
    def test_sizes(self, provider: LocalKeyProvider, size: int) -> None:
        """Every size, including empty and exact multiples of the chunk, comes back identical."""
        data = os.urandom(size)
        out = io.BytesIO()
        info = encrypt_stream(provider, io.BytesIO(data), out, CTX, chunk_size=CHUNK)
        blob = out.getvalue()
        header, _ = read_header(io.BytesIO(blob))
        assert (size, len(blob)) == (info.plaintext_size, info.ciphertext_size)
        assert len(blob) == ciphertext_size(size, len(header) - len(MAGIC) - 4, CHUNK)
        assert hashlib.sha256(data).hexdigest() == info.plaintext_sha256
        assert data == _open(provider, blob, expected=CTX)

    def test_reader_matches_stream(self, provider: LocalKeyProvider) -> None:
        """The file-object form (for S3 uploads) produces a decryptable envelope read in odd sizes."""
        data = os.urandom(5 * CHUNK + 17)
        reader = EncryptingReader(provider, io.BytesIO(data), CTX, chunk_size=CHUNK)
        parts = []
        while part := reader.read(777):
            parts.append(part)
        assert data == _open(provider, b"".join(parts))
        assert (len(data), hashlib.sha256(data).hexdigest()) == (
            reader.plaintext_size,
            reader.plaintext_sha256,
        )

    def test_survives_kek_rotation(self, provider: LocalKeyProvider) -> None:
        """Rotating the dataset's KEK leaves stored envelopes readable."""
        blob = _seal(provider, b"x" * 3000)
        provider.rotate(CTX.kek_id)
        assert b"x" * 3000 == _open(provider, blob)

    def test_crypto_shredding(self, provider: LocalKeyProvider) -> None:
        """After the dataset is destroyed, its envelopes cannot be opened."""
        blob = _seal(provider, b"secret" * 100)
        provider.destroy_dataset(CTX.dataset)
        with pytest.raises(KeyDestroyed):
            _open(provider, blob)


class TestTampering:
    def test_flipped_bit_anywhere(self, provider: LocalKeyProvider) -> None:
        """A single flipped bit in the header, any chunk body or any tag is detected."""
        blob = _seal(provider, os.urandom(3 * CHUNK + 100))
        header, chunks = _split(blob)
        positions = [len(MAGIC) + 10, len(header) - 3]  # header JSON
        for i, chunk in enumerate(chunks):
            base = len(header) + i * (CHUNK + TAG)
            positions += [base, base + len(chunk) // 2, base + len(chunk) - 1]  # body start, middle, tag
        for pos in positions:
            tampered = bytearray(blob)
            tampered[pos] ^= 0x10
            with pytest.raises(IntegrityCheckFailed):
                _open(provider, bytes(tampered))

    def test_truncation_at_a_chunk_boundary(self, provider: LocalKeyProvider) -> None:
        """Dropping whole trailing chunks is detected (the last-chunk flag)."""
        blob = _seal(provider, os.urandom(4 * CHUNK))
        header, chunks = _split(blob)
        for keep in range(1, len(chunks)):
            with pytest.raises(IntegrityCheckFailed, match="altered, truncated or reordered"):
                _open(provider, header + b"".join(chunks[:keep]))

    def test_truncation_inside_a_chunk_or_header(self, provider: LocalKeyProvider) -> None:
        """Cutting the stream mid-chunk or mid-header is detected."""
        blob = _seal(provider, os.urandom(2 * CHUNK + 50))
        header, _ = _split(blob)
        for cut in (len(blob) - 1, len(blob) - 60, len(header) + 5, len(header) - 1, 3):
            with pytest.raises(IntegrityCheckFailed):
                _open(provider, blob[:cut])

    def test_reordered_chunks(self, provider: LocalKeyProvider) -> None:
        """Swapping two chunks is detected."""
        blob = _seal(provider, os.urandom(3 * CHUNK + 1))
        header, chunks = _split(blob)
        chunks[0], chunks[1] = chunks[1], chunks[0]
        with pytest.raises(IntegrityCheckFailed, match="chunk 0"):
            _open(provider, header + b"".join(chunks))

    def test_appended_and_duplicated_chunks(self, provider: LocalKeyProvider) -> None:
        """Extra bytes or a replayed chunk after the end are detected."""
        blob = _seal(provider, os.urandom(2 * CHUNK))
        _header, chunks = _split(blob)
        for extra in (chunks[-1], b"\x00" * (CHUNK + TAG), b"x"):
            with pytest.raises(IntegrityCheckFailed):
                _open(provider, blob + extra)

    def test_context_is_bound(self, provider: LocalKeyProvider) -> None:
        """An envelope is refused when the caller expects another object, or its header is swapped."""
        blob_a = _seal(provider, os.urandom(CHUNK + 1))
        other = KeyContext("hk-deliveries", "raw", "upload-0002.csv", "pi")
        blob_b = _seal(provider, os.urandom(CHUNK + 1), other)
        with pytest.raises(IntegrityCheckFailed, match="not to the expected"):
            _open(provider, blob_a, expected=other)
        header_b, _ = _split(blob_b)
        _, chunks_a = _split(blob_a)
        with pytest.raises(IntegrityCheckFailed):
            _open(provider, header_b + b"".join(chunks_a))

    def test_not_an_envelope(self, provider: LocalKeyProvider) -> None:
        """Arbitrary bytes are refused as not an envelope."""
        with pytest.raises(IntegrityCheckFailed, match="bad magic"):
            _open(provider, b"id,name\n1,Chan Tai Man\n")


class TestThroughS3:
    def test_streamed_upload_and_download(
        self, provider: LocalKeyProvider, s3_settings: S3Settings, key_prefix: str, tmp_path: os.PathLike[str]
    ) -> None:
        """A 12 MB upload streams through the encrypting reader into the landing bucket and decrypts back."""
        data = os.urandom(12 * 1024 * 1024 + 333)
        source = io.BytesIO(data)
        client = storage.make_client(s3_settings)
        ctx = KeyContext("hk-deliveries", "raw", key_prefix + "big.bin", "pi")
        reader = EncryptingReader(provider, source, ctx)
        key = key_prefix + "big.bin.gbzenv"
        client.put_object(s3_settings.landing_bucket, key, reader, length=-1, part_size=5 * 1024 * 1024)
        response = client.get_object(s3_settings.landing_bucket, key)
        try:
            stored = response.read()
        finally:
            response.close()
            response.release_conn()
        sample = data[1_000_000:1_000_064]
        assert sample not in stored
        out = io.BytesIO()
        info = decrypt_stream(provider, io.BytesIO(stored), out, expected=ctx)
        assert hashlib.sha256(data).hexdigest() == info.plaintext_sha256
        assert data == out.getvalue()
        assert secrets.compare_digest(reader.plaintext_sha256, info.plaintext_sha256 or "")
