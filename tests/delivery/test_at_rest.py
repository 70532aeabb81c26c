"""Delivery copies at rest (issue #20): sealed under a key per grant, re-checked against the log on
every reuse, and not unlimited; against the real S3 server on both databases."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import Grant
from gbadz.app import create_app
from gbadz.audit import AuditEvent
from gbadz.config import Settings
from gbadz.crypto import envelope
from gbadz.crypto.keys import LocalKeyProvider, grant_delivery_context
from gbadz.delivery import service
from gbadz.errors import IntegrityCheckFailed, KeyDestroyed
from gbadz.translog.models import LogEntry
from tests.datasets import Party
from tests.delivery.test_delivery import GRANTED, _grant, published  # noqa: F401 - the shared fixture


def _raw(app: FastAPI, settings: Settings, key: str) -> bytes:
    """The stored object as anyone holding the gateway's S3 credentials reads it."""
    response = app.state.s3.get_object(settings.s3.delivery_bucket, key)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def _entries(app: FastAPI, grant: str) -> list[str]:
    with app.state.sessionmaker() as session:
        return list(
            session.scalars(
                sa.select(LogEntry.kind).where(LogEntry.grant_id == grant).order_by(LogEntry.index)
            )
        )


def _stored(app: FastAPI, settings: Settings, dataset: str, grant: str) -> list[str]:
    listed = app.state.s3.list_objects(
        settings.s3.delivery_bucket, prefix=f"datasets/{dataset}/grants/{grant}/", recursive=True
    )
    return [o.object_name for o in listed]


def _opens(app: FastAPI, raw: bytes) -> bool:
    """Whether the keyring can still decrypt a copy someone kept (a backup, a raw read)."""
    try:
        envelope.decrypt_stream(app.state.keys, io.BytesIO(raw), io.BytesIO())
    except KeyDestroyed:
        return False
    return True


