"""Object storage against the real SeaweedFS server: round trips and clear failures."""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from minio.commonconfig import COMPLIANCE
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.objectlockconfig import DAYS, ObjectLockConfig
from pydantic import SecretStr
from structlog.testing import capture_logs

from gbadz import storage
from gbadz.app import create_app
from gbadz.catalog.models import DatasetVersion
from gbadz.config import S3Settings, Settings
from gbadz.contract import Contract
from gbadz.errors import ConfigurationError, StorageUnavailable
from gbadz.ingest import pipeline, samples
from tests.conftest import REPO, TEST_LANDING_RETENTION_DAYS, wrong_secret
from tests.datasets import YAML, Party, sign_off


class TestObjectStore:
    def test_round_trip_with_hash_and_version(self, s3_settings: S3Settings, key_prefix: str) -> None:
        """Bytes written come back identical; the SHA-256 and a version id are recorded."""
        store = storage.ObjectStore(storage.make_client(s3_settings), s3_settings)
        data = b"outpatient-visits," * 10_000
        written = store.put_bytes(s3_settings.curated_bucket, key_prefix + "a.csv", data, "text/csv")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (written.size, written.sha256)
        assert written.version_id
        assert data == store.get_bytes(written.bucket, written.key, written.version_id)

    def test_versions_are_kept(self, s3_settings: S3Settings, key_prefix: str) -> None:
        """Overwriting a curated object keeps the previous version readable."""
        store = storage.ObjectStore(storage.make_client(s3_settings), s3_settings)
        first = store.put_bytes(s3_settings.curated_bucket, key_prefix + "m.json", b"v1")
        store.put_bytes(s3_settings.curated_bucket, key_prefix + "m.json", b"v2")
        assert b"v2" == store.get_bytes(first.bucket, first.key)
        assert b"v1" == store.get_bytes(first.bucket, first.key, first.version_id)

    def test_missing_object_is_an_s3_error(self, s3_settings: S3Settings, key_prefix: str) -> None:
        """Reading a key that does not exist surfaces the server's NoSuchKey."""
        store = storage.ObjectStore(storage.make_client(s3_settings), s3_settings)
        with pytest.raises(StorageUnavailable, match="NoSuchKey"):
            store.get_bytes(s3_settings.curated_bucket, key_prefix + "absent")


