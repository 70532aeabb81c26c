"""The ingestion pipeline against the real S3 server and both database lanes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from gbadz import storage
from gbadz.catalog.models import DatasetVersion, IngestionRun
from gbadz.config import Settings
from gbadz.contract import Contract, load_contract
from gbadz.crypto.columns import ColumnProtector, KeyGrant
from gbadz.errors import StorageUnavailable
from gbadz.ingest import pipeline, samples
from tests.conftest import REPO
from tests.ingest.test_validate import bomb, peak_rss_since_reset, reset_peak_rss

ROWS = 3_000


@pytest.fixture
def ctx(settings: Settings) -> Iterator[pipeline.IngestContext]:
    context = pipeline.IngestContext.from_settings(settings)
    yield context
    context.sessions.kw["bind"].dispose()


@pytest.fixture
def contract(key_prefix: str) -> tuple[Contract, str]:
    """The hospital contract under a dataset id of the test's own (tests share the buckets)."""
    path = REPO / "contracts" / "sz-hospital-outpatient-visits.yaml"
    base = load_contract(path)
    unique = base.model_copy(update={"id": f"{key_prefix.strip('/')}-visits"})
    return unique, pipeline.contract_hash(path)


def _csv(tmp_path: Path, table: pa.Table, name: str = "upload.csv") -> Path:
    path = tmp_path / name
    pacsv.write_csv(table, path)
    return path


def _objects(ctx: pipeline.IngestContext, bucket: str, prefix: str) -> dict[str, bytes]:
    store = storage.ObjectStore(ctx.client, ctx.settings.s3)
    return {
        o.object_name: store.get_bytes(bucket, o.object_name)
        for o in ctx.client.list_objects(bucket, prefix=prefix, recursive=True)
    }


def _versions(ctx: pipeline.IngestContext, dataset: str) -> list[int]:
    with ctx.sessions() as session:
        return list(
            session.scalars(
                sa.select(DatasetVersion.version)
                .where(DatasetVersion.dataset_id == dataset)
                .order_by(DatasetVersion.version)
            )
        )


