"""The ingestion steps: land -> validate -> (quarantine | protect -> publish -> register).

Each step is a plain function with explicit inputs, so the Airflow DAG only wires them and
tests call them directly against the real S3 server and database. Guarantees:

- the raw upload is kept immutable (envelope-encrypted, object-locked landing bucket,
  named by its SHA-256) and is never altered or deleted by a failure;
- a failed step leaves every published version untouched and is safe to re-run;
- a version is visible only when complete: its manifest is written last and the catalog
  row after that;
- the same file ingested twice gives one version (idempotent by content hash);
- no plaintext protected column reaches the curated bucket.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from minio import Minio
from minio.error import S3Error
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db, storage
from gbadz.catalog import service as catalog_service
from gbadz.catalog.models import Dataset, DatasetVersion, IngestionRun
from gbadz.config import Settings
from gbadz.contract import Contract
from gbadz.crypto.columns import ColumnProtector, ProtectedColumn
from gbadz.crypto.envelope import EncryptingReader, decrypt_stream
from gbadz.crypto.keys import Classification, KeyContext, KeyProvider, provider_from_settings
from gbadz.crypto.pseudonym import Pseudonymiser, pseudonymiser_for
from gbadz.errors import StorageUnavailable
from gbadz.identity.models import Organization
from gbadz.ingest.spill import DistinctSubjects
from gbadz.ingest.validate import FileRefused, QualityReport, contract_schema, iter_batches, validate_stream
from gbadz.law.evidence import legal_date

PART_SIZE = 16 * 1024 * 1024
ROW_GROUP = 256 * 1024
#: How often a publication is retried under the next version when another writer took its number.
VERSION_ATTEMPTS = 5


class ClaimLost(RuntimeError):
    """The run was finished or claimed again by another worker: this outcome is not stored."""


@dataclass
class IngestContext:
    settings: Settings
    client: Minio
    provider: KeyProvider
    sessions: sessionmaker[Session]

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestContext:
        engine = db.create_engine(settings.db)
        return cls(
            settings,
            storage.make_client(settings.s3),
            provider_from_settings(settings),
            db.make_sessionmaker(engine),
        )


@dataclass(frozen=True)
class Landed:
    key: str
    sha256: str
    size: int
    suffix: str


@dataclass(frozen=True)
class Published:
    version: int
    manifest_key: str
    row_count: int
    reused: bool


@dataclass(frozen=True)
class People:
    """The individuals of one version: exporter-keyed hashes of their identifiers (never the
    identifiers), with whether a row-level rule makes each sensitive."""

    subjects: pa.Array  # string: exporter-keyed HMAC tokens, distinct
    sensitive: pa.Array  # bool, aligned with subjects

    @property
    def individuals(self) -> int:
        return len(self.subjects)

    @property
    def sensitive_individuals(self) -> int:
        return int(pc.sum(pc.cast(self.sensitive, pa.int64())).as_py() or 0)

    def chunks(self) -> Iterator[tuple[list[str], list[bool]]]:
        yield self.subjects.to_pylist(), self.sensitive.to_pylist()


#: A version's individuals: in memory (:func:`count_people` over a table) or spilled to disk
#: partition by partition (:class:`PeopleCounter` over a stream of batches).
Individuals = People | DistinctSubjects


def exporter_key_name(exporter: str) -> str:
    """The key context under which an exporter's subjects are hashed (one key per exporter)."""
    return f"exporter:{exporter}"


def subject_hasher(provider: KeyProvider, exporter: str, cache: int = 0) -> Pseudonymiser:
    dek_id = provider.data_key_id(KeyContext(exporter_key_name(exporter), "*", "subject", "pi"))
    return Pseudonymiser(provider.data_key(dek_id), cache)


