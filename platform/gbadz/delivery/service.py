"""Deliveries: a grant-scoped copy of a dataset version, logged, then handed out as short-lived URLs.

Order of events (issue #8, invariant 1 of architecture.md):

1. check the grant is active and held by the caller (expired or revoked: no new URLs), and
   decide the transfer again (invariant 7): live counters, evidence validity on the
   Asia/Shanghai date, the current contract and the version being sent; stricter than the
   grant, or its mechanism lapsed: the grant is suspended (its own transaction) and 410;
2. materialise: read the curated Parquet under the grant (only granted columns; encrypted
   columns decrypted by the grant's keys), apply the contract's delivery protections
   (masks; ``drop_on_export`` columns never leave), write Parquet batch by batch into the
   delivery bucket — a failure here logs nothing and hands out nothing;
3. in one transaction: the delivery row, the year-to-date counters (de-duplicated
   individuals) and the transfer-log entry; commit;
4. presign GET URLs (a local computation: it cannot fail half-way).

A retry with the same ``Idempotency-Key`` after a crash between 3 and 4 (within an hour, same
version and contract) reuses the logged delivery and only presigns again: one transfer, and
a ``reissue`` entry in the log for the new URLs.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from minio import Minio
from sqlalchemy.orm import Session, sessionmaker

from gbadz import db, storage
from gbadz.access import determination as determining
from gbadz.access import repository as access_repository
from gbadz.access import service as access_service
from gbadz.access.models import Grant, MechanismEvidence
from gbadz.catalog import repository as catalog_repository
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.catalog.service import stored_contract
from gbadz.compliance import counters
from gbadz.config import Settings
from gbadz.crypto.columns import ColumnProtector, KeyGrant
from gbadz.crypto.keys import KeyProvider
from gbadz.crypto.pseudonym import mask_array
from gbadz.delivery import repository
from gbadz.errors import (
    DatasetRetired,
    GrantInactive,
    GrantNotFound,
    GrantSuspended,
    NoPublishedVersion,
    ObligationsOpen,
    StorageUnavailable,
)
from gbadz.ingest.pipeline import file_sha256
from gbadz.law.rules import RuleSet, default_rules
from gbadz.translog.log import Appended, TransferLog
from gbadz.vocabulary import LOCAL_TIME_ZONES

BATCH_ROWS = 128 * 1024
MASKS = {"mask_last4": "last4", "mask_email": "email"}


@dataclass(frozen=True)
class DeliveredFile:
    key: str
    size: int
    sha256: str
    rows: int


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


def _active_grant(session: Session, grant_id: str, org_id: str, now: datetime) -> Grant:
    grant = repository.held_grant(session, grant_id, org_id)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    status = grant.status(now)
    if status == "suspended":
        raise GrantSuspended(
            f"grant: suspended until a compliance officer reviews it: {grant.suspended_reason}", field="grant"
        )
    if status != "active":
        raise GrantInactive(f"grant: the grant is {status}; no new deliveries or URLs", field="grant")
    return grant


def _preconditions_met(session: Session, grant: Grant) -> None:
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
    manifest = json.loads(
        storage.ObjectStore(client, settings.s3).get_bytes(settings.s3.curated_bucket, version.manifest_key)
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
            digest, size = file_sha256(target)  # streamed: the file may be larger than memory
            key = prefix + target.name
            client.fput_object(settings.s3.delivery_bucket, key, str(target))
            files.append(DeliveredFile(key, size, digest, rows))
    # Distinct individuals as an Arrow array: Python strings are made only if they are counted.
    subjects = pc.unique(pa.concat_arrays(distinct_parts)) if distinct_parts else pa.array([], pa.string())
    return files, columns, pc.cast(subjects, pa.string())


def _delivered(session: Session, grant_id: str, version: int) -> dict[str, Any] | None:
    """The entry of the latest delivery of this grant's copy of ``version``, if any."""
    for text in repository.recent_entries(session, grant_id):
        entry: dict[str, Any] = json.loads(text)
        if entry.get("dataset_version") == version and entry.get("files"):
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
    reuse_files: bool = False,
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
    _preconditions_met(session, grant)
    scoped_key = f"{grant.id}:{idempotency_key}" if idempotency_key is not None else None
    if scoped_key is not None:
        earlier_entry = repository.logged_by_key(session, scoped_key)
        if earlier_entry is not None:
            body = json.loads(earlier_entry.entry)
            if _replayable(body, dataset, version.version, now):
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
                return Delivery(
                    transfer_id=body["transfer_id"],
                    log_index=earlier_entry.index,
                    grant_id=grant.id,
                    dataset_id=body["dataset_id"],
                    version=body["dataset_version"],
                    columns=body["columns"],
                    files=[DeliveredFile(**f) for f in body["files"]],
                    reused=True,
                    appended=appended,
                    access_expiry=grant.expires_at,
                )
            scoped_key = None  # too old, or the data changed: a new, logged delivery
    transfer_id = str(uuid.uuid4())
    earlier = _delivered(session, grant.id, version.version) if reuse_files else None
    try:
        if earlier is not None:
            # The same grant and version were materialised before: hand out those files again
            # (this is still a transfer, logged below), after checking they are still there.
            files = [DeliveredFile(**f) for f in earlier["files"]]
            columns = list(earlier["columns"])
            subjects = pa.array([], pa.string())
            for f in files:
                client.stat_object(settings.s3.delivery_bucket, f.key)
        else:
            files, columns, subjects = materialise(
                client, settings, keys, grant, dataset, version, transfer_id
            )
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(settings.s3, exc)) from None

    # What leaves is counted and logged under the decision taken now (invariant 7), not the
    # one the grant was made with: a grant that became personal is counted, and the log says so.
    decision = redecision.decision.as_dict()
    contract = stored_contract(dataset)
    has_pi, has_spi_columns, spi_categories = contract.classify(columns)
    spi_columns = [c for c in columns if contract.classification(c).spi]
    basis = {"exempt": "exempt", "mechanism": "mechanism"}.get(str(decision.get("counter")))
    exporter = access_repository.organisation(session, dataset.provider_org_id)
    recipient = access_repository.organisation(session, grant.grantee_org_id)
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
    entry: dict[str, Any] = {
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
        "dataset_version": version.version,
        "contract_sha256": dataset.contract_sha256,
        "content_hash": hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest(),
        "files": [f.__dict__ for f in files],
        "columns": columns,
        "category": dataset.category,
        "sector_overlay": contract.gbadz.sector_overlay,
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
    )