class TestBuckets:
    def test_buckets_exist_with_protection(self, s3_settings: S3Settings) -> None:
        """The landing bucket has object lock and the curated bucket keeps versions."""
        client = storage.make_client(s3_settings)
        assert sorted(s3_settings.buckets) == storage.check_storage(client, s3_settings)
        lock = client.get_object_lock_config(s3_settings.landing_bucket)
        assert lock is not None
        assert "Enabled" == client.get_bucket_versioning(s3_settings.curated_bucket).status

    def test_ensure_buckets_is_idempotent(self, s3_settings: S3Settings) -> None:
        """Running the bucket set-up again creates nothing."""
        assert [] == storage.ensure_buckets(storage.make_client(s3_settings), s3_settings)

    def test_landing_keeps_every_version_in_compliance_mode(self, s3_settings: S3Settings) -> None:
        """The landing bucket's default retention is COMPLIANCE for the configured days."""
        lock = storage.make_client(s3_settings).get_object_lock_config(s3_settings.landing_bucket)
        assert (COMPLIANCE, TEST_LANDING_RETENTION_DAYS, DAYS) == (
            lock.mode,
            lock.duration,
            lock.duration_unit,
        )

    def test_ensure_buckets_sets_the_retention_of_an_existing_landing_bucket(
        self, s3_settings: S3Settings
    ) -> None:
        """A landing bucket made before (object lock, no retention) gets the configured one; never a shorter one."""
        client = storage.make_client(s3_settings)
        bucket = f"test-landing-{secrets.token_hex(4)}"
        client.make_bucket(bucket, object_lock=True)
        assert ObjectLockConfig(None, None, None) == client.get_object_lock_config(bucket)
        settings = s3_settings.model_copy(update={"landing_bucket": bucket, "landing_retention_days": 2})
        assert [] == storage.ensure_buckets(client, settings)
        assert ObjectLockConfig(COMPLIANCE, 2, DAYS) == client.get_object_lock_config(bucket)
        settings = settings.model_copy(update={"landing_retention_days": 3})
        storage.ensure_buckets(client, settings)
        assert ObjectLockConfig(COMPLIANCE, 3, DAYS) == client.get_object_lock_config(bucket)
        # A lower setting never shortens what the bucket keeps (only an operator, on the bucket).
        storage.ensure_buckets(client, settings.model_copy(update={"landing_retention_days": 1}))
        assert ObjectLockConfig(COMPLIANCE, 3, DAYS) == client.get_object_lock_config(bucket)

    def test_a_landing_bucket_without_object_lock_is_refused(self, s3_settings: S3Settings) -> None:
        """Raw uploads need object lock: a landing bucket without it is named, not used silently."""
        client = storage.make_client(s3_settings)
        bucket = f"test-landing-{secrets.token_hex(4)}"
        client.make_bucket(bucket)
        settings = s3_settings.model_copy(update={"landing_bucket": bucket})
        with pytest.raises(StorageUnavailable, match=f"bucket {bucket} has no object lock"):
            storage.ensure_buckets(client, settings)

    def test_a_landed_version_cannot_be_deleted_and_landing_goes_on(
        self, s3_settings: S3Settings, key_prefix: str
    ) -> None:
        """Our own credentials cannot delete a landed version (bypass or not); landing again works."""
        client = storage.make_client(s3_settings)
        bucket, key = s3_settings.landing_bucket, key_prefix + "raw/upload.csv.gbzenv"
        first = client.put_object(bucket, key, io.BytesIO(b"first upload"), 12).version_id
        assert first
        with pytest.raises(S3Error) as refused:
            client.remove_object(bucket, key, version_id=first)
        assert "AccessDenied" == refused.value.code
        errors = list(client.remove_objects(bucket, [DeleteObject(key, first)], bypass_governance_mode=True))
        assert ["AccessDenied"] == [e.code for e in errors]
        # Landing goes on: a new version (a quality report written again), read back.
        second = client.put_object(bucket, key, io.BytesIO(b"second"), 6).version_id
        assert b"second" == client.get_object(bucket, key).read()
        assert b"first upload" == client.get_object(bucket, key, version_id=first).read()
        assert {first, second} == {
            o.version_id for o in client.list_objects(bucket, prefix=key, include_version=True)
        }

    def test_missing_bucket_is_named(self, s3_settings: S3Settings) -> None:
        """Readiness names a missing bucket and the command that creates it."""
        settings = s3_settings.model_copy(update={"delivery_bucket": "test-never-created"})
        with pytest.raises(StorageUnavailable, match="test-never-created missing; run `gbadz storage init`"):
            storage.check_storage(storage.make_client(settings), settings)


class TestFailures:
    def test_wrong_secret(self, s3_settings: S3Settings) -> None:
        """A wrong secret is reported as such, naming the variable to fix."""
        settings = wrong_secret(s3_settings)
        with pytest.raises(StorageUnavailable) as info:
            storage.check_storage(storage.make_client(settings), settings)
        assert "SignatureDoesNotMatch" in info.value.detail
        assert "GBADZ_S3__SECRET_KEY" in info.value.detail
        assert "definitely-not-the-secret" not in info.value.detail

    def test_unknown_access_key(self, s3_settings: S3Settings) -> None:
        """An access key the server does not know is reported as such."""
        settings = s3_settings.model_copy(update={"access_key": "nobody"})
        with pytest.raises(StorageUnavailable, match="InvalidAccessKeyId"):
            storage.check_storage(storage.make_client(settings), settings)

    def test_anonymous_requests_are_rejected(self, s3_settings: S3Settings) -> None:
        """The server refuses unsigned requests (it is not an open bucket)."""
        from minio import Minio

        anonymous = Minio((s3_settings.endpoint_url or "").split("://")[1], secure=False)
        with pytest.raises(S3Error):
            list(anonymous.list_objects(s3_settings.curated_bucket))

    def test_unreachable_endpoint(self) -> None:
        """A closed port is 'connection refused' with the way out."""
        settings = S3Settings(endpoint_url="http://127.0.0.1:1", access_key="a", secret_key=SecretStr("b"))
        with pytest.raises(StorageUnavailable, match="connection refused; start it with `gbadz services up`"):
            storage.check_storage(storage.make_client(settings, retries=0), settings)

    def test_not_configured(self) -> None:
        """No endpoint at all is a configuration error naming the variables."""
        with pytest.raises(ConfigurationError, match="GBADZ_S3__ENDPOINT_URL"):
            storage.make_client(S3Settings())