def _exporter_of(ctx: IngestContext, contract: Contract) -> str:
    """The exporter organisation whose key hashes the subjects: the dataset's provider, or (first
    publication through the pipeline) the registered organisation the contract names."""
    name = contract.gbadz.provider.organization
    with ctx.sessions() as session:
        org_id = session.scalar(sa.select(Dataset.provider_org_id).where(Dataset.id == contract.id))
        if org_id is None:
            org_id = session.scalar(sa.select(Organization.id).where(Organization.name == name))
    return org_id or f"unregistered:{name}"


def _minor_rows(contract: Contract, table: pa.Table | pa.RecordBatch, at: datetime) -> pa.Array | None:
    """Rows of children under 14 (PIPL Art.28), erring towards sensitive: a birth year within
    14 years of this year counts; a null birth date or year counts too."""
    rule = contract.gbadz.minors
    if rule is None:
        return None
    today = legal_date(at)  # the Mainland's date (Asia/Shanghai), as every legal date here
    if rule.birth_year_column:
        years = pc.cast(table[rule.birth_year_column], pa.int64())
        flags = pc.greater_equal(years, today.year - 14)
    else:
        born = pc.cast(table[rule.birth_date_column], pa.date32())
        fourteen_ago = today.replace(
            year=today.year - 14, day=min(today.day, 28) if today.month == 2 else today.day
        )
        flags = pc.greater(born, pa.scalar(fourteen_ago, pa.date32()))
    return pc.fill_null(flags, True)


def count_people(ctx: IngestContext, contract: Contract, table: pa.Table) -> People | None:
    """Count the distinct individuals of a validated table, before protection (issue #15).

    Every subject-identifier column names people (a row may name several); each identifier is
    hashed under the exporter's key so one person in two datasets of one exporter is one person.
    """
    columns = [c for c in contract.subject_columns if c in table.column_names]
    if not columns or not contract.has_pi:
        return None
    hasher = subject_hasher(ctx.provider, _exporter_of(ctx, contract))
    minors = _minor_rows(contract, table, datetime.now(UTC))
    if minors is None:
        minors = pc.fill_null(pa.nulls(table.num_rows, pa.bool_()), False)
    flags = pc.cast(minors, pa.int8())
    parts = []
    for name in columns:
        tokens = hasher.array(table[name])
        if tokens.null_count:
            # A row without an identifier is a person of its own (never nobody): erring upwards.
            rows = pa.array([f"{contract.id}#{name}#{i}" for i in range(table.num_rows)], pa.string())
            tokens = pc.coalesce(tokens, hasher.array(rows))
        parts.append(pa.table({"subject": tokens, "sensitive": flags}))
    both = pa.concat_tables(parts)
    grouped = both.group_by("subject").aggregate([("sensitive", "max")])
    return People(
        grouped["subject"].combine_chunks(),
        pc.cast(grouped["sensitive_max"], pa.bool_()).combine_chunks(),
    )


class PeopleCounter:
    """:func:`count_people` over a stream of batches, in bounded memory: each batch's subject
    tokens are spilled to hash partitions (:class:`gbadz.ingest.spill.DistinctSubjects`) and
    made distinct one partition at a time at the end."""

    def __init__(self, ctx: IngestContext, contract: Contract, names: list[str], workdir: Path) -> None:
        self.contract = contract
        self.columns = [c for c in contract.subject_columns if c in names] if contract.has_pi else []
        self.subjects = DistinctSubjects(workdir) if self.columns else None
        if self.columns:
            exporter = _exporter_of(ctx, contract)
            self.hasher = subject_hasher(ctx.provider, exporter, ctx.settings.ingest.pseudonym_cache)
        self.at = datetime.now(UTC)
        self.rows = 0

    def add(self, batch: pa.Table | pa.RecordBatch) -> None:
        if self.subjects is None:
            return
        minors = _minor_rows(self.contract, batch, self.at)
        flags = (
            np.zeros(batch.num_rows, np.uint8)
            if minors is None
            else pc.cast(minors, pa.uint8()).to_numpy(zero_copy_only=False)
        )
        for name in self.columns:
            tokens = self.hasher.array(batch[name])
            if tokens.null_count:
                # A row without an identifier is a person of its own (never nobody): erring upwards.
                rows = pa.array(
                    [f"{self.contract.id}#{name}#{i}" for i in range(self.rows, self.rows + batch.num_rows)],
                    pa.string(),
                )
                tokens = pc.coalesce(tokens, self.hasher.array(rows))
            self.subjects.add(tokens, flags)
        self.rows += batch.num_rows

    def finish(self) -> DistinctSubjects | None:
        if self.subjects is not None:
            self.subjects.finish()
        return self.subjects


