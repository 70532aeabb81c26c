"""Deliveries: a grant-scoped copy of a dataset version, logged, then handed out as short-lived URLs.

Order of events (issue #8, invariant 1 of architecture.md):

1. check the grant is active and held by the caller (expired or revoked: no new URLs), and
   decide the transfer again (invariant 7): live counters, evidence validity on the
   Asia/Shanghai date, the current contract and the version being sent; stricter than the
   grant, or its mechanism lapsed: the grant is suspended (its own transaction) and 410;
2. materialise: read the curated Parquet under the grant (only granted columns; encrypted
   columns decrypted by the grant's keys), apply the contract's delivery protections
   (masks; ``drop_on_export`` columns never leave), write Parquet batch by batch, sealed under
   the grant's own key (ADR 0018), into the delivery bucket — a failure here logs nothing and
   hands out nothing; a stored copy is reused only if it still hashes as logged;
3. in one transaction: the delivery row, the year-to-date counters (de-duplicated
   individuals) and the transfer-log entry; commit;
4. sign the URLs: tickets to ``/api/v1/delivery-files/…``, which decrypts while the grant is
   active (a local computation: it cannot fail half-way).

A retry with the same ``Idempotency-Key`` after a crash between 3 and 4 (within an hour, same
version and contract) reuses the logged delivery and only signs its URLs again: one transfer, and
a ``reissue`` entry in the log for the new URLs.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from minio import Minio
from minio.error import S3Error
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db, storage
from gbadz.access import determination as determining
from gbadz.access import repository as access_repository
from gbadz.access import service as access_service
from gbadz.access.models import Grant, MechanismEvidence
from gbadz.catalog import integrity
from gbadz.catalog import repository as catalog_repository
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.catalog.service import stored_contract
from gbadz.compliance import counters
from gbadz.config import Settings
from gbadz.crypto import envelope
from gbadz.crypto.columns import ColumnProtector, KeyGrant
from gbadz.crypto.keys import KeyProvider
from gbadz.crypto.pseudonym import mask_array
from gbadz.delivery import repository, sealing
from gbadz.errors import (
    Conflict,
    DatasetRetired,
    GbadzError,
    GrantInactive,
    GrantNotFound,
    GrantSuspended,
    IntegrityCheckFailed,
    KeyDestroyed,
    KeyNotFound,
    NoPublishedVersion,
    ObligationsOpen,
    StorageUnavailable,
    TooManyRequests,
    WrongGrantKind,
)
from gbadz.identity.models import Organization
from gbadz.law.rules import RuleSet, default_rules
from gbadz.log import get_logger
from gbadz.translog.log import Appended, TransferLog
from gbadz.vocabulary import LOCAL_TIME_ZONES

log_ = get_logger(__name__)

BATCH_ROWS = 128 * 1024
MASKS = {"mask_last4": "last4", "mask_email": "email"}


@dataclass(frozen=True)
class DeliveredFile:
    key: str
    size: int  # plaintext bytes, as the grantee receives them
    sha256: str  # of the plaintext: the grantee checks the file against the log with it
    rows: int
    # The sealed object in the bucket (ADR 0018); None for a plaintext copy made before it.
    stored_sha256: str | None = None
    envelope_sha256: str | None = None

    @property
    def sealed(self) -> bool:
        return self.stored_sha256 is not None and self.envelope_sha256 is not None


@dataclass(frozen=True)
class Delivery:
    transfer_id: str
    log_index: int
    grant_id: str
    dataset_id: str
    version: int
    columns: list[str]
    files: list[DeliveredFile]
    reused: bool
    appended: Appended | None = None  # the new log entry (None when an earlier one was reused)
    access_expiry: datetime | None = None  # the grant's end: no URL outlives it
    issued_at: datetime | None = None  # when its URLs were issued (they die ttl later)


def refuse_analysis_grant(grant: Grant) -> None:
    """A copy is never made of an analysis grant (issue #18): its rows stay in the zone and only
    the aggregates the law decided leave. Checked on every copy path (delivery, presigned URLs,
    Delta Sharing)."""
    if grant.kind != "copy":
        raise WrongGrantKind("grant: an analysis grant releases aggregates, not copies", field="grant")


def _active_grant(session: Session, grant_id: str, org_id: str, now: datetime) -> Grant:
    # Locked: a burst of deliveries of one grant queues, so the second sees the first's transfer
    # (and reuses it) instead of making a copy of its own.
    grant = repository.held_grant(session, grant_id, org_id, lock=True)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    refuse_analysis_grant(grant)
    return still_running(grant, now, "no new deliveries or URLs")


def still_running(grant: Grant, now: datetime, refused: str) -> Grant:
    """The grant, if it is active now; suspended, expired or revoked: 410 saying what is ``refused``
    (every transfer kind answers an ended grant alike)."""
    status = grant.status(now)
    if status == "suspended":
        raise GrantSuspended(
            f"grant: suspended until a compliance officer reviews it: {grant.suspended_reason}", field="grant"
        )
    if status != "active":
        raise GrantInactive(f"grant: the grant is {status}; {refused}", field="grant")
    return grant


def preconditions_met(session: Session, grant: Grant) -> None:
    """PIPIA and notice/consent come before any data leaves (PIPL Arts.39, 55)."""
    waiting = access_service.open_preconditions(session, grant.id)
    if waiting:
        raise ObligationsOpen(
            "obligations: no data leaves before "
            + "; ".join(f"{duty.description} ({duty.owner_role}: obligation {duty.id})" for duty in waiting),
            field="obligations",
        )


def materialise(
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    grant: Grant,
    dataset: Dataset,
    version: DatasetVersion,
    transfer_id: str,
) -> tuple[list[DeliveredFile], list[str], pa.Array]:
    """Write the grant's copy into the delivery bucket; return files, columns and subject tokens."""
    contract = stored_contract(dataset)
    manifest = integrity.manifest(
        storage.ObjectStore(client, settings.s3).get_bytes(settings.s3.curated_bucket, version.manifest_key),
        dataset_id=dataset.id,
        version=version.version,
        key=version.manifest_key,
        expected=version.manifest_sha256,
    )
    columns = [c for c in grant.columns if contract.facts(c).protection != "drop_on_export"]
    subject_column = contract.subject_column if dataset.has_pi else None
    read_columns = list(dict.fromkeys([*columns, *([subject_column] if subject_column else [])]))
    key_grant = KeyGrant(
        grant.id, dataset.id, str(version.version), frozenset(read_columns), grant.expires_at
    )
    protector = ColumnProtector(keys)
    distinct_parts: list[pa.Array] = []
    files: list[DeliveredFile] = []
    # Under the dataset's prefix, so retiring the dataset deletes every copy (catalog.service.retire).
    prefix = f"{access_service.grant_copies_prefix(grant)}v{version.version}/{transfer_id}/"
    with tempfile.TemporaryDirectory(prefix="gbadz-deliver-") as tmp:
        for n, item in enumerate(manifest["files"]):
            source = Path(tmp) / f"source-{n}.parquet"
            target = Path(tmp) / f"part-{n:05d}.parquet"
            client.fget_object(settings.s3.curated_bucket, item["key"], str(source))
            integrity.check_part(
                item, integrity.file_sha256(str(source)), dataset_id=dataset.id, version=version.version
            )
            props = protector.decryption_properties(grant.id, lambda _gid: key_grant)
            reader = pq.ParquetFile(str(source), decryption_properties=props)
            writer: pq.ParquetWriter | None = None
            rows = 0
            try:
                for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=read_columns):
                    if subject_column:
                        distinct_parts.append(pc.unique(pc.drop_null(batch.column(subject_column))))
                    arrays = []
                    for name in columns:
                        array = batch.column(name)
                        how = MASKS.get(contract.facts(name).protection or "none")
                        arrays.append(mask_array(array, how) if how else array)
                    table = pa.Table.from_arrays(arrays, names=columns)
                    if writer is None:
                        writer = pq.ParquetWriter(str(target), table.schema, compression="zstd")
                    writer.write_table(table)
                    rows += table.num_rows
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:  # an empty source: still a valid, empty file
                pq.write_table(pa.table({c: pa.array([], pa.string()) for c in columns}), str(target))
            # Sealed under the grant's key before it leaves this process: the bucket never holds
            # the plaintext (ADR 0018). The temporary plaintext goes with the directory.
            sealed_path = target.with_suffix(".gbzenv")
            sealed = sealing.seal_file(
                keys, sealing.grant_key_context(dataset.id, grant.id), target, sealed_path
            )
            target.unlink()
            key = prefix + target.name
            client.fput_object(settings.s3.delivery_bucket, key, str(sealed_path))
            files.append(
                DeliveredFile(
                    key,
                    sealed.plaintext_size,
                    sealed.plaintext_sha256,
                    rows,
                    sealed.stored_sha256,
                    sealed.envelope_sha256,
                )
            )
    # Distinct individuals as an Arrow array: Python strings are made only if they are counted.
    subjects = pc.unique(pa.concat_arrays(distinct_parts)) if distinct_parts else pa.array([], pa.string())
    return files, columns, pc.cast(subjects, pa.string())


