"""Parquet column encryption against the real S3 server: only covering grants decrypt."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.crypto.columns import ColumnProtector, KeyGrant, ProtectedColumn
from gbadz.crypto.keys import LocalKeyProvider
from gbadz.errors import ColumnAccessDenied, KeyDestroyed

DATASET, VERSION = "sz-hospital-visits", "7"
PROTECTED = [ProtectedColumn("patient_name", "pi"), ProtectedColumn("diagnosis", "spi")]
ROWS = 3000


def _table() -> pa.Table:
    return pa.table(
        {
            "visit_id": list(range(ROWS)),
            "patient_name": [f"PATIENTNAME{i:05d}" for i in range(ROWS)],
            "diagnosis": [f"DIAGNOSISCODE{i % 97:03d}X" for i in range(ROWS)],
            "clinic_city": [f"CLINICCITY{i % 9}" for i in range(ROWS)],
            "fee_cny": [float(i) / 3 for i in range(ROWS)],
        }
    )


class Grants:
    """The grant registry as the key client sees it: live, so revocation is immediate."""

    def __init__(self) -> None:
        self.grants: dict[str, KeyGrant] = {}

    def add(
        self, grant_id: str, columns: set[str], version: str = VERSION, expires_in: float | None = None
    ) -> str:
        expires = datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in is not None else None
        self.grants[grant_id] = KeyGrant(grant_id, DATASET, version, frozenset(columns), expires)
        return grant_id

    def __call__(self, grant_id: str) -> KeyGrant | None:
        return self.grants.get(grant_id)


@pytest.fixture
def published(provider: LocalKeyProvider, s3_settings: S3Settings, key_prefix: str) -> tuple[bytes, str]:
    """A protected Parquet file written to the curated bucket and read back as stored bytes."""
    sink = io.BytesIO()
    ColumnProtector(provider).write_table(_table(), sink, DATASET, VERSION, PROTECTED, compression="NONE")
    store = storage.ObjectStore(storage.make_client(s3_settings), s3_settings)
    key = key_prefix + f"{DATASET}/v{VERSION}/part-0.parquet"
    store.put_bytes(s3_settings.curated_bucket, key, sink.getvalue())
    return store.get_bytes(s3_settings.curated_bucket, key), key


class TestWithoutKeys:
    def test_schema_and_unprotected_columns_stay_readable(self, published: tuple[bytes, str]) -> None:
        """Tools without keys see the schema and read every unprotected column."""
        blob, _ = published
        assert _table().schema.names == pq.read_schema(io.BytesIO(blob)).names
        plain = pq.read_table(io.BytesIO(blob), columns=["visit_id", "clinic_city", "fee_cny"])
        assert _table().select(["visit_id", "clinic_city", "fee_cny"]).equals(plain)

    def test_protected_column_does_not_read(self, published: tuple[bytes, str]) -> None:
        """A protected column cannot be read without its key."""
        blob, _ = published
        with pytest.raises(OSError, match="decrypt"):
            pq.read_table(io.BytesIO(blob), columns=["diagnosis"])

    def test_no_plaintext_in_the_bucket(
        self, published: tuple[bytes, str], s3_settings: S3Settings, key_prefix: str
    ) -> None:
        """Scanning every stored byte finds no protected value, while unprotected values are found."""
        client = storage.make_client(s3_settings)
        store = storage.ObjectStore(client, s3_settings)
        blobs = [
            store.get_bytes(s3_settings.curated_bucket, obj.object_name)
            for obj in client.list_objects(s3_settings.curated_bucket, prefix=key_prefix, recursive=True)
        ]
        assert blobs
        everything = b"".join(blobs)
        assert b"CLINICCITY3" in everything  # the scan does see plaintext where there is some
        for needle in (b"PATIENTNAME", b"DIAGNOSISCODE", b"PATIENTNAME00042", b"DIAGNOSISCODE013X"):
            assert needle not in everything


class TestUnderAGrant:
    def test_covering_grant_reads_everything(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """A grant covering every protected column reads the table exactly as written."""
        grants = Grants()
        grant = grants.add("g-full", {"patient_name", "diagnosis"})
        table = ColumnProtector(provider).read_table(io.BytesIO(published[0]), grant, grants)
        assert _table().equals(table)

    def test_partial_grant_reads_only_its_columns(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """A grant for patient_name reads it, and is refused diagnosis by name."""
        grants = Grants()
        grant = grants.add("g-names", {"patient_name"})
        protector = ColumnProtector(provider)
        table = protector.read_table(
            io.BytesIO(published[0]), grant, grants, columns=["patient_name", "clinic_city"]
        )
        assert _table().select(["patient_name", "clinic_city"]).equals(table)
        with pytest.raises(ColumnAccessDenied, match="does not cover the protected column 'diagnosis'"):
            protector.read_table(io.BytesIO(published[0]), grant, grants, columns=["diagnosis"])

    def test_grant_for_another_version(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """A grant on version 6 does not open version 7."""
        grants = Grants()
        grant = grants.add("g-old", {"patient_name", "diagnosis"}, version="6")
        with pytest.raises(ColumnAccessDenied, match="not sz-hospital-visits version 7"):
            ColumnProtector(provider).read_table(io.BytesIO(published[0]), grant, grants)

    def test_revocation_bites_immediately(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """A grant that read a column cannot read it once revoked: no key is served from a cache."""
        grants = Grants()
        grant = grants.add("g-revoked", {"patient_name", "diagnosis"})
        protector = ColumnProtector(provider)
        assert (
            ROWS
            == protector.read_table(io.BytesIO(published[0]), grant, grants, columns=["diagnosis"]).num_rows
        )
        del grants.grants[grant]
        with pytest.raises(ColumnAccessDenied, match="revoked or unknown"):
            protector.read_table(io.BytesIO(published[0]), grant, grants, columns=["diagnosis"])

    def test_narrowed_grant_loses_the_column(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """Narrowing a live grant removes access to the dropped column at once."""
        grants = Grants()
        grant = grants.add("g-narrow", {"patient_name", "diagnosis"})
        protector = ColumnProtector(provider)
        protector.read_table(io.BytesIO(published[0]), grant, grants, columns=["diagnosis"])
        grants.add("g-narrow", {"patient_name"})
        with pytest.raises(ColumnAccessDenied, match="'diagnosis'"):
            protector.read_table(io.BytesIO(published[0]), grant, grants, columns=["diagnosis"])

    def test_expired_grant(self, provider: LocalKeyProvider, published: tuple[bytes, str]) -> None:
        """An expired grant decrypts nothing."""
        grants = Grants()
        grant = grants.add("g-expired", {"patient_name"}, expires_in=-1)
        with pytest.raises(ColumnAccessDenied, match="expired"):
            ColumnProtector(provider).read_table(
                io.BytesIO(published[0]), grant, grants, columns=["patient_name"]
            )


class TestKeyLifecycle:
    def test_rotation_keeps_files_readable(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """Rotating every KEK of the dataset leaves the stored file readable, unchanged."""
        for kek in provider.list_keks():
            provider.rotate(kek.kek_id)
        grants = Grants()
        grant = grants.add("g", {"patient_name", "diagnosis"})
        assert _table().equals(ColumnProtector(provider).read_table(io.BytesIO(published[0]), grant, grants))

    def test_shredded_dataset_reads_nothing_protected(
        self, provider: LocalKeyProvider, published: tuple[bytes, str]
    ) -> None:
        """After crypto-shredding, even a full grant cannot decrypt a protected column."""
        provider.destroy_dataset(DATASET)
        grants = Grants()
        grant = grants.add("g", {"patient_name", "diagnosis"})
        with pytest.raises((KeyDestroyed, ColumnAccessDenied)):
            ColumnProtector(provider).read_table(
                io.BytesIO(published[0]), grant, grants, columns=["diagnosis"]
            )


class TestStreamingWriter:
    def test_batches_stream_into_one_protected_file(self, provider: LocalKeyProvider) -> None:
        """Record batches written one at a time form one protected file."""
        table = _table()
        sink = io.BytesIO()
        with ColumnProtector(provider).open_writer(sink, table.schema, DATASET, VERSION, PROTECTED) as writer:
            for batch in table.to_batches(max_chunksize=500):
                writer.write_batch(batch)
        grants = Grants()
        grant = grants.add("g", {"patient_name", "diagnosis"})
        assert table.equals(ColumnProtector(provider).read_table(io.BytesIO(sink.getvalue()), grant, grants))

    def test_nothing_to_protect_writes_plain_parquet(self, provider: LocalKeyProvider) -> None:
        """A table without protected columns is written as ordinary Parquet, readable by anyone."""
        sink = io.BytesIO()
        ColumnProtector(provider).write_table(_table(), sink, DATASET, VERSION, [])
        assert _table().equals(pq.read_table(io.BytesIO(sink.getvalue())))

    def test_unknown_protected_column(self, provider: LocalKeyProvider) -> None:
        """Protecting a column the table does not have is refused by name."""
        with pytest.raises(ValueError, match="not in the schema: ssn"):
            ColumnProtector(provider).open_writer(
                io.BytesIO(), _table().schema, DATASET, VERSION, [ProtectedColumn("ssn", "spi")]
            )