def _classification(contract: Contract) -> Classification:
    if contract.gbadz.category in ("important", "core"):
        return "important"
    if contract.has_spi:
        return "spi"
    return "pi" if contract.has_pi else "general"


def file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _exists(client: Minio, bucket: str, key: str) -> bool:
    try:
        client.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
            return False
        raise
    return True


def land(ctx: IngestContext, contract: Contract, source: Path) -> Landed:
    """Keep the raw upload, encrypted, under its content hash (re-landing the same file is a no-op)."""
    sha, size = file_sha256(source)
    suffix = source.suffix.lower() or ".bin"
    key = f"{contract.id}/raw/{sha}{suffix}.gbzenv"
    bucket = ctx.settings.s3.landing_bucket
    try:
        if not _exists(ctx.client, bucket, key):
            context = KeyContext(contract.id, "raw", sha, _classification(contract))
            with source.open("rb") as fh:
                # A file object: minio only calls read() on it.
                reader: Any = EncryptingReader(
                    ctx.provider, fh, context, hash_plaintext=False
                )  # hashed above
                ctx.client.put_object(
                    bucket, key, reader, length=-1, part_size=PART_SIZE, metadata={"x-amz-meta-sha256": sha}
                )
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(ctx.settings.s3, exc)) from None
    return Landed(key=key, sha256=sha, size=size, suffix=suffix)


def fetch_raw(ctx: IngestContext, contract: Contract, landed: Landed, workdir: Path) -> Path:
    """Download and decrypt the landed file into ``workdir`` (verified against its hash)."""
    target = workdir / f"{landed.sha256}{landed.suffix}"
    context = KeyContext(contract.id, "raw", landed.sha256, _classification(contract))
    try:
        response = ctx.client.get_object(ctx.settings.s3.landing_bucket, landed.key)
        try:
            with target.open("wb") as out:
                info = decrypt_stream(ctx.provider, response, out, expected=context)  # type: ignore[arg-type]
        finally:
            response.close()
            response.release_conn()
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(ctx.settings.s3, exc)) from None
    if info.plaintext_sha256 != landed.sha256:
        raise StorageUnavailable(f"landed object {landed.key} does not match its content hash")
    return target


def existing_version(ctx: IngestContext, contract: Contract, sha: str) -> DatasetVersion | None:
    with ctx.sessions() as session:
        row = session.scalar(
            sa.select(DatasetVersion).where(
                DatasetVersion.dataset_id == contract.id, DatasetVersion.source_sha256 == sha
            )
        )
        if row is not None:
            session.expunge(row)
        return row


def reuse(ctx: IngestContext, found: DatasetVersion, run_id: int | None, *, claim: str | None = None) -> None:
    """A queued upload whose bytes were already published: close its run against that version."""
    if run_id is None:
        return
    with db.session_scope(ctx.sessions) as session:
        run = session.get(IngestionRun, run_id, with_for_update=True)
        if run is not None and claim is not None and run.claimed_by != claim[:100]:
            raise ClaimLost(f"upload {run_id}: claimed by another worker; its outcome is theirs")
        if run is not None and run.status in ("queued", "running"):
            run.status, run.version = "accepted", found.version
            run.summary = f"identical to version {found.version}; nothing new published"
            run.finished_at = datetime.now(UTC)