class TestAcceptedUpload:
    def test_publishes_a_protected_version(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A good file becomes version 1: manifest last, protected columns encrypted, identifiers pseudonymised."""
        c, digest = contract
        table = samples.generate("sz-hospital-outpatient-visits", ROWS)
        result = pipeline.ingest(ctx, c, digest, _csv(tmp_path, table))
        assert result.accepted
        assert result.published is not None
        assert (1, ROWS, False) == (
            result.published.version,
            result.published.row_count,
            result.published.reused,
        )

        curated = _objects(ctx, ctx.settings.s3.curated_bucket, f"{c.id}/")
        manifest = json.loads(curated[result.published.manifest_key])
        assert {"patient_name", "phone", "diagnosis_icd10"} == {
            p["name"] for p in manifest["protected_columns"]
        }
        part = curated[manifest["files"][0]["key"]]
        # Anyone with bucket access: schema and unprotected columns only.
        plain = pq.read_table(io.BytesIO(part), columns=["visit_id", "clinic_city", "patient_id"])
        assert table["visit_id"].to_pylist() == plain["visit_id"].to_pylist()
        assert all(p.startswith("p") and len(p) == 25 for p in plain["patient_id"].to_pylist())
        with pytest.raises(OSError, match="decrypt"):
            pq.read_table(io.BytesIO(part), columns=["diagnosis_icd10"])
        # Under a grant covering them, the protected columns come back exactly.
        grant = KeyGrant("g", c.id, "1", frozenset({"patient_name", "diagnosis_icd10", "phone"}))
        full = ColumnProtector(ctx.provider).read_table(io.BytesIO(part), "g", {"g": grant}.get)
        assert table["diagnosis_icd10"].to_pylist() == full["diagnosis_icd10"].to_pylist()

    def test_no_plaintext_personal_data_in_curated_or_landing(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """Scanning every stored byte finds no patient name, phone or id, while unprotected values are there."""
        c, digest = contract
        table = samples.generate("sz-hospital-outpatient-visits", ROWS)
        pipeline.ingest(ctx, c, digest, _csv(tmp_path, table))
        blobs = b"".join(_objects(ctx, ctx.settings.s3.curated_bucket, f"{c.id}/").values())
        raw = b"".join(_objects(ctx, ctx.settings.s3.landing_bucket, f"{c.id}/raw/").values())
        for value in (
            table["patient_name"].to_pylist()[:50]
            + table["phone"].to_pylist()[:50]
            + table["patient_id"].to_pylist()[:50]
        ):
            assert value.encode() not in blobs
            assert value.encode() not in raw
        assert b"Dongguan" in blobs  # an unprotected column, so the scan sees plaintext where it exists

    def test_raw_upload_is_kept_and_decrypts_to_the_original(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """The landed raw file is encrypted at rest and decrypts byte for byte to what was uploaded."""
        c, _ = contract
        source = _csv(tmp_path, samples.generate("sz-hospital-outpatient-visits", ROWS))
        landed = pipeline.land(ctx, c, source)
        restored = pipeline.fetch_raw(
            ctx, c, landed, tmp_path / "restored" if (tmp_path / "restored").mkdir() is None else tmp_path
        )
        assert source.read_bytes() == restored.read_bytes()

    def test_same_file_twice_is_one_version(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """Re-running the same file publishes nothing new; a different file makes version 2."""
        c, digest = contract
        source = _csv(tmp_path, samples.generate("sz-hospital-outpatient-visits", ROWS))
        first = pipeline.ingest(ctx, c, digest, source)
        again = pipeline.ingest(ctx, c, digest, source)
        assert again.published is not None
        assert (1, True) == (again.published.version, again.published.reused)
        other = _csv(tmp_path, samples.generate("sz-hospital-outpatient-visits", ROWS, seed=7), "other.csv")
        second = pipeline.ingest(ctx, c, digest, other)
        assert first.published is not None
        assert second.published is not None
        assert [1, 2] == _versions(ctx, c.id)


class TestRejectedUpload:
    def test_quarantined_with_report_and_nothing_published(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A bad file is kept with its quality report; no version appears; the previous one is untouched."""
        c, digest = contract
        good = pipeline.ingest(
            ctx, c, digest, _csv(tmp_path, samples.generate("sz-hospital-outpatient-visits", ROWS))
        )
        before = _objects(ctx, ctx.settings.s3.curated_bucket, f"{c.id}/")
        bad_table = samples.corrupt(
            samples.generate("sz-hospital-outpatient-visits", ROWS, seed=9), "sz-hospital-outpatient-visits"
        )
        result = pipeline.ingest(ctx, c, digest, _csv(tmp_path, bad_table, "bad.csv"))
        assert not result.accepted
        assert result.quarantine_key is not None
        assert [1] == _versions(ctx, c.id)
        assert before == _objects(ctx, ctx.settings.s3.curated_bucket, f"{c.id}/")
        report = json.loads(
            _objects(ctx, ctx.settings.s3.landing_bucket, result.quarantine_key)[result.quarantine_key]
        )
        assert {"patient_id", "department", "fee_cny"} == {
            r["column"] for r in report["results"] if not r["success"]
        }
        with ctx.sessions() as session:
            runs = session.scalars(
                sa.select(IngestionRun.status)
                .where(IngestionRun.dataset_id == c.id)
                .order_by(IngestionRun.id)
            ).all()
        assert ["accepted", "rejected"] == list(runs)
        assert good.published is not None


class TestDecompressionBomb:
    def test_bomb_is_rejected_with_its_raw_upload_kept(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A few-KB Parquet file decoding to 200 GiB is rejected for its size, memory flat; the raw upload stays intact."""
        c, digest = contract
        source = bomb(tmp_path / "bomb.parquet", 200_000, 1 << 20, dictionary=True)
        reset_peak_rss()
        before = peak_rss_since_reset()
        result = pipeline.ingest(ctx, c, digest, source)
        assert peak_rss_since_reset() - before < 256 * 1024 * 1024
        assert (False, None) == (result.accepted, result.published)
        assert result.report is not None
        assert "decodes to more than" in result.report.summary()
        restored = tmp_path / "restored"
        restored.mkdir()
        assert source.read_bytes() == pipeline.fetch_raw(ctx, c, result.landed, restored).read_bytes()
        assert [] == _versions(ctx, c.id)


class TestFailures:
    def test_s3_outage_during_publish_leaves_nothing_half_written(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """S3 failing mid-pipeline: no version is registered, and the retry publishes exactly once."""
        c, digest = contract
        table = samples.generate("sz-hospital-outpatient-visits", ROWS)
        landed = pipeline.land(ctx, c, _csv(tmp_path, table))
        protected_table, protected = pipeline.protect(ctx, c, table)
        dead_s3 = ctx.settings.s3.model_copy(
            update={"endpoint_url": "http://127.0.0.1:1", "secret_key": SecretStr("x")}
        )
        broken = pipeline.IngestContext(
            ctx.settings.model_copy(update={"s3": dead_s3}),
            storage.make_client(dead_s3, retries=0),
            ctx.provider,
            ctx.sessions,
        )
        from gbadz.ingest.validate import run_suite

        report = run_suite(c, table)
        with pytest.raises(StorageUnavailable, match="connection refused"):
            pipeline.publish(broken, c, landed, protected_table, protected, report, digest)
        assert [] == _versions(ctx, c.id)
        retried = pipeline.publish(ctx, c, landed, protected_table, protected, report, digest)
        assert (1, False) == (retried.version, retried.reused)
        assert [1] == _versions(ctx, c.id)


class TestNoPersonalValueInMessages:
    def test_header_less_and_malformed_files_quote_no_personal_value_anywhere(
        self, ctx: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """Issue #20 item 9 (invariant 9): a CSV without its header row, with a name where a fee or
        a date belongs, with a ragged row, or a Parquet with a name in a typed column, is rejected
        naming columns only; no row of any table and no log line holds the values."""
        from structlog.testing import capture_logs

        from gbadz.models import Base

        c, digest = contract
        table = samples.generate("sz-hospital-outpatient-visits", 20)
        names = table["patient_name"].to_pylist()
        names[0] = "Chan Tai-man Zqx"
        phones = table["phone"].to_pylist()
        phones[0] = "13912345678"
        table = table.set_column(
            table.schema.get_field_index("patient_name"), "patient_name", pa.array(names)
        )
        table = table.set_column(table.schema.get_field_index("phone"), "phone", pa.array(phones))
        header_less = tmp_path / "no-header.csv"
        pacsv.write_csv(table, header_less, pacsv.WriteOptions(include_header=False))

        def with_text(column: str, name: str) -> Path:
            values = table.column(column).cast(pa.string()).to_pylist()
            values[0] = "Chan Tai-man Zqx 13912345678"
            return _csv(
                tmp_path,
                table.set_column(table.schema.get_field_index(column), column, pa.array(values)),
                name,
            )

        mistyped_fee, mistyped_date = with_text("fee_cny", "fee.csv"), with_text("visit_date", "date.csv")
        ragged = _csv(tmp_path, table, "ragged.csv")
        lines = ragged.read_text().splitlines()
        lines[3] = lines[3] + ',"Chan Tai-man Zqx","13912345678"'
        ragged.write_text("\n".join(lines) + "\n")
        typed = tmp_path / "typed.parquet"
        pq.write_table(pacsv.read_csv(mistyped_fee), typed)  # fee_cny stored as text
        cases = (
            (header_less, "needs a header row"),
            (mistyped_fee, "fee_cny"),
            (mistyped_date, "visit_date"),
            (ragged, ""),
            (typed, "fee_cny"),
        )
        with capture_logs() as logs:
            for path, expected in cases:
                result = pipeline.ingest(ctx, c, digest, path)
                assert not result.accepted, path.name
                assert result.report is not None
                assert expected in result.report.summary(), (path.name, result.report.summary())
                assert "Chan" not in json.dumps(result.report.as_dict(), ensure_ascii=False)
        # Every row of every table, and every log line.
        stored = json.dumps(logs, default=str, ensure_ascii=False)
        with ctx.sessions() as session:
            runs = session.scalars(sa.select(IngestionRun).where(IngestionRun.dataset_id == c.id)).all()
            for model_table in Base.metadata.sorted_tables:
                for row in session.execute(sa.select(model_table)):
                    stored += json.dumps(list(row), default=str, ensure_ascii=False)
        assert len(cases) == len(runs)
        for value in ("Chan Tai-man", "13912345678"):
            assert value not in stored