class TestSealedAtRest:
    def test_the_bucket_holds_ciphertext_and_an_ended_grant_leaves_nothing_readable(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        settings: Settings,
    ) -> None:
        """A raw S3 read of a copy is ciphertext; the grantee's URL is the plaintext; revoked, expired
        or retired, the key is gone and a kept copy of the bytes decrypts no more."""
        provider, dataset = published
        consumer = party("consumer", "HK")
        revoked, expiring = _grant(http, consumer, dataset), _grant(http, consumer, dataset)
        kept: dict[str, bytes] = {}
        for grant in (revoked, expiring):
            delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
            assert 201 == delivered.status_code, delivered.text
            [link] = delivered.json()["files"]
            raw = _raw(app, settings, link["key"])
            assert raw.startswith(envelope.MAGIC)
            assert b"PAR1" not in raw
            with pytest.raises(pa.ArrowInvalid):  # no table can be read from what the bucket holds
                pq.read_table(io.BytesIO(raw))
            downloaded = http.get(link["url"])
            assert 200 == downloaded.status_code, downloaded.text
            assert link["sha256"] == hashlib.sha256(downloaded.content).hexdigest()
            table = pq.read_table(io.BytesIO(downloaded.content))
            assert GRANTED == table.column_names
            # No value of the delivered table is in the stored bytes (addresses are decrypted in it).
            addresses = {a for a in table.column("address").to_pylist() if a and len(a) > 8}
            assert addresses
            assert not [a for a in list(addresses)[:200] if a.encode() in raw]
            # A range (what the Delta Sharing client asks for) is the same bytes.
            part = http.get(link["url"], headers={"Range": "bytes=100-199"})
            assert (206, downloaded.content[100:200]) == (part.status_code, part.content)
            assert f"bytes 100-199/{len(downloaded.content)}" == part.headers["content-range"]
            size = len(downloaded.content)
            assert downloaded.content[-10:] == http.get(link["url"], headers={"Range": "bytes=-10"}).content
            assert 200 == http.get(link["url"], headers={"Range": "bytes=x-y"}).status_code  # ignored
            beyond = http.get(link["url"], headers={"Range": f"bytes={size}-"})
            assert (416, f"bytes */{size}") == (beyond.status_code, beyond.headers["content-range"])
            head = http.head(link["url"])
            assert (200, str(size), b"") == (head.status_code, head.headers["content-length"], head.content)
            kept[grant] = raw
        assert all(_opens(app, raw) for raw in kept.values())

        # A plaintext copy written before sealing is deleted by the first sweep (audited).
        sealed_keys = _stored(app, settings, dataset, revoked)
        legacy = f"datasets/{dataset}/grants/{revoked}/v1/before-sealing/part-00000.parquet"
        app.state.s3.put_object(
            settings.s3.delivery_bucket, legacy, io.BytesIO(downloaded.content), len(downloaded.content)
        )
        assert 1 == service.purge_plaintext_copies(
            app.state.sessionmaker, app.state.s3, settings, [revoked, expiring]
        )
        assert sealed_keys == _stored(app, settings, dataset, revoked)
        with app.state.sessionmaker() as session:
            purged = session.scalars(
                sa.select(AuditEvent.details).where(
                    AuditEvent.subject_id == revoked, AuditEvent.action == "delivery.plaintext_copies_deleted"
                )
            ).all()
        assert [{"objects": 1}] == purged

        # Revoked: the key is destroyed at once and the URL stops working.
        answer = http.post(
            f"/api/v1/grants/{revoked}/revoke", json={"reason": "breach"}, headers=provider.headers
        )
        assert 200 == answer.status_code, answer.text
        assert not _opens(app, kept[revoked])
        # Expired: the sweep destroys the key and deletes the copy.
        with app.state.sessionmaker.begin() as session:
            held = session.get(Grant, expiring)
            assert held is not None
            held.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert service.sweep_ended_grants(app.state.sessionmaker, app.state.s3, settings, app.state.keys) >= 1
        assert not _opens(app, kept[expiring])
        assert [] == _stored(app, settings, dataset, expiring)
        with app.state.sessionmaker() as session:
            destroyed = session.scalars(
                sa.select(AuditEvent.subject_id).where(AuditEvent.action == "grant.delivery_key_destroyed")
            ).all()
        assert {revoked, expiring} <= set(destroyed)

        # Retired: a live grant's key goes with the dataset's keys.
        live = _grant(http, consumer, dataset)
        [link] = http.post(f"/api/v1/grants/{live}/deliveries", headers=consumer.headers).json()["files"]
        raw = _raw(app, settings, link["key"])
        assert _opens(app, raw)
        retired = http.post(
            f"/api/v1/datasets/{dataset}/retire", json={"reason": "closed"}, headers=provider.headers
        )
        assert 200 == retired.status_code, retired.text
        assert not _opens(app, raw)
        assert http.get(link["url"]).status_code in (404, 410)


class TestDeliveryFileUrls:
    def test_a_forged_or_garbled_url_is_404(self, http: TestClient) -> None:
        """A URL the keyring did not sign names nothing: 404, never 500."""
        for ticket in [
            "x",
            ".",
            "a.b",
            "%00",
            "%C3%A9.%C3%A9",
            "e30.AAAA",
            "eyJnIjoiYSJ9." + "A" * 86,
            "A" * 4000,
        ]:
            for method in (http.get, http.head):
                answer = method(f"/api/v1/delivery-files/{ticket}")
                assert 404 == answer.status_code, (ticket, answer.text)
        assert "TicketInvalid" in http.get("/api/v1/delivery-files/e30.AAAA").text