def quarantine(
    ctx: IngestContext,
    contract: Contract,
    landed: Landed,
    report: QualityReport,
    run_id: int | None = None,
    *,
    claim: str | None = None,
) -> str:
    """Keep the quality report beside the raw file and record the rejected run; nothing is published."""
    key = f"{contract.id}/quarantine/{landed.sha256}.report.json"
    body = json.dumps(report.as_dict(), default=str, indent=2).encode()
    storage.ObjectStore(ctx.client, ctx.settings.s3).put_bytes(
        ctx.settings.s3.landing_bucket, key, body, "application/json"
    )
    with db.session_scope(ctx.sessions) as session:
        if _already(session, run_id, "rejected", claim):
            return key  # a retried task whose first try stored the outcome and then died
        _finish_run(
            session,
            run_id,
            dataset_id=contract.id,
            source_sha256=landed.sha256,
            landing_key=landed.key,
            claim=claim,
            status="rejected",
            summary=report.summary(),
            report=json.loads(body),
        )
        audit.record(
            session,
            actor=f"provider:{contract.gbadz.provider.organization}",
            action="ingestion.rejected",
            subject_type="dataset",
            subject_id=contract.id,
            details={"source_sha256": landed.sha256, "summary": report.summary()[:1000], "report_key": key},
        )
    return key


class Protection:
    """What protecting a contract's columns does to each batch: identifiers are pseudonymised
    now (one pseudonymiser and its bounded cache for every batch of the upload, so equal inputs
    get equal pseudonyms in every batch); every other protected column is marked for Parquet
    encryption (masks and drop-on-export are stored encrypted and applied on delivery)."""

    def __init__(self, ctx: IngestContext, contract: Contract, names: list[str]) -> None:
        self.pseudonymised: list[str] = []
        self.encrypted: list[ProtectedColumn] = []
        for name in names:
            facts = contract.facts(name)
            if facts.protection in (None, "none"):
                continue
            if facts.protection == "pseudonymise":
                self.pseudonymised.append(name)
            else:
                self.encrypted.append(ProtectedColumn(name, "spi" if facts.spi else "pi"))
        self.pseudonymiser = (
            pseudonymiser_for(ctx.provider, contract.id, ctx.settings.ingest.pseudonym_cache)
            if self.pseudonymised
            else None
        )

    def schema(self, schema: pa.Schema) -> pa.Schema:
        for name in self.pseudonymised:
            index = schema.get_field_index(name)
            schema = schema.set(index, pa.field(name, pa.string()))
        return schema

    def apply(self, table: pa.Table) -> pa.Table:
        for name in self.pseudonymised:
            assert self.pseudonymiser is not None
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, self.pseudonymiser.array(table[name]))
        return table


def protect(
    ctx: IngestContext, contract: Contract, table: pa.Table
) -> tuple[pa.Table, list[ProtectedColumn]]:
    """Pseudonymise identifiers now; mark every other protected column for Parquet encryption."""
    protection = Protection(ctx, contract, table.column_names)
    return protection.apply(table), protection.encrypted


@dataclass(frozen=True)
class FileSource:
    """A validated local file to publish batch by batch (never whole in memory)."""

    path: Path


@dataclass(frozen=True)
class _Written:
    rows: int
    schema: pa.Schema
    people: Individuals | None