def _assert_no_address(text: str, settings: S3Settings) -> None:
    parts = urlsplit(settings.endpoint_url or "")
    assert str(parts.hostname) not in text
    assert parts.netloc not in text
    assert f"port={parts.port}" not in text
    if (parts.port or 0) >= 1000:
        assert str(parts.port) not in text


class TestNoInternalAddressInAnswers:
    """A storage failure is explained to API callers without the S3 endpoint; the log has it."""

    def test_a_missing_stored_file_is_503_without_the_endpoint(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        settings: Settings,
        key_prefix: str,
        tmp_path: Path,
    ) -> None:
        """A version whose manifest vanished from S3 answers 503 naming no host or port."""
        provider = party("provider", "HK")
        doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
        doc["id"] = f"{key_prefix.strip('/')}-deliveries"
        doc["gbadz"]["provider"]["organization"] = provider.org_name
        raw = yaml.safe_dump(doc).encode()
        assert 201 == http.post("/api/v1/datasets", content=raw, headers=provider.headers | YAML).status_code
        source = tmp_path / "deliveries.csv"
        pacsv.write_csv(samples.generate("hk-logistics-deliveries", 200), source)
        ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
        assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
        sign_off(http, app, str(doc["id"]))
        path = f"/api/v1/datasets/{doc['id']}/versions/1"
        assert 200 == http.get(path, headers=provider.headers).status_code
        with app.state.sessionmaker() as session:
            manifest = session.scalar(
                sa.select(DatasetVersion.manifest_key).where(DatasetVersion.dataset_id == doc["id"])
            )
        app.state.s3.remove_object(settings.s3.curated_bucket, manifest)  # a delete marker: it is gone

        with capture_logs() as logs:
            response = http.get(path, headers=provider.headers)
        assert (503, "StorageUnavailable") == (response.status_code, response.json()["error"])
        assert "NoSuchKey" in response.json()["detail"]
        _assert_no_address(response.text, settings.s3)
        logged = [e for e in logs if e["event"] == "s3 request failed"]
        assert [settings.s3.endpoint_url] == [e["endpoint"] for e in logged]
        assert not [e for e in logs if settings.s3.secret_key.get_secret_value() in str(e)]  # type: ignore[union-attr]

    @pytest.mark.parametrize("broken", ["wrong secret", "missing bucket", "unreachable"])
    def test_readiness_names_no_endpoint(self, settings: Settings, broken: str) -> None:
        """/readyz says what is wrong with S3 and which setting to fix, not where S3 is."""
        s3 = {
            "wrong secret": wrong_secret(settings.s3),
            "missing bucket": settings.s3.model_copy(update={"delivery_bucket": "test-never-created"}),
            "unreachable": settings.s3.model_copy(update={"endpoint_url": "http://127.0.0.1:1"}),
        }[broken]
        with TestClient(create_app(settings.model_copy(update={"s3": s3}))) as client:
            response = client.get("/readyz")
        assert 503 == response.status_code
        _assert_no_address(response.text, s3)
        assert {
            "wrong secret": "GBADZ_S3__SECRET_KEY",
            "missing bucket": "gbadz storage init",
            "unreachable": "connection refused",
        }[broken] in response.json()["checks"]["s3"]