class TestTamperedCopy:
    def test_a_copy_altered_with_the_gateway_credentials_is_refused_everywhere(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        settings: Settings,
    ) -> None:
        """Replaced or altered in the bucket, the copy is refused (409, audited, no internal address)
        by the delivery retry, by Delta Sharing and by its URL; nothing is re-made without a trace."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        key = {"Idempotency-Key": "tamper-1"}
        delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | key)
        assert 201 == delivered.status_code, delivered.text
        [link] = delivered.json()["files"]
        profile = http.get(f"/api/v1/grants/{grant}/sharing-profile", headers=consumer.headers).json()
        sharing = {"Authorization": f"Bearer {profile['bearerToken']}"}
        query = f"/delta-sharing/shares/{profile['share']}/schemas/default/tables/{dataset}/query"
        raw = _raw(app, settings, link["key"])
        bucket = settings.s3.delivery_bucket
        before = _entries(app, grant)

        # 1. One byte flipped in the body; 2. the file replaced by a plaintext Parquet of one's choosing.
        flipped = bytearray(raw)
        flipped[len(raw) // 2] ^= 0x01
        forged = io.BytesIO()
        pq.write_table(pq.read_table(io.BytesIO(http.get(link["url"]).content)).slice(0, 5), forged)
        for altered in (bytes(flipped), forged.getvalue()):
            app.state.s3.put_object(bucket, link["key"], io.BytesIO(altered), len(altered))
            for answer in (
                http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | key),
                http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers),
                http.post(query, json={}, headers=sharing),
                http.get(link["url"]),
            ):
                assert 409 == answer.status_code, answer.text
                body = answer.json()
                assert ("CopyAltered", "files") == (body["error"], body["field"])
                assert "127.0.0.1" not in answer.text
                assert settings.s3.endpoint_url not in answer.text
        assert before == _entries(app, grant)  # nothing logged, nothing handed out
        assert [link["key"]] == _stored(app, settings, dataset, grant)  # and nothing re-made
        with app.state.sessionmaker() as session:
            refused = session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.subject_id == grant, AuditEvent.action == "delivery.copy_altered"
                )
            ).all()
        assert 8 == len(refused)
        assert all(e.details["files"] == [link["key"]] for e in refused)

        # The original bytes back: served again.
        app.state.s3.put_object(bucket, link["key"], io.BytesIO(raw), len(raw))
        assert 200 == http.get(link["url"]).status_code


class TestTamperedVersion:
    def test_a_published_file_altered_with_the_gateway_credentials_is_never_read(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        settings: Settings,
    ) -> None:
        """A curated part swapped under its version (one byte, or a part and a manifest rewritten to
        list it) is refused before it is read: no copy, no log entry; the original back, it is served."""
        provider, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        detail = http.get(f"/api/v1/datasets/{dataset}/versions/1", headers=provider.headers)
        assert 200 == detail.status_code, detail.text
        manifest = detail.json()["manifest"]
        [part] = manifest["files"]
        bucket, s3 = settings.s3.curated_bucket, app.state.s3
        original = s3.get_object(bucket, part["key"]).read()
        manifest_key = f"{part['key'].rsplit('/', 1)[0]}/_manifest.json"
        original_manifest = s3.get_object(bucket, manifest_key).read()
        before = _entries(app, grant)

        flipped = bytearray(original)
        flipped[len(original) // 2] ^= 0x01
        s3.put_object(bucket, part["key"], io.BytesIO(bytes(flipped)), len(flipped))
        refused = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
        assert 409 == refused.status_code, refused.text
        assert ("PublishedVersionAltered", "version") == (refused.json()["error"], refused.json()["field"])
        assert settings.s3.endpoint_url not in refused.text

        # The manifest rewritten to list the altered part's hash: refused against the database.
        manifest["files"][0]["sha256"] = hashlib.sha256(bytes(flipped)).hexdigest()
        forged = json.dumps(manifest, indent=2).encode()
        s3.put_object(bucket, manifest_key, io.BytesIO(forged), len(forged))
        for answer in (
            http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers),
            http.get(f"/api/v1/datasets/{dataset}/versions/1", headers=provider.headers),
        ):
            assert 409 == answer.status_code, answer.text
            assert "PublishedVersionAltered" == answer.json()["error"]
        assert before == _entries(app, grant)  # nothing logged, nothing handed out

        s3.put_object(bucket, part["key"], io.BytesIO(original), len(original))
        s3.put_object(bucket, manifest_key, io.BytesIO(original_manifest), len(original_manifest))
        assert 201 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers).status_code


class TestDeliveryLimits:
    def test_a_grantee_hammering_deliveries_gets_one_transfer_then_429(
        self,
        app: FastAPI,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        settings: Settings,
    ) -> None:
        """25 clicks within the URLs' life are one logged transfer and one stored copy (the same
        URLs); reissues beyond the per-grant limit get 429 with Retry-After, the count in the database."""
        _, dataset = published
        limited = settings.model_copy(
            update={
                "api": settings.api.model_copy(update={"delivery_limit": 3, "delivery_limit_window_s": 600})
            }
        )
        consumer = party("consumer", "HK")
        with TestClient(create_app(limited)) as http:
            grant = _grant(http, consumer, dataset)
            url = f"/api/v1/grants/{grant}/deliveries"
            started = time.monotonic()
            answers = [http.post(url, headers=consumer.headers | {"Idempotency-Key": "once"})]
            answers += [http.post(url, headers=consumer.headers) for _ in range(24)]
            elapsed = time.monotonic() - started
            assert {201} == {a.status_code for a in answers}, [
                a.text for a in answers if a.status_code != 201
            ]
            assert 1 == len({a.json()["transfer_id"] for a in answers})
            assert 1 == len({json.dumps(a.json()["files"]) for a in answers})  # the very same URLs
            assert [False] + [True] * 24 == [a.json()["reused"] for a in answers]
            assert ["download"] == [k for k in _entries(app, grant) if k != "determination"]
            assert 1 == len(_stored(app, settings, dataset, grant))

            # Reissues (new URLs, each logged) count against the limit, on any replica.
            assert 201 == http.post(url, headers=consumer.headers | {"Idempotency-Key": "once"}).status_code
            assert 201 == http.post(url, headers=consumer.headers | {"Idempotency-Key": "once"}).status_code
        with TestClient(create_app(limited)) as replica:
            refused = replica.post(url, headers=consumer.headers | {"Idempotency-Key": "once"})
        assert 429 == refused.status_code, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 600
        assert "grant" == refused.json()["field"]
        assert ["download", "reissue", "reissue"] == [k for k in _entries(app, grant) if k != "determination"]
        assert 1 == len(_stored(app, settings, dataset, grant))
        assert elapsed < 20


class TestRangeDecryptor:
    def test_any_range_of_a_multi_chunk_envelope_decrypts_and_any_alteration_is_caught(
        self, tmp_path: Path
    ) -> None:
        """Ranges across 1 KiB chunks equal the plaintext slice; a flipped bit stops before release."""
        keys = LocalKeyProvider(tmp_path / "keyring", "a test passphrase", scrypt_log2_n=10)
        context = grant_delivery_context("ds", "g1")
        plain = bytes(range(256)) * 41  # 10,496 bytes: ten full chunks and a partial one
        sealed_file = io.BytesIO()
        envelope.encrypt_stream(keys, io.BytesIO(plain), sealed_file, context, chunk_size=1024)
        sealed = sealed_file.getvalue()
        full_header, header = envelope.read_header(io.BytesIO(sealed))
        reader = envelope.RangeDecryptor(keys, full_header, header, len(sealed), expected=context)
        assert len(plain) == reader.plaintext_size

        def read(data: bytes, start: int, end: int) -> bytes:
            offset, length = reader.span(start, end)
            return b"".join(reader.decrypt(io.BytesIO(data[offset : offset + length]), start, end))

        for start, end in ((0, len(plain) - 1), (0, 0), (1023, 1024), (5000, 9000), (10_240, 10_495)):
            assert plain[start : end + 1] == read(sealed, start, end)
        altered = bytearray(sealed)
        altered[reader.span(5000, 5000)[0] + 3] ^= 0x80
        with pytest.raises(IntegrityCheckFailed):
            read(bytes(altered), 4096, 6000)
        assert plain[0:100] == read(bytes(altered), 0, 99)  # other chunks are unaffected
        with pytest.raises(IntegrityCheckFailed):  # truncated: the last chunk is missing
            read(sealed[:-100], 10_240, 10_495)


class TestConcurrentBurst:
    def test_a_concurrent_burst_on_one_grant_is_one_transfer_and_one_copy(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        settings: Settings,
        live_server: tuple[str, FastAPI],
    ) -> None:
        """16 simultaneous deliveries of one grant over real HTTP: one transfer, one copy, no 5xx."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        base, _ = live_server
        url = f"{base}/api/v1/grants/{grant}/deliveries"
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(consumer.client.client_id, consumer.client.client_secret or ""),
        ).json()["access_token"]

        def click(_: int) -> httpx.Response:
            return httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(click, range(16)))
        codes = sorted(a.status_code for a in answers)
        assert all(c < 500 for c in codes), [a.text for a in answers if a.status_code >= 500]
        transfers = {a.json()["transfer_id"] for a in answers if a.status_code == 201}
        assert 1 == len(transfers), codes
        assert ["download"] == [k for k in _entries(app, grant) if k != "determination"]
        assert 1 == len(_stored(app, settings, dataset, grant))