def _write_stream(
    ctx: IngestContext,
    contract: Contract,
    source: FileSource,
    part: Path,
    version: int,
    protected: list[ProtectedColumn],
    workdir: Path,
) -> _Written:
    """Read, count individuals, protect and write the file one batch at a time: one Parquet
    writer with the version's column encryption; row groups of ``ROW_GROUP`` rows as before."""
    schema = contract_schema(contract)
    protection = Protection(ctx, contract, schema.names)
    if [c.name for c in protection.encrypted] != [c.name for c in protected]:
        raise ValueError("the protected columns do not match the contract's")
    counter = PeopleCounter(ctx, contract, schema.names, workdir)
    out_schema = protection.schema(schema)
    pending: list[pa.RecordBatch] = []
    held = rows = 0
    with ColumnProtector(ctx.provider).open_writer(
        str(part), out_schema, contract.id, str(version), protected, compression="zstd"
    ) as writer:

        def flush() -> None:
            table = protection.apply(pa.Table.from_batches(pending, schema=schema))
            writer.write_table(table, row_group_size=ROW_GROUP)
            pending.clear()

        try:
            for batch in iter_batches(contract, source.path, ctx.settings.ingest):
                counter.add(batch)
                pending.append(batch)
                held += batch.num_rows
                rows += batch.num_rows
                if held >= ROW_GROUP:
                    flush()
                    held = 0
        except FileRefused as exc:  # validated before: a file that no longer reads is refused, never guessed
            raise RuntimeError(f"{contract.id}: the validated file no longer reads: {exc.detail}") from None
        if pending:
            flush()
    return _Written(rows, out_schema, counter.finish())


def _next_version(session: Session, dataset_id: str) -> int:
    current = session.scalar(
        sa.select(sa.func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
    )
    return int(current or 0) + 1


def publish(
    ctx: IngestContext,
    contract: Contract,
    landed: Landed,
    table: pa.Table | FileSource,
    protected: list[ProtectedColumn],
    report: QualityReport,
    contract_sha256: str,
    run_id: int | None = None,
    people: Individuals | None = None,
    *,
    claim: str | None = None,
) -> Published:
    """Write the protected Parquet, then the manifest, then register the version.

    ``table`` is either a protected table in memory (with its ``people``), or a validated
    :class:`FileSource`, read, counted, protected and written batch by batch (see
    :func:`publish_file`).

    The files go under a prefix of their own (the version and a random token): a writer that
    loses the race for a version number never overwrites the files of the version that won; it
    writes again under the next number."""
    for attempt in range(VERSION_ATTEMPTS):
        found = existing_version(ctx, contract, landed.sha256)
        if found is not None:
            reuse(ctx, found, run_id, claim=claim)
            return Published(found.version, found.manifest_key, found.row_count, reused=True)
        with ctx.sessions() as session:
            version = _next_version(session, contract.id)
        try:
            return _publish_version(
                ctx,
                contract,
                landed,
                table,
                protected,
                report,
                contract_sha256,
                version,
                run_id,
                people,
                claim,
            )
        except sa_exc.IntegrityError:
            # Another writer registered this number (or these bytes) first: its files are intact
            # (ours are under another prefix); take the next number, or reuse its version.
            if attempt == VERSION_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _publish_version(
    ctx: IngestContext,
    contract: Contract,
    landed: Landed,
    table: pa.Table | FileSource,
    protected: list[ProtectedColumn],
    report: QualityReport,
    contract_sha256: str,
    version: int,
    run_id: int | None,
    people: Individuals | None,
    claim: str | None,
) -> Published:
    with tempfile.TemporaryDirectory(prefix="gbadz-publish-") as tmp:
        part = Path(tmp) / "part-00000.parquet"
        if isinstance(table, FileSource):
            written = _write_stream(ctx, contract, table, part, version, protected, Path(tmp))
        else:
            ColumnProtector(ctx.provider).write_table(
                table,
                str(part),
                contract.id,
                str(version),
                protected,
                row_group_size=ROW_GROUP,
                compression="zstd",
            )
            written = _Written(table.num_rows, table.schema, people)
        # Registered before the temporary folder goes: spilled individuals are read from it.
        return _upload_and_register(
            ctx, contract, landed, part, written, protected, report, contract_sha256, version, run_id, claim
        )


def _upload_and_register(
    ctx: IngestContext,
    contract: Contract,
    landed: Landed,
    part: Path,
    written: _Written,
    protected: list[ProtectedColumn],
    report: QualityReport,
    contract_sha256: str,
    version: int,
    run_id: int | None,
    claim: str | None,
) -> Published:
    prefix = f"{contract.id}/v{version}/{secrets.token_hex(8)}/"
    bucket = ctx.settings.s3.curated_bucket
    people, rows = written.people, written.rows
    part_sha, part_size = file_sha256(part)
    try:
        # A multipart PUT streamed from the file, PART_SIZE at a time.
        ctx.client.fput_object(bucket, prefix + part.name, str(part), part_size=PART_SIZE)
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(ctx.settings.s3, exc)) from None
    manifest: dict[str, Any] = {
        "dataset": contract.id,
        "version": version,
        "contract_version": contract.version,
        "contract_sha256": contract_sha256,
        "source_sha256": landed.sha256,
        "rows": rows,
        "individuals": people.individuals if people else None,
        "sensitive_individuals": people.sensitive_individuals if people else None,
        "schema": [{"name": f.name, "type": str(f.type)} for f in written.schema],
        "protected_columns": [{"name": c.name, "classification": c.classification} for c in protected],
        "pseudonymised_columns": [
            n for n, f in contract.gbadz.columns.items() if f.protection == "pseudonymise"
        ],
        "files": [
            {
                "key": prefix + "part-00000.parquet",
                "sha256": part_sha,
                "size": part_size,
                "rows": rows,
            }
        ],
        "quality": {"success": report.success, "checks": len(report.results), "summary": report.summary()},
        "published_at": datetime.now(UTC).isoformat(),
    }
    manifest_key = prefix + "_manifest.json"
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    # Written last: a version without a manifest does not exist for readers.
    storage.ObjectStore(ctx.client, ctx.settings.s3).put_bytes(
        bucket, manifest_key, manifest_bytes, "application/json"
    )
    register(
        ctx,
        contract,
        contract_sha256,
        landed,
        version,
        manifest_key,
        rows,
        report,
        run_id,
        people,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        claim=claim,
    )
    return Published(version, manifest_key, rows, reused=False)