def _delivered(session: Session, grant_id: str, version: int, contract_sha256: str) -> dict[str, Any] | None:
    """The entry of the latest delivery of this grant's copy of ``version`` under this contract."""
    for text in repository.recent_entries(session, grant_id):
        entry: dict[str, Any] = json.loads(text)
        if (
            entry.get("dataset_version") == version
            and entry.get("contract_sha256") == contract_sha256
            and entry.get("files")
        ):
            return entry
    return None


#: How long a retry with the same Idempotency-Key may reuse a logged delivery (then: a new one).
REPLAY_WINDOW = timedelta(hours=1)


def _replayable(entry: dict[str, Any], dataset: Dataset, version: int, now: datetime) -> bool:
    """A logged delivery may be handed out again only soon after, for the same contract and version."""
    try:
        logged = datetime.fromisoformat(str(entry["ts_utc"]))
    except (KeyError, ValueError):
        return False
    return (
        now - logged <= REPLAY_WINDOW
        and entry.get("dataset_version") == version
        and entry.get("contract_sha256") == dataset.contract_sha256
    )


def _approvers(grant: Grant, request: Any) -> list[dict[str, Any]]:
    """Who approved the grant: the determination's reviewers, the automatic decision, or, for a
    grant approved before determinations were recorded (migration 0010), its review steps."""
    determined = grant.determination or {}
    if determined.get("approvers"):
        return list(determined["approvers"])
    reviews = list(getattr(request, "reviews", None) or [])
    if reviews:
        return [{k: r.get(k) for k in ("step", "by", "org_id", "at", "note")} for r in reviews]
    if grant.decision.get("outcome") in ("EXEMPT", "NOT_EXPORT"):
        return [{"step": "automatic", "by": "gbadz", "at": grant.granted_at.isoformat(), "note": None}]
    return [
        {
            "step": "before_determinations",
            "by": None,
            "at": grant.granted_at.isoformat(),
            "note": "see the audit events",
        }
    ]