def presign(
    client: Minio, settings: Settings, delivery: Delivery, ttl: timedelta, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Short-lived GET URLs, never outliving ``until`` (the grant's end)."""
    now = datetime.now(UTC)
    if until is not None:
        ttl = max(min(ttl, until - now), timedelta(seconds=1))
    expires = now + ttl
    return [
        {
            "url": client.presigned_get_object(settings.s3.delivery_bucket, f.key, expires=ttl),
            "key": f.key,
            "size": f.size,
            "sha256": f.sha256,
            "rows": f.rows,
            "expires_at": expires.isoformat(),
        }
        for f in delivery.files
    ]


@dataclass(frozen=True)
class HandedOut:
    """A logged delivery and its presigned URLs."""

    delivery: Delivery
    links: list[dict[str, Any]]


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
        with db.session_scope(sessions) as session:
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
    if delivery.appended is not None:
        log.committed(delivery.appended)
    links = presign(
        client, settings, delivery, timedelta(seconds=settings.api.delivery_url_ttl_s), delivery.access_expiry
    )
    return HandedOut(delivery, links)


def sweep_ended_grants(sessions: sessionmaker[Session], client: Minio, settings: Settings) -> int:
    """Delete the delivery copies of every grant that ended (expired or revoked) and still has
    them; returns how many grants were swept. Safe to run on several replicas (rows are
    taken with SKIP LOCKED) and to re-run after a storage failure."""
    swept = 0
    with db.session_scope(sessions) as session:
        for grant in access_service.ended_grants_with_copies(session):
            access_service.delete_copies(
                session,
                grant,
                lambda prefix: storage.delete_prefix(
                    client, settings.s3, settings.s3.delivery_bucket, prefix
                ),
            )
            swept += 1
    return swept
