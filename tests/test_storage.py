"""Object storage against the real SeaweedFS server: round trips and clear failures."""

from __future__ import annotations

import hashlib

import pytest
from minio.error import S3Error
from pydantic import SecretStr

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.errors import ConfigurationError, StorageUnavailable
from tests.conftest import wrong_secret


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