#: Transfer-log kinds that hand out URLs (the rate limit counts them).
ISSUING = ("download", "delta_sharing_query", "reissue")


class DeliveryRateLimited(TooManyRequests):
    """The grant asked for more deliveries than its limit allows in the window."""


class CopyAltered(Conflict):
    """A stored delivery copy no longer matches the SHA-256 in the transfer log: not served."""


class _Refusal(Exception):
    """Raised inside the delivery transaction; audited in a transaction of its own after it."""

    def __init__(
        self, grant_id: str, dataset_id: str, actor: str, files: tuple[str, ...], log_index: int | None
    ) -> None:
        super().__init__(grant_id)
        self.grant_id, self.dataset_id, self.actor = grant_id, dataset_id, actor
        self.files, self.log_index = files, log_index


def check_copy(client: Minio, settings: Settings, files: list[DeliveredFile]) -> str:
    """Re-hash every stored file against its logged SHA-256: intact, missing, altered, or legacy
    (a plaintext copy from before ADR 0018, never handed out again)."""
    if not files or not all(f.sealed for f in files):
        return "legacy"
    for f in files:
        try:
            response = client.get_object(settings.s3.delivery_bucket, f.key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return "missing"
            raise
        try:
            digest = hashlib.sha256()
            for block in response.stream(sealing.HASH_BLOCK):
                digest.update(block)
        finally:
            response.close()
            response.release_conn()
        if digest.hexdigest() != f.stored_sha256:
            return "altered"
    return "intact"


def _checked(
    client: Minio, settings: Settings, grant: Grant, files: list[DeliveredFile], actor: str, index: int | None
) -> str:
    """``check_copy``, with an altered copy refused (audited after the rollback, never served)."""
    state = check_copy(client, settings, files)
    if state == "altered":
        raise _Refusal(grant.id, grant.dataset_id, actor, tuple(f.key for f in files), index)
    return state


def _issuances_since(session: Session, grant_id: str, since: datetime) -> list[datetime]:
    return list(repository.issued_at_since(session, grant_id, ISSUING, since))


def window_wait(times: Sequence[datetime], limit: int, window: timedelta, now: datetime) -> int | None:
    """A sliding-window limit over ``times`` (oldest first, all within the window): None while
    fewer than ``limit``; else the whole seconds until the oldest that counts leaves the window."""
    if len(times) < limit:
        return None
    return max(1, math.ceil((times[len(times) - limit] + window - now).total_seconds()))


def _rate_limited(session: Session, settings: Settings, grant_id: str, now: datetime) -> None:
    """At most ``delivery_limit`` URL issuances per grant per window (counted in the transfer
    log, in the database: every replica sees the same count)."""
    limit, window = settings.api.delivery_limit, timedelta(seconds=settings.api.delivery_limit_window_s)
    wait = window_wait(_issuances_since(session, grant_id, now - window), limit, window, now)
    if wait is None:
        return
    raise DeliveryRateLimited(
        f"grant: at most {limit} deliveries per {int(window.total_seconds())} s; "
        f"the current URLs stay valid, try again in {wait} s",
        headers={"Retry-After": str(wait)},
        field="grant",
    )


def _live_issuance(
    session: Session, settings: Settings, grant: Grant, dataset: Dataset, version: int, now: datetime
) -> tuple[dict[str, Any], datetime] | None:
    """The grant's latest URL issuance, if it is for this version and contract and its URLs
    have at least half their life left: a repeat delivery hands out those very URLs."""
    ttl = timedelta(seconds=settings.api.delivery_url_ttl_s)
    for text in repository.recent_entries(session, grant.id, limit=10):
        entry: dict[str, Any] = json.loads(text)
        if entry.get("transfer_mode") not in ISSUING:
            continue
        try:
            issued = datetime.fromisoformat(str(entry["ts_utc"]))
        except (KeyError, ValueError):
            return None
        dies = min(issued + ttl, grant.expires_at)
        if (
            entry.get("dataset_version") == version
            and entry.get("contract_sha256") == dataset.contract_sha256
            and entry.get("files")
            and dies - now >= ttl / 2
        ):
            return entry, issued
        return None
    return None


def deliver(
    session: Session,
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    log: TransferLog,
    grant_id: str,
    org_id: str,
    actor: str,
    idempotency_key: str | None = None,
    mode: str = "download",
    reuse_files: bool = True,
    rules: RuleSet | None = None,
) -> Delivery:
    now = datetime.now(UTC)
    grant = _active_grant(session, grant_id, org_id, now)
    dataset = session.get(Dataset, grant.dataset_id)
    if dataset is None or dataset.status == "retired":
        raise DatasetRetired("dataset: the dataset was retired; nothing can be delivered", field="dataset")
    if dataset.current_version is None:
        raise NoPublishedVersion("dataset: no version has been published yet", field="dataset")
    version = catalog_repository.latest_version(session, dataset)
    assert version is not None
    rules = rules or default_rules()
    if dataset.provider_org_id is not None:
        # The exporter's counters stay as read until this transfer is counted and committed:
        # two deliveries cannot both pass a threshold on the same figure.
        counters.lock_totals(session, dataset.provider_org_id, counters.counter_year(now, rules))
    # Every transfer is decided again, replays included (invariant 7).
    redecision = access_service.redecide(session, grant, dataset, version.version, now, rules)
    preconditions_met(session, grant)
    try:
        return _deliver_checked(
            session,
            client=client,
            settings=settings,
            keys=keys,
            log=log,
            grant=grant,
            dataset=dataset,
            version=version,
            redecision=redecision,
            now=now,
            actor=actor,
            idempotency_key=idempotency_key,
            mode=mode,
            reuse_files=reuse_files,
            rules=rules,
        )
    except storage.S3_ERRORS as exc:
        # The cause goes to the server's log; the answer names no internal address.
        log_.warning("delivery storage failure", grant=grant.id, reason=storage.explain(settings.s3, exc))
        raise StorageUnavailable("storage: the delivery store is unavailable; try again later") from None


def _reused(
    body: dict[str, Any],
    log_index: int,
    grant: Grant,
    files: list[DeliveredFile],
    appended: Appended | None,
    issued_at: datetime,
) -> Delivery:
    """A delivery handed out again from its logged entry ``body`` (no new copy, nobody counted twice)."""
    return Delivery(
        transfer_id=body["transfer_id"],
        log_index=log_index,
        grant_id=grant.id,
        dataset_id=body["dataset_id"],
        version=body["dataset_version"],
        columns=body["columns"],
        files=files,
        reused=True,
        appended=appended,
        access_expiry=grant.expires_at,
        issued_at=issued_at,
    )


def _deliver_checked(
    session: Session,
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    log: TransferLog,
    grant: Grant,
    dataset: Dataset,
    version: DatasetVersion,
    redecision: Any,
    now: datetime,
    actor: str,
    idempotency_key: str | None,
    mode: str,
    reuse_files: bool,
    rules: RuleSet,
) -> Delivery:
    scoped_key = f"{grant.id}:{idempotency_key}" if idempotency_key is not None else None
    if scoped_key is not None:
        earlier_entry = repository.logged_by_key(session, scoped_key)
        if earlier_entry is not None:
            body = json.loads(earlier_entry.entry)
            earlier_files = [DeliveredFile(**f) for f in body["files"]]
            if (
                _replayable(body, dataset, version.version, now)
                and _checked(client, settings, grant, earlier_files, actor, earlier_entry.index) == "intact"
            ):
                _rate_limited(session, settings, grant.id, now)
                # The same transfer handed out again: no new copy and nobody counted twice, but
                # every issuance of URLs is in the log (a "reissue" entry pointing at the transfer).
                reissue = {k: v for k, v in body.items() if k != "index"} | {
                    "ts_utc": now.isoformat(),
                    "transfer_mode": "reissue",
                    "reissue_of": earlier_entry.index,
                    "n_individuals": 0,  # the same people, counted once with the transfer
                    "actor": actor,
                    "decided_at_transfer": redecision.summary(),
                }
                appended = log.append(session, reissue, kind="reissue", grant_id=grant.id)
                return _reused(body, earlier_entry.index, grant, earlier_files, appended, now)
            scoped_key = None  # too old, the data changed, or the copy is gone: a new, logged delivery
    live = _live_issuance(session, settings, grant, dataset, version.version, now)
    if live is not None:
        body, issued = live
        live_files = [DeliveredFile(**f) for f in body["files"]]
        transfer_index = int(body.get("reissue_of", body["index"]))
        if _checked(client, settings, grant, live_files, actor, transfer_index) == "intact":
            # One click, one logged transfer: a repeat within the URLs' life gets the very URLs
            # already logged (same expiry, same signature), so nothing new leaves and nothing
            # new is logged or stored.
            return _reused(body, transfer_index, grant, live_files, None, issued)
    _rate_limited(session, settings, grant.id, now)
    transfer_id = str(uuid.uuid4())
    earlier = _delivered(session, grant.id, version.version, dataset.contract_sha256) if reuse_files else None
    files: list[DeliveredFile] | None = None
    if earlier is not None:
        # The grant's copy of this version is stored already: one copy per grant and version.
        # Handed out again (a new, logged transfer) only if every file still hashes as logged.
        earlier_files = [DeliveredFile(**f) for f in earlier["files"]]
        state = _checked(client, settings, grant, earlier_files, actor, earlier.get("index"))
        if state == "intact":
            files, columns = earlier_files, list(earlier["columns"])
            subjects = pa.array([], pa.string())
        elif state == "missing":
            audit.record(
                session,
                actor="gbadz",
                action="delivery.copy_missing",
                subject_type="grant",
                subject_id=grant.id,
                details={"log_index": earlier.get("index"), "files": [f.key for f in earlier_files]},
            )
    if files is None:
        files, columns, subjects = materialise(client, settings, keys, grant, dataset, version, transfer_id)

    # What leaves is counted and logged under the decision taken now (invariant 7), not the
    # one the grant was made with: a grant that became personal is counted, and the log says so.
    decision = redecision.decision.as_dict()
    contract = stored_contract(dataset)
    has_pi, has_spi_columns, spi_categories = contract.classify(columns)
    spi_columns = [c for c in columns if contract.classification(c).spi]
    basis = {"exempt": "exempt", "mechanism": "mechanism"}.get(str(decision.get("counter")))
    exporter = access_repository.organisation(session, dataset.provider_org_id)
    snapshot = None
    n_individuals = 0
    counting_method = "none"
    if basis is not None and exporter is not None and has_pi and version.individuals is not None:
        # The version's individuals, counted once per person per exporter (exporter-keyed hashes).
        snapshot = counters.record_version(
            session,
            exporter_id=exporter.id,
            dataset_id=dataset.id,
            version=version.version,
            basis=basis,
            all_sensitive=has_spi_columns,
            at=now,
            rules=rules,
        )
        n_individuals = int(version.individuals)
        counting_method = "distinct subjects of the version (exporter-keyed hash)"
    elif basis is not None and exporter is not None and len(subjects):
        people = subjects.to_pylist()  # a version published before counting: its pseudonyms
        snapshot = counters.record(
            session,
            exporter_id=exporter.id,
            subjects=people,
            sensitive_subjects=people if spi_columns else (),
            basis=basis,
            at=now,
            rules=rules,
        )
        n_individuals = len(subjects)
        counting_method = f"distinct {contract.subject_column} (pseudonymised)"
    access_service.release_reservation(grant)
    entry = transfer_record(
        session,
        grant=grant,
        dataset=dataset,
        version=version.version,
        redecision=redecision,
        transfer_id=transfer_id,
        now=now,
        actor=actor,
        mode=mode,
        rules=rules,
    ) | {
        "content_hash": hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest(),
        "files": [f.__dict__ for f in files],
        "columns": columns,
        "has_pi": has_pi,
        "has_spi": has_spi_columns or bool(snapshot and snapshot.spi_after > snapshot.spi_before),
        "spi_categories": spi_categories,
        "deid_status": "pseudonymised"
        if any(contract.facts(c).protection == "pseudonymise" for c in columns)
        else "raw",
        "n_individuals": n_individuals,
        "counting_method": counting_method,
        "counter_year": snapshot.year if snapshot else counters.counter_year(now, rules),
        "counter_basis": basis or "none",
        "pi_ytd_before": snapshot.pi_before if snapshot else None,
        "pi_ytd_after": snapshot.pi_after if snapshot else None,
        "spi_ytd_before": snapshot.spi_before if snapshot else None,
        "spi_ytd_after": snapshot.spi_after if snapshot else None,
        "deid": {c: contract.facts(c).protection or "none" for c in columns},
    }
    logged = log.append(
        session,
        entry,
        kind=mode,
        grant_id=grant.id,
        idempotency_key=scoped_key,
    )
    return Delivery(
        transfer_id,
        logged.index,
        grant.id,
        dataset.id,
        version.version,
        columns,
        files,
        reused=False,
        appended=logged,
        access_expiry=grant.expires_at,
        issued_at=now,
    )


def transfer_record(
    session: Session,
    *,
    grant: Grant,
    dataset: Dataset,
    version: int,
    redecision: Any,
    transfer_id: str,
    now: datetime,
    actor: str,
    mode: str,
    rules: RuleSet,
) -> dict[str, Any]:
    """The decision half of a transfer-log entry: who sends what to whom, decided how, approved by
    whom (crossborder-rules.md §8). Every transfer kind (a copy, a Delta Sharing query, a DP
    release) records it the same way; each adds the fields of what it sent (its data half).

    ``redecision`` is the decision taken at this transfer (invariant 7), not the grant's.
    """
    decision = redecision.decision.as_dict()
    exporter = access_repository.organisation(session, dataset.provider_org_id)
    recipient = access_repository.organisation(session, grant.grantee_org_id)
    request = repository.request_of(session, grant)
    zone = ZoneInfo(LOCAL_TIME_ZONES[dataset.origin]) if dataset.origin in LOCAL_TIME_ZONES else rules.zone
    evidence = redecision.evidence
    determined = grant.determination or {}
    met = {d.kind: d for d in access_repository.obligations_of(session, grant.id) if d.state == "met"}
    pipia = determined.get("pipia") or (
        {
            "reference": met["pipia"].reference,
            "date": met["pipia"].evidence_date.isoformat() if met["pipia"].evidence_date else None,
        }
        if "pipia" in met
        else None
    )
    consent = determined.get("consent") or (
        {"reference": met["notice_consent"].reference} if "notice_consent" in met else None
    )
    used = session.get(MechanismEvidence, evidence["used_id"]) if evidence.get("used_id") else None
    sector_id = (grant.decision.get("determination") or {}).get("sector_evidence_id")
    sector = session.get(MechanismEvidence, sector_id) if sector_id else None
    contract = stored_contract(dataset)
    return {
        "transfer_id": transfer_id,
        "access_request_id": grant.request_id,
        "grant_id": grant.id,
        "ts_utc": now.isoformat(),
        "ts_local": now.astimezone(zone).isoformat(),
        "decision_outcome": decision.get("outcome"),
        "rule_id": decision.get("rule_id"),
        "legal_basis": determining.final_basis(redecision.decision, sector),
        "rules_version": decision.get("rules_version"),
        "rules_hash": decision.get("rules_hash"),
        "engine_version": decision.get("engine_version"),
        "exporter": determining.party_record(exporter),
        "recipient": determining.party_record(recipient),
        "origin": dataset.origin,
        "destination": recipient.jurisdiction if recipient else None,
        "processing_location": request.processing_location if request else None,
        "dataset_id": dataset.id,
        "dataset_version": version,
        "contract_sha256": dataset.contract_sha256,
        "category": dataset.category,
        "sector_overlay": contract.gbadz.sector_overlay,
        "purpose_code": grant.purpose,
        "purpose_text": request.purpose_text if request else None,
        "mechanism": (used.variant or used.kind)
        if used is not None
        else (decision.get("evidence_required") or [decision.get("outcome")])[0],
        "mechanism_evidence": evidence | (determining.evidence_record(used) if used is not None else {}),
        "sector_approval": determining.evidence_record(sector) if sector is not None else None,
        "grant_decision": {k: grant.decision.get(k) for k in ("outcome", "rule_id", "legal_basis")},
        "transfer_mode": mode,
        "access_expiry": grant.expires_at.isoformat(),
        "actor": actor,
        # v2 (issue #16): who approved, on which determination, with which PIPIA and consent.
        "entry_version": 2,
        "determination": {
            "id": determined.get("determination_id"),
            "log_index": grant.determination_log_index,
            "reviewed": determined.get("reviewed"),
        }
        if determined
        else None,
        "approvers": _approvers(grant, request),
        "pipia": pipia,
        "consent": consent,
        "dspdp_notification_ref": met["dspdp_notification"].reference
        if "dspdp_notification" in met
        else None,
        "necessity_justification": request.necessity_justification if request else None,
        "findings": {k: v for k, v in (request.findings or {}).items() if k not in ("by", "at")}
        if request
        else {},
        "onward_transfer": request.onward_transfer if request else None,
        "storage_location_at_recipient": (request.processing_location if request else None)
        or (recipient.jurisdiction if recipient else None),
        "retention_at_recipient": f"until {grant.expires_at.date().isoformat()} (the grant's end), then deleted and attested",
    }


def presign(
    keys: KeyProvider, settings: Settings, delivery: Delivery, ttl: timedelta, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Short-lived signed URLs to the API (which decrypts the sealed copy), dying ``ttl`` after the
    delivery's issuance and never after ``until`` (the grant's end). The same delivery always
    gets the same URLs."""
    now = datetime.now(UTC)
    expires = (delivery.issued_at or now) + ttl
    if until is not None:
        expires = min(expires, until)
    stamp = max(int(expires.timestamp()), int(now.timestamp()) + 1)
    base = settings.oauth.issuer.rstrip("/")
    links = []
    for f in delivery.files:
        if not f.sealed or f.envelope_sha256 is None:  # pragma: no cover - legacy copies are never reused
            raise CopyAltered("files: a copy made before sealing cannot be handed out", field="files")
        ticket = sealing.issue_ticket(
            keys, sealing.Ticket(delivery.grant_id, f.key, f.envelope_sha256, stamp)
        )
        links.append(
            {
                "url": f"{base}/api/v1/delivery-files/{ticket}",
                "key": f.key,
                "size": f.size,
                "sha256": f.sha256,
                "rows": f.rows,
                "expires_at": datetime.fromtimestamp(stamp, UTC).isoformat(),
            }
        )
    return links


@dataclass(frozen=True)
class HandedOut:
    """A logged delivery and its presigned URLs."""

    delivery: Delivery
    links: list[dict[str, Any]]


_GRANT_STRIPES = [threading.Lock() for _ in range(64)]


def deliver_and_presign(
    sessions: sessionmaker[Session],
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    log: TransferLog,
    grant_id: str,
    org_id: str,
    actor: str,
    idempotency_key: str | None = None,
    mode: str = "download",
    reuse_files: bool = False,
    rules: RuleSet | None = None,
) -> HandedOut:
    """Deliver in a transaction of its own, commit it, and only then presign the URLs.

    The one use case that commits inside a service: the transfer must be in the log
    (committed) before any URL leaves (invariant 1), so the request-scoped session, which
    commits after the response is built, cannot carry it.
    """
    try:
        # Deliveries of one grant queue: across replicas by the grant's row lock (PostgreSQL),
        # inside a process by a lock stripe (SQLite has no row locks; it is the one-process mode).
        with (
            _GRANT_STRIPES[zlib.crc32(grant_id.encode()) % len(_GRANT_STRIPES)],
            db.session_scope(sessions) as session,
        ):
            delivery = deliver(
                session,
                client=client,
                settings=settings,
                keys=keys,
                log=log,
                grant_id=grant_id,
                org_id=org_id,
                actor=actor,
                idempotency_key=idempotency_key,
                mode=mode,
                reuse_files=reuse_files,
                rules=rules,
            )
    except access_service.SuspendGrant as stop:
        # Nothing of the refused transfer was written; the suspension commits on its own.
        with db.session_scope(sessions) as session:
            access_service.suspend_grant(session, stop.grant_id, stop.reason, stop.redecision)
        raise GrantSuspended(f"grant: suspended: {stop.reason}", field="grant") from None
    except _Refusal as refused:
        refuse_altered(sessions, refused)
    if delivery.appended is not None:
        log.committed(delivery.appended)
    links = presign(
        keys, settings, delivery, timedelta(seconds=settings.api.delivery_url_ttl_s), delivery.access_expiry
    )
    return HandedOut(delivery, links)


def refuse_altered(sessions: sessionmaker[Session], refused: _Refusal) -> NoReturn:
    """Record that a stored copy failed its check against the log, then refuse (409): nothing
    of it is handed out, and it is not silently replaced (an operator looks first)."""
    log_.error(
        "delivery copy does not match the transfer log", grant=refused.grant_id, log_index=refused.log_index
    )
    audit.record_detached(
        sessions,
        actor=refused.actor,
        action="delivery.copy_altered",
        subject_type="grant",
        subject_id=refused.grant_id,
        details={"dataset": refused.dataset_id, "log_index": refused.log_index, "files": list(refused.files)},
    )
    raise CopyAltered(
        "files: the stored copy no longer matches the SHA-256 recorded in the transfer log; it was "
        "not handed out and the incident is recorded for the operator",
        field="files",
    )


#: Set once this process has deleted the plaintext copies written before ADR 0018.
_PLAINTEXT_PURGED = threading.Event()


def purge_plaintext_copies(
    sessions: sessionmaker[Session], client: Minio, settings: Settings, grant_ids: list[str] | None = None
) -> int:
    """Delete the delivery copies written before sealing (plaintext Parquet, no ``GBZENV1`` magic)
    of grants whose copies still exist; return how many objects went. They are never handed out
    again (a sealed copy is made at the next delivery), so nothing is lost. The first sweep of
    every process runs it; it reads eight bytes of each object."""
    bucket = settings.s3.delivery_bucket
    removed = 0
    with db.session_scope(sessions) as session:
        for grant in repository.grants_with_copies(session, grant_ids):
            plain = []
            for item in client.list_objects(
                bucket, prefix=access_service.grant_copies_prefix(grant), recursive=True
            ):
                name = item.object_name
                if not name:
                    continue
                head = b""
                if (item.size or 0) >= len(envelope.MAGIC):
                    response = client.get_object(bucket, name, offset=0, length=len(envelope.MAGIC))
                    try:
                        head = bytes(response.read())
                    finally:
                        response.close()
                        response.release_conn()
                if head != envelope.MAGIC:
                    plain.append(name)
            for name in plain:
                client.remove_object(bucket, name)
            if plain:
                audit.record(
                    session,
                    actor="gbadz",
                    action="delivery.plaintext_copies_deleted",
                    subject_type="grant",
                    subject_id=grant.id,
                    details={"objects": len(plain)},
                )
            removed += len(plain)
    return removed


def sweep_ended_grants(
    sessions: sessionmaker[Session], client: Minio, settings: Settings, keys: KeyProvider | None = None
) -> int:
    """Destroy the delivery key and delete the delivery copies of every grant that ended (expired
    or revoked) and still has them; returns how many grants were swept. Safe to run on several
    replicas (rows are taken with SKIP LOCKED) and to re-run after a storage failure."""
    from gbadz.crypto.keys import provider_from_settings

    keys = keys or provider_from_settings(settings)
    if not _PLAINTEXT_PURGED.is_set():
        purge_plaintext_copies(sessions, client, settings)
        _PLAINTEXT_PURGED.set()
    swept = 0
    with db.session_scope(sessions) as session:
        for grant in access_service.ended_grants_with_copies(session):
            # The key first: even a copy the deletion misses (a backup, a lagging replica) no
            # longer decrypts (ADR 0018).
            access_service.destroy_delivery_key(session, keys, grant, "gbadz")
            access_service.delete_copies(
                session,
                grant,
                lambda prefix: storage.delete_prefix(
                    client, settings.s3, settings.s3.delivery_bucket, prefix
                ),
            )
            swept += 1
    return swept


@dataclass(frozen=True)
class Served:
    """What the file endpoint answers: status, headers, and (GET) the plaintext stream."""

    status: int
    headers: dict[str, str]
    body: Iterator[bytes] | None


def _byte_range(header: str | None, total: int) -> tuple[int, int] | None:
    """One ``bytes=`` range (RFC 9110 §14.1.2) as inclusive offsets; None serves the whole file.
    A range that cannot be satisfied raises RangeNotSatisfiable (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # absent, another unit, or several ranges: the whole file (RFC 9110 allows it)
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or total == 0:
                raise RangeNotSatisfiable(
                    f"range: the file has {total} bytes",
                    headers={"Content-Range": f"bytes */{total}"},
                    field="range",
                )
            return max(0, total - suffix), total - 1
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        return None  # an invalid Range header is ignored (RFC 9110 §14.2)
    if start >= total:
        raise RangeNotSatisfiable(
            f"range: the file has {total} bytes", headers={"Content-Range": f"bytes */{total}"}, field="range"
        )
    if end < start:
        return None  # invalid: ignored
    return start, min(end, total - 1)


class RangeNotSatisfiable(GbadzError):
    status_code = 416


def _read_envelope_header(client: Minio, bucket: str, key: str, size: int) -> tuple[bytes, dict[str, object]]:
    def fetch(length: int) -> bytes:
        response = client.get_object(bucket, key, offset=0, length=length)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    head = fetch(min(size, 4096))
    if len(head) >= 12:
        needed = 12 + int.from_bytes(head[8:12], "big")
        if len(head) < needed <= min(size, 12 + envelope.MAX_HEADER):
            head = fetch(needed)
    return envelope.read_header(io.BytesIO(head))


def serve_file(
    sessions: sessionmaker[Session],
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    ticket_text: str,
    range_header: str | None,
    head: bool = False,
) -> Served:
    """Open a delivery URL: the ticket verifies and is alive, the grant is still active, the stored
    object is the very envelope the ticket names; then its plaintext, each chunk authenticated
    before any of it leaves (a chunk altered after the URL was issued stops the answer there)."""
    ticket = sealing.read_ticket(keys, ticket_text)
    now = datetime.now(UTC)
    with sessions() as session:
        grant = repository.grant(session, ticket.grant_id)
        if (
            grant is None
            or grant.kind != "copy"
            or not ticket.key.startswith(access_service.grant_copies_prefix(grant))
        ):
            raise sealing.TicketInvalid("no such delivery file")
        # A disabled organisation's access stops at once (ADR 0023), delivery URLs it already
        # holds included: as for its sharing tokens, the grant itself is left as it is.
        grantee = session.get(Organization, grant.grantee_org_id)
        if grantee is None or grantee.disabled_at is not None:
            raise sealing.TicketInvalid("no such delivery file")
        status = grant.status(now)
        dataset = session.get(Dataset, grant.dataset_id)
        dataset_id, retired = grant.dataset_id, dataset is None or dataset.status == "retired"
    if retired:
        raise DatasetRetired("dataset: the dataset was retired; its deliveries are gone", field="dataset")
    if status != "active":
        raise GrantInactive(f"grant: the grant is {status}; its delivery URLs no longer work", field="grant")
    bucket = settings.s3.delivery_bucket

    def altered() -> NoReturn:
        refuse_altered(sessions, _Refusal(ticket.grant_id, dataset_id, "delivery-url", (ticket.key,), None))

    try:
        size = int(client.stat_object(bucket, ticket.key).size or 0)
        full_header, header = _read_envelope_header(client, bucket, ticket.key, size)
        if sealing.header_digest(full_header) != ticket.envelope_sha256:
            altered()
        decryptor = envelope.RangeDecryptor(
            keys, full_header, header, size, expected=sealing.grant_key_context(dataset_id, ticket.grant_id)
        )
    except IntegrityCheckFailed:
        altered()
    except (KeyDestroyed, KeyNotFound):
        raise GrantInactive(
            "grant: the grant ended and its delivery key was destroyed", field="grant"
        ) from None
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            raise sealing.TicketInvalid("no such delivery file (it was deleted)") from None
        log_.warning(
            "delivery file storage failure", grant=ticket.grant_id, reason=storage.explain(settings.s3, exc)
        )
        raise StorageUnavailable("storage: the delivery store is unavailable; try again later") from None
    except storage.S3_ERRORS as exc:
        log_.warning(
            "delivery file storage failure", grant=ticket.grant_id, reason=storage.explain(settings.s3, exc)
        )
        raise StorageUnavailable("storage: the delivery store is unavailable; try again later") from None
    total = decryptor.plaintext_size
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        "Content-Type": "application/vnd.apache.parquet",
    }
    wanted = _byte_range(range_header, total)
    start, end = wanted if wanted is not None else (0, total - 1)
    headers["Content-Length"] = str(end - start + 1)
    status_code = 200
    if wanted is not None:
        status_code = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    if head:
        return Served(status_code, headers, None)

    def stream() -> Iterator[bytes]:
        offset, length = decryptor.span(start, end)
        response = client.get_object(bucket, ticket.key, offset=offset, length=length)
        try:
            yield from decryptor.decrypt(cast(BinaryIO, response), start, end)
        except IntegrityCheckFailed:
            log_.error("delivery file altered after its URL was issued", grant=ticket.grant_id)
            raise
        finally:
            response.close()
            response.release_conn()

    body = stream()
    try:
        first = next(body, b"")  # the first chunk is checked before the answer starts
    except IntegrityCheckFailed:
        altered()
    except storage.S3_ERRORS as exc:
        log_.warning(
            "delivery file storage failure", grant=ticket.grant_id, reason=storage.explain(settings.s3, exc)
        )
        raise StorageUnavailable("storage: the delivery store is unavailable; try again later") from None
    return Served(status_code, headers, itertools.chain([first], body))