def register(
    ctx: IngestContext,
    contract: Contract,
    contract_sha256: str,
    landed: Landed,
    version: int,
    manifest_key: str,
    rows: int,
    report: QualityReport,
    run_id: int | None = None,
    people: Individuals | None = None,
    *,
    manifest_sha256: str | None = None,
    claim: str | None = None,
) -> None:
    with db.session_scope(ctx.sessions) as session:
        dataset = catalog_service.apply_contract(session, contract, contract_sha256)
        session.flush()
        quality = json.loads(json.dumps(report.as_dict(), default=str))  # JSON-safe once, stored twice
        row = DatasetVersion(
            dataset_id=contract.id,
            version=version,
            source_sha256=landed.sha256,
            contract_version=contract.version,
            manifest_key=manifest_key,
            row_count=rows,
            quality=quality,
            published_at=datetime.now(UTC),
            individuals=people.individuals if people else None,
            sensitive_individuals=people.sensitive_individuals if people else None,
            manifest_sha256=manifest_sha256,
        )
        session.add(row)
        if people is not None:
            _store_subjects(session, contract.id, version, people)
        catalog_service.note_version(dataset, row)
        _finish_run(
            session,
            run_id,
            dataset_id=contract.id,
            source_sha256=landed.sha256,
            landing_key=landed.key,
            claim=claim,
            status="accepted",
            version=version,
            summary=report.summary(),
            report=quality,
        )
        audit.record(
            session,
            actor=f"provider:{contract.gbadz.provider.organization}",
            action="dataset.version_published",
            subject_type="dataset",
            subject_id=contract.id,
            details={
                "version": version,
                "rows": rows,
                "individuals": people.individuals if people else None,
                "source_sha256": landed.sha256,
                "manifest": manifest_key,
            },
        )


def _store_subjects(session: Session, dataset_id: str, version: int, people: Individuals) -> None:
    """Write the version's keyed subject hashes in the caller's transaction, in bulk: COPY on
    PostgreSQL, one prepared executemany per chunk on SQLite (row-by-row ORM inserts cost 6 s a
    million). Spilled individuals arrive one partition at a time (bounded memory)."""
    connection = session.connection()
    raw: Any = connection.connection.driver_connection
    start = 0
    for subjects, sensitive in people.chunks():
        count = len(subjects)
        rows = zip(
            [dataset_id] * count,
            [version] * count,
            range(start, start + count),
            subjects,
            sensitive,
            strict=True,
        )
        start += count
        if connection.dialect.name == "postgresql":
            with (
                raw.cursor() as cursor,
                cursor.copy(
                    "COPY version_subjects (dataset_id, version, n, subject, sensitive) FROM STDIN"
                ) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        else:
            raw.executemany(
                "INSERT INTO version_subjects (dataset_id, version, n, subject, sensitive) VALUES (?, ?, ?, ?, ?)",
                rows,
            )


def _already(session: Session, run_id: int | None, status: str, claim: str | None) -> bool:
    """The upload's run already ended ``status`` under this claim (a retry of a finished step)."""
    if run_id is None:
        return False
    run = session.get(IngestionRun, run_id)
    return run is not None and run.status == status and (claim is None or run.claimed_by == claim[:100])


def _finish_run(session: Session, run_id: int | None, *, claim: str | None = None, **fields: Any) -> None:
    """Record an ingestion's outcome: on its queued upload's row if there is one, else a new row.

    An upload's run is finished once, by the worker holding its claim (``claim``): a worker that
    lost its claim (it was too slow and the run was claimed again) stores nothing."""
    run = session.get(IngestionRun, run_id, with_for_update=True) if run_id is not None else None
    if run is None:
        session.add(IngestionRun(**fields))
        return
    if run.status not in ("queued", "running") or (claim is not None and run.claimed_by != claim[:100]):
        raise ClaimLost(f"upload {run_id}: already finished or claimed by another worker")
    if isinstance(fields.get("report"), dict) and isinstance(run.report, dict):
        # The upload's size and type, recorded when it landed, stay with its outcome's report.
        kept = {k: run.report[k] for k in ("size", "suffix") if k in run.report}
        fields["report"] = fields["report"] | kept
    for key, value in fields.items():
        setattr(run, key, value)
    run.finished_at = datetime.now(UTC)


@dataclass(frozen=True)
class IngestResult:
    accepted: bool
    landed: Landed
    report: QualityReport | None
    published: Published | None
    quarantine_key: str | None


def ingest(ctx: IngestContext, contract: Contract, contract_sha256: str, source: Path) -> IngestResult:
    """Every step in order (what the DAG runs, task by task)."""
    landed = land(ctx, contract, source)
    found = existing_version(ctx, contract, landed.sha256)
    if found is not None:
        return IngestResult(
            True, landed, None, Published(found.version, found.manifest_key, found.row_count, True), None
        )
    # In one process the local file is the landed one (same SHA-256); the DAG's tasks, which
    # may run on different workers, fetch and decrypt the landed copy instead. Both read it
    # twice, batch by batch: once to validate, once (only if it passed) to publish.
    report = validate_stream(contract, source, ctx.settings.ingest)
    if not report.success:
        return IngestResult(False, landed, report, None, quarantine(ctx, contract, landed, report))
    published = publish_file(ctx, contract, landed, source, report, contract_sha256)
    return IngestResult(True, landed, report, published, None)


def publish_file(
    ctx: IngestContext,
    contract: Contract,
    landed: Landed,
    source: Path,
    report: QualityReport,
    contract_sha256: str,
    run_id: int | None = None,
    *,
    claim: str | None = None,
) -> Published:
    """Publish a validated local file in bounded memory: individuals counted, identifiers
    pseudonymised and protected columns encrypted batch by batch into one Parquet file, which is
    then uploaded in parts (ADR 0028)."""
    protected = Protection(ctx, contract, contract_schema(contract).names).encrypted
    return publish(
        ctx, contract, landed, FileSource(source), protected, report, contract_sha256, run_id, claim=claim
    )


def contract_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
