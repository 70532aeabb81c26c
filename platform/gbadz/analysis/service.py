"""Analyses under a grant: estimate, charge the budget, compute inside the zone, release and log.

Order of events of one analysis (issue #18; invariants 1 and 7 of architecture.md):

1. the grant is an active ``analysis`` grant held by the caller (a copy grant has no analyses;
   expired, revoked or suspended: as deliveries answer);
2. the SQL is checked against the contract's allow-list (:func:`gbadz.analysis.query.validate`)
   and the ε asked against the contract's per-query limit, before anything is spent;
3. the transfer is decided again with live facts (``access_service.redecide``): stricter than
   the grant, and the grant is suspended (its own transaction) and 410;
4. **charge**: the budget row is locked and spent, and the analysis row written ``charged``, in a
   transaction of its own that commits before any row is read — two replicas cannot both spend
   the last of a budget, and a query that never finishes has still paid;
5. the published version's needed columns (dimensions, measures, the privacy unit) are read
   from the curated bucket into memory and decrypted by pyarrow under a ``zone-compute``
   principal whose key grant covers exactly those columns (never written to disk in clear);
6. the measurement runs in a child process with no network and bounded time and memory
   (:func:`gbadz.analysis.sandbox.run`);
7. in one transaction: the analysis row ``released`` with its result, and the transfer-log
   entry of the release; commit; answer.

A failure before any row reaches the measurement (storage, a sandbox that cannot start, a
measurement that cannot be built) refunds the charge in a transaction of its own (state
``refunded``, audited with a reason that names no value). A failure *after* the rows reached
the child (its time or memory limit, a crash) keeps the charge (state ``failed``, audited): such
a failure may depend on the data, and refunding it would release that one bit without noise,
again and again. A crash of the process
between 4 and 7 leaves the analysis ``charged`` and its budget spent: conservative on purpose,
since nothing can tell whether a result left; an operator may refund it after checking the log.
A retry with the same ``Idempotency-Key`` returns the released analysis (no second charge, no
second log entry).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy.exc
from minio import Minio
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db, storage
from gbadz.access import service as access_service
from gbadz.access.models import Grant
from gbadz.analysis import measure, query, repository, sandbox
from gbadz.analysis.models import Analysis, AnalysisBudget
from gbadz.analysis.spec import AnalysisSpec
from gbadz.catalog import integrity
from gbadz.catalog import repository as catalog_repository
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.catalog.service import stored_contract
from gbadz.compliance import counters
from gbadz.config import Settings
from gbadz.contract import Contract
from gbadz.crypto.columns import ColumnProtector, KeyGrant
from gbadz.crypto.keys import KeyProvider
from gbadz.delivery import service as delivery_service
from gbadz.delivery.repository import held_grant
from gbadz.errors import (
    Conflict,
    DatasetRetired,
    GrantNotFound,
    GrantSuspended,
    NoPublishedVersion,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StorageUnavailable,
    TooManyRequests,
    Unprocessable,
    WrongGrantKind,
)
from gbadz.law.rules import RuleSet, default_rules
from gbadz.log import get_logger
from gbadz.translog.log import TransferLog

log_ = get_logger(__name__)

#: Rules under which a DP release is anonymised information, no longer personal (rules data).
ANONYMISED_RULES = frozenset({"MA3", "HA3", "OA3"})


class BudgetExhausted(Conflict):
    """The grant's privacy budget cannot pay for the query; the message says what is left."""


class NoAnalyses(Conflict):
    """The dataset's contract allows no analyses (``gbadz.compute.mode: none``)."""


class EpsilonRefused(Unprocessable):
    """The ε asked is not positive or is more than one query may spend."""


class TooLargeForSync(PayloadTooLarge):
    """The published version has more rows than an analysis may read synchronously."""


class AnalysisRateLimited(TooManyRequests):
    """The grant asked for more analyses than its limit allows in the window."""


class AnalysisNotFound(NotFound):
    """No such analysis under this grant (or the grant is not the caller's)."""


class AnalysisInProgress(Conflict):
    """An analysis with this Idempotency-Key is charged and still running (or was interrupted)."""


class ComputeUnavailable(ServiceUnavailable):
    """The zone's compute sandbox could not run the analysis; its charge was refunded."""


class AnalysisFailed(Unprocessable):
    """The measurement could not be built for this query (a reason naming no value); refunded."""


class AnalysisStopped(ServiceUnavailable):
    """The analysis hit its time or memory limit, or its process crashed, after the rows reached it:
    its charge stays spent (a refund would reveal whether the data made it fail)."""


class IdempotencyKeyReused(Unprocessable):
    """An Idempotency-Key already released a different query or ε on this grant."""


@dataclass(frozen=True)
class Budget:
    """A grant's budget as the API shows it (a meter: total, spent, left)."""

    epsilon_total: float
    epsilon_spent: float
    delta_total: float
    delta_spent: float

    @property
    def epsilon_left(self) -> float:
        return max(0.0, round(self.epsilon_total - self.epsilon_spent, 12))

    @property
    def delta_left(self) -> float:
        return max(0.0, self.delta_total - self.delta_spent)

    def as_dict(self) -> dict[str, float]:
        return {
            "epsilon_total": self.epsilon_total,
            "epsilon_spent": round(self.epsilon_spent, 12),
            "epsilon_left": self.epsilon_left,
            "delta_total": self.delta_total,
            "delta_spent": self.delta_spent,
            "delta_left": self.delta_left,
        }


@dataclass(frozen=True)
class Overview:
    grant_id: str
    dataset_id: str
    spec: dict[str, Any]
    budget: Budget


@dataclass(frozen=True)
class Estimated:
    plan: dict[str, Any]
    epsilon: float
    delta: float
    accuracy: list[dict[str, Any]]  # per aggregate: ± at 95% confidence, and the noise scale
    details: dict[str, Any]  # the mechanism's terms: mode, threshold, public keys, contribution bound
    budget: Budget  # before
    budget_after: Budget  # if it were run
    fits: bool  # what is left pays for it (the run is refused with 409 otherwise)


@dataclass(frozen=True)
class Ran:
    """An analysis as answered: its row (a detached snapshot) and the budget after it."""

    analysis: Analysis
    budget: Budget
    reused: bool


# -- the grant -------------------------------------------------------------------------------


def _held(session: Session, grant_id: str, org_id: str) -> Grant:
    grant = held_grant(session, grant_id, org_id)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    if grant.kind != "analysis":
        raise WrongGrantKind("grant: a copy grant has no analyses", field="grant")
    return grant


def _active(session: Session, grant_id: str, org_id: str, now: datetime) -> Grant:
    return delivery_service.still_running(_held(session, grant_id, org_id), now, "no new analyses")


def _dataset(session: Session, grant: Grant) -> tuple[Dataset, DatasetVersion, Contract, AnalysisSpec]:
    dataset = session.get(Dataset, grant.dataset_id)
    if dataset is None or dataset.status == "retired":
        raise DatasetRetired("dataset: the dataset was retired; nothing can be analysed", field="dataset")
    if dataset.current_version is None:
        raise NoPublishedVersion("dataset: no version has been published yet", field="dataset")
    version = catalog_repository.latest_version(session, dataset)
    assert version is not None
    contract = stored_contract(dataset)
    if contract.gbadz.compute.mode == "none":
        raise NoAnalyses(
            "dataset: its contract allows no analyses (gbadz.compute.mode: none)", field="dataset"
        )
    return dataset, version, contract, AnalysisSpec.from_contract(contract)


def _totals(contract: Contract) -> tuple[float, float]:
    """The grant's budget from the contract; a mode without a budget (threshold) spends nothing."""
    budget = contract.gbadz.compute.budget
    return (budget.epsilon, budget.delta) if budget is not None else (0.0, 0.0)


def _budget(session: Session, grant: Grant, contract: Contract) -> Budget:
    row = repository.budget(session, grant.id)
    if row is None:
        epsilon, delta = _totals(contract)
        return Budget(epsilon, 0.0, delta, 0.0)
    return _as_budget(row)


def _as_budget(row: AnalysisBudget) -> Budget:
    return Budget(row.epsilon_total, row.epsilon_spent, row.delta_total, row.delta_spent)


def _epsilon(contract: Contract, settings: Settings, asked: float | None) -> float:
    """The ε a query spends: the one asked, or the contract's per-query limit (else a default)."""
    budget = contract.gbadz.compute.budget
    if budget is None:  # threshold mode: exact aggregates of data with no personal information
        return 0.0
    most = budget.max_epsilon_per_query or budget.epsilon
    if asked is None:
        return budget.max_epsilon_per_query or min(settings.compute.default_epsilon, budget.epsilon)
    if not math.isfinite(asked) or asked <= 0:
        raise EpsilonRefused("epsilon: must be a positive number", field="epsilon")
    if asked > most + repository.SLACK:
        raise EpsilonRefused(
            f"epsilon: {asked:g} is more than one query may spend ({most:g}, the contract's "
            "max_epsilon_per_query)",
            field="epsilon",
        )
    return asked


def _validated(sql: str, spec: AnalysisSpec, grant: Grant) -> Any:
    """The allow-list's plan of ``sql``, which may read only columns the grant names."""
    plan = query.validate(sql, spec)
    missing = [c for c in plan.columns if c not in grant.columns]
    if missing:
        raise query.QueryRefused(
            "column-not-granted", f"the grant does not cover the column(s) {', '.join(missing)}"
        )
    return plan


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- reading -----------------------------------------------------------------------------------


def overview(session: Session, settings: Settings, grant_id: str, org_id: str) -> Overview:
    """What the grant may ask (dimensions, measures, bounds, privacy unit) and its budget.

    An analyst who opens this is about to ask: a spare sandboxed child starts importing now, so
    the first analysis does not wait for Python, Arrow, Polars and OpenDP to load (about 1 s).
    """
    grant = _active(session, grant_id, org_id, datetime.now(UTC))
    dataset, _, contract, spec = _dataset(session, grant)
    sandbox.prewarm(_limits(settings))
    return Overview(grant.id, dataset.id, spec.as_dict(), _budget(session, grant, contract))


def estimate(
    session: Session, settings: Settings, grant_id: str, org_id: str, sql: str, epsilon: float | None
) -> Estimated:
    """What the query would cost and how accurate it would be: reads no row, spends nothing."""
    grant = _active(session, grant_id, org_id, datetime.now(UTC))
    _, _, contract, spec = _dataset(session, grant)
    plan = _validated(sql, spec, grant)
    eps = _epsilon(contract, settings, epsilon)
    found = measure.estimate(plan, spec, eps)
    before = _budget(session, grant, contract)
    after = Budget(
        before.epsilon_total,
        before.epsilon_spent + found.epsilon,
        before.delta_total,
        before.delta_spent + found.delta,
    )
    details = found.as_dict()
    fits = (
        found.epsilon <= before.epsilon_total - before.epsilon_spent + repository.SLACK
        and found.delta <= before.delta_total - before.delta_spent + repository.SLACK
    )
    return Estimated(
        plan.as_dict(), found.epsilon, found.delta, details.pop("accuracy"), details, before, after, fits
    )


def analyses(session: Session, grant_id: str, org_id: str, limit: int) -> list[Analysis]:
    """The grant's analyses, newest first (its history stays readable after the grant ends)."""
    grant = _held(session, grant_id, org_id)
    return list(repository.listed(session, grant.id, limit))


def analysis(session: Session, grant_id: str, org_id: str, analysis_id: str) -> tuple[Analysis, Budget]:
    grant = _held(session, grant_id, org_id)
    found = repository.of_grant(session, grant.id, analysis_id)
    if found is None:
        raise AnalysisNotFound(f"no analysis {analysis_id!r} under this grant")
    return found, _budget(session, grant, stored_contract_of(session, grant))


def stored_contract_of(session: Session, grant: Grant) -> Contract:
    dataset = session.get(Dataset, grant.dataset_id)
    if dataset is None:  # pragma: no cover - a grant's dataset row is never deleted
        raise GrantNotFound(f"no grant {grant.id!r}")
    return stored_contract(dataset)


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Charged:
    analysis_id: str
    grant_id: str
    dataset_id: str
    version: int
    manifest_key: str
    manifest_sha256: str | None
    expires_at: datetime
    columns: tuple[str, ...]
    plan: Any
    spec: AnalysisSpec
    epsilon: float
    delta: float
    redecision: Any


def _rate_limited(session: Session, settings: Settings, grant_id: str, now: datetime) -> None:
    """At most ``compute.limit`` analyses per grant per window, counted in the database (every
    replica sees the same count); estimates are free."""
    limit, window = settings.compute.limit, timedelta(seconds=settings.compute.limit_window_s)
    wait = delivery_service.window_wait(
        repository.charged_since(session, grant_id, now - window), limit, window, now
    )
    if wait is None:
        return
    raise AnalysisRateLimited(
        f"grant: at most {limit} analyses per {int(window.total_seconds())} s; try again in {wait} s",
        headers={"Retry-After": str(wait)},
        field="grant",
    )


def _charge(
    session: Session,
    *,
    settings: Settings,
    rules: RuleSet,
    grant_id: str,
    org_id: str,
    actor: str,
    sql: str,
    epsilon: float | None,
    idempotency_key: str | None,
    now: datetime,
) -> _Charged | Analysis:
    """Steps 1-4: check, decide again, and charge; an earlier release with the same key instead."""
    grant = _active(session, grant_id, org_id, now)
    if idempotency_key is not None:
        earlier = repository.by_key(session, grant.id, idempotency_key)
        if earlier is not None and earlier.state == "released":
            if (earlier.sql, epsilon) != (sql, earlier.epsilon) and not (
                epsilon is None and earlier.sql == sql
            ):
                raise IdempotencyKeyReused(
                    "Idempotency-Key: already used for another query or ε on this grant; use a new key",
                    field="Idempotency-Key",
                )
            return earlier
        if earlier is not None and earlier.state == "charged":
            raise AnalysisInProgress(
                "Idempotency-Key: an analysis with this key is charged and has not finished; "
                "its budget stays spent until it ends",
                field="Idempotency-Key",
            )
        if earlier is not None:  # refunded or failed: the key may be used again for a new attempt
            earlier.idempotency_key = None
            session.flush()
    dataset, version, contract, spec = _dataset(session, grant)
    plan = _validated(sql, spec, grant)
    eps = _epsilon(contract, settings, epsilon)
    if version.row_count > settings.compute.rows_sync_max:
        raise TooLargeForSync(
            f"dataset: version {version.version} has {version.row_count:,} rows, more than "
            f"{settings.compute.rows_sync_max:,}: too large for a synchronous analysis",
            field="dataset",
        )
    # Every release is decided again, like every delivery (invariant 7).
    redecision = access_service.redecide(session, grant, dataset, version.version, now, rules)
    delivery_service.preconditions_met(session, grant)
    _rate_limited(session, settings, grant.id, now)
    cost = measure.estimate(plan, spec, eps)
    total_epsilon, total_delta = _totals(contract)
    repository.ensure_budget(session, grant.id, total_epsilon, total_delta)
    row = repository.budget(session, grant.id, lock=True)
    assert row is not None
    if not repository.charge(session, grant.id, cost.epsilon, cost.delta):
        left = _as_budget(row)
        raise BudgetExhausted(
            f"epsilon: {cost.epsilon:g} asked, {left.epsilon_left:g} left of {left.epsilon_total:g}"
            + (
                f"; delta: {cost.delta:g} asked, {left.delta_left:g} left of {left.delta_total:g}"
                if cost.delta > left.delta_left
                else ""
            ),
            field="epsilon",
        )
    analysis_row = repository.add(
        session,
        Analysis(
            id=str(uuid.uuid4()),
            grant_id=grant.id,
            dataset_id=dataset.id,
            dataset_version=version.version,
            sql=sql,
            query_sha256=plan.query_sha256 or _sha256(sql),
            epsilon=cost.epsilon,
            delta=cost.delta,
            state="charged",
            actor=actor[:200],
            idempotency_key=idempotency_key,
            created_at=now,
        ),
    )
    return _Charged(
        analysis_row.id,
        grant.id,
        dataset.id,
        version.version,
        version.manifest_key,
        version.manifest_sha256,
        grant.expires_at,
        # What the query reads, plus the privacy unit its contribution bounds are counted by.
        measure.columns_needed(plan, spec),
        plan,
        spec,
        cost.epsilon,
        cost.delta,
        redecision,
    )


def read_columns(client: Minio, settings: Settings, keys: KeyProvider, charged: _Charged) -> pa.Table:
    """The version's needed columns, decrypted in memory under the zone-compute principal.

    The key grant names exactly the columns the query needs: pyarrow's KMS client unwraps no
    other column key. Objects are read into memory (never a temporary file): the plaintext of
    a protected column exists only in this process and the sandbox child.
    """
    store = storage.ObjectStore(client, settings.s3)
    manifest = integrity.manifest(
        store.get_bytes(settings.s3.curated_bucket, charged.manifest_key),
        dataset_id=charged.dataset_id,
        version=charged.version,
        key=charged.manifest_key,
        expected=charged.manifest_sha256,
    )
    principal = f"zone-compute:{charged.grant_id}"
    key_grant = KeyGrant(
        principal, charged.dataset_id, str(charged.version), frozenset(charged.columns), charged.expires_at
    )
    props = ColumnProtector(keys).decryption_properties(principal, lambda _gid: key_grant)
    parts = []
    for item in manifest["files"]:
        data = store.get_bytes(settings.s3.curated_bucket, item["key"])
        integrity.check_part(
            item, hashlib.sha256(data).hexdigest(), dataset_id=charged.dataset_id, version=charged.version
        )
        reader = pq.ParquetFile(pa.BufferReader(data), decryption_properties=props)
        parts.append(reader.read(columns=list(charged.columns)))
        del data
    if not parts:
        raise StorageUnavailable("storage: the published version lists no files")
    return pa.concat_tables(parts)


def _fail(sessions: sessionmaker[Session], charged: _Charged, reason: str) -> None:
    """Record a failure after the rows reached the measurement: the charge stays (its own transaction)."""
    with db.session_scope(sessions) as session:
        row = repository.of_grant(session, charged.grant_id, charged.analysis_id, lock=True)
        if row is None or row.state != "charged":
            return
        row.state, row.error, row.finished_at = "failed", reason, datetime.now(UTC)
        audit.record(
            session,
            actor="gbadz",
            action="analysis.failed",
            subject_type="grant",
            subject_id=charged.grant_id,
            details={"analysis": row.id, "epsilon": row.epsilon, "delta": row.delta, "reason": reason},
        )


def _refund(sessions: sessionmaker[Session], charged: _Charged, reason: str) -> None:
    """Give the charge back (its own transaction) and record why, naming no value."""
    with db.session_scope(sessions) as session:
        row = repository.of_grant(session, charged.grant_id, charged.analysis_id, lock=True)
        if row is None or row.state != "charged":
            return
        repository.budget(session, charged.grant_id, lock=True)
        repository.refund(session, charged.grant_id, row.epsilon, row.delta)
        row.state, row.error, row.finished_at = "refunded", reason, datetime.now(UTC)
        audit.record(
            session,
            actor="gbadz",
            action="analysis.refunded",
            subject_type="grant",
            subject_id=charged.grant_id,
            details={"analysis": row.id, "epsilon": row.epsilon, "delta": row.delta, "reason": reason},
        )


def mechanism_text() -> str:
    try:
        version = metadata.version("opendp")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency of gbadz
        version = "?"
    return f"OpenDP {version}: Laplace noise on bounded counts and sums, per-person contribution bounds"


def _release_entry(
    session: Session,
    *,
    grant: Grant,
    dataset: Dataset,
    charged: _Charged,
    row: Analysis,
    result: Any,
    transfer_id: str,
    now: datetime,
    actor: str,
    rules: RuleSet,
) -> dict[str, Any]:
    """The transfer-log entry of a release: the decision half shared with copies, and what left."""
    contract = stored_contract(dataset)
    spec = charged.spec.as_dict()
    rule_id = charged.redecision.decision.rule_id
    # What the rows measured were (the privacy unit included): the release itself holds no row.
    has_pi, has_spi, spi_categories = contract.classify(list(charged.columns))
    entry = delivery_service.transfer_record(
        session,
        grant=grant,
        dataset=dataset,
        version=charged.version,
        redecision=charged.redecision,
        transfer_id=transfer_id,
        now=now,
        actor=actor,
        mode="release",
        rules=rules,
    )
    return entry | {
        "release": {
            "analysis_id": row.id,
            "query_sha256": row.query_sha256,
            "sql": row.sql,
            "plan": charged.plan.as_dict(),
            "epsilon": row.epsilon,
            "delta": row.delta,
            "privacy_unit": spec.get("privacy_unit"),
            "max_rows_per_person": spec.get("max_rows_per_person"),
            "bounds": {m["name"]: [m["minimum"], m["maximum"]] for m in spec.get("measures") or []},
            "min_group_size": spec.get("min_group_size"),
            "mechanism": mechanism_text(),
        },
        "result_sha256": result.result_sha256,
        "content_hash": result.result_sha256,
        "columns": list(result.columns),
        "source_columns": list(charged.columns),
        "has_pi": has_pi,
        "has_spi": has_spi,
        "spi_categories": spi_categories,
        # A DP aggregate is anonymised information when the rules say so (MA3/HA3/OA3), or when
        # the data held no personal information; otherwise an aggregate the law still reviews.
        "deid_status": "anonymised" if rule_id in ANONYMISED_RULES or not dataset.has_pi else "aggregated",
        "n_individuals": 0,
        "counting_method": "none: an aggregate release sends no individual's record",
        # The counter year it falls in (the officer's report sums releases and ε per exporter and year).
        "counter_year": counters.counter_year(now, rules),
        "counter_basis": "none",
        "pi_ytd_before": None,
        "pi_ytd_after": None,
        "spi_ytd_before": None,
        "spi_ytd_after": None,
    }


def run(
    sessions: sessionmaker[Session],
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    log: TransferLog,
    grant_id: str,
    org_id: str,
    actor: str,
    sql: str,
    epsilon: float | None = None,
    idempotency_key: str | None = None,
    rules: RuleSet | None = None,
) -> Ran:
    """One analysis, in the order of the module's docstring. Commits inside (a use case that must
    be durable before it acts: the charge before the rows are read, the log before the answer)."""
    rules = rules or default_rules()
    now = datetime.now(UTC)
    try:
        with db.session_scope(sessions) as session:
            charged = _charge(
                session,
                settings=settings,
                rules=rules,
                grant_id=grant_id,
                org_id=org_id,
                actor=actor,
                sql=sql,
                epsilon=epsilon,
                idempotency_key=idempotency_key,
                now=now,
            )
            if isinstance(charged, Analysis):
                contract = stored_contract_of(session, _held(session, grant_id, org_id))
                return Ran(charged, _budget(session, charged_grant(session, grant_id), contract), True)
    except access_service.SuspendGrant as stop:
        with db.session_scope(sessions) as session:
            access_service.suspend_grant(session, stop.grant_id, stop.reason, stop.redecision)
        raise GrantSuspended(f"grant: suspended: {stop.reason}", field="grant") from None
    except sqlalchemy.exc.IntegrityError:
        # The same Idempotency-Key sent twice at once: the other request charged; nothing was here.
        with db.session_scope(sessions) as session:
            earlier = repository.by_key(session, grant_id, idempotency_key or "")
            if earlier is not None and earlier.state == "released":
                contract = stored_contract_of(session, _held(session, grant_id, org_id))
                return Ran(earlier, _budget(session, charged_grant(session, grant_id), contract), True)
        raise AnalysisInProgress(
            "Idempotency-Key: an analysis with this key is charged and has not finished",
            field="Idempotency-Key",
        ) from None
    try:
        started = time.perf_counter()
        table = read_columns(client, settings, keys, charged)
        read = time.perf_counter()
        result = sandbox.run(table, charged.plan, charged.spec, charged.epsilon, _limits(settings))
        computed = time.perf_counter()
    except StorageUnavailable:
        _refund(sessions, charged, "storage: the curated store was unavailable")
        raise
    except integrity.PublishedVersionAltered:
        # Refused before any row reached the measurement: nothing was learnt, nothing spent.
        _refund(sessions, charged, "storage: a stored file no longer matches its recorded SHA-256")
        raise
    except storage.S3_ERRORS as exc:
        log_.warning("analysis storage failure", grant=grant_id, reason=storage.explain(settings.s3, exc))
        _refund(sessions, charged, "storage: the curated store was unavailable")
        raise StorageUnavailable("storage: the curated store is unavailable; try again later") from None
    except sandbox.SandboxUnavailable as exc:
        log_.warning("analysis sandbox unavailable", grant=grant_id, reason=exc.detail)
        _refund(sessions, charged, "compute: the sandbox was unavailable")
        raise ComputeUnavailable(
            "compute: the zone's sandbox could not run the analysis; nothing was spent, try again later"
        ) from None
    except sandbox.AnalysisFailed as exc:
        # Time or memory limit, or a crash, once the rows reached the child: the charge stays (a
        # refund would tell, for free, whether the data made it fail). The message names the
        # limit, never a value.
        _fail(sessions, charged, exc.detail)
        raise AnalysisStopped(
            f"analysis: {exc.detail}; its ε stays spent (a refund would reveal whether the data made it fail)",
            field="sql",
        ) from None
    except measure.MeasurementFailed as exc:
        _refund(sessions, charged, exc.detail)
        raise AnalysisFailed(f"analysis: {exc.detail}; nothing was spent", field="sql") from None
    except Exception:
        log_.exception("analysis failed unexpectedly", grant=grant_id, analysis=charged.analysis_id)
        _refund(sessions, charged, "internal error")
        raise
    with db.session_scope(sessions) as session:
        grant = charged_grant(session, grant_id)
        dataset = session.get(Dataset, charged.dataset_id)
        row = repository.of_grant(session, grant_id, charged.analysis_id, lock=True)
        assert dataset is not None
        assert row is not None
        transfer_id = str(uuid.uuid4())
        finished = datetime.now(UTC)
        entry = _release_entry(
            session,
            grant=grant,
            dataset=dataset,
            charged=charged,
            row=row,
            result=result,
            transfer_id=transfer_id,
            now=finished,
            actor=actor,
            rules=rules,
        )
        appended = log.append(session, entry, kind="release", grant_id=grant_id)
        row.state, row.finished_at = "released", finished
        row.columns, row.rows = list(result.columns), _jsonable(result.rows)
        row.accuracy = [a.as_dict() for a in result.accuracy]
        row.result_sha256, row.transfer_id, row.log_index = result.result_sha256, transfer_id, appended.index
        session.flush()
        budget = _budget(session, grant, stored_contract(dataset))
    log.committed(appended)
    # Where an analysis spends its time (for operators; names no value): reading and decrypting
    # the columns, the sandboxed measurement, and logging the release.
    log_.info(
        "analysis released",
        grant=grant_id,
        analysis=row.id,
        rows=table.num_rows,
        read_ms=round((read - started) * 1000),
        compute_ms=round((computed - read) * 1000),
        log_ms=round((time.perf_counter() - computed) * 1000),
    )
    return Ran(row, budget, False)


def charged_grant(session: Session, grant_id: str) -> Grant:
    grant = session.get(Grant, grant_id)
    if grant is None:  # pragma: no cover - a grant row is never deleted
        raise GrantNotFound(f"no grant {grant_id!r}")
    return grant


def _limits(settings: Settings) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=settings.compute.timeout_s,
        memory_bytes=settings.compute.memory_mb * 2**20,
        # The home holds the keyring, the SQLite file and the embedded storage's sockets.
        hidden=_hidden_from_compute(settings),
    )


def _hidden_from_compute(settings: Settings) -> tuple[str, ...]:
    """The gbadz home and the keyring's folder, unless one holds the interpreter or gbadz itself
    (hiding those would stop the child; a home laid out that way is only hidden by its mode)."""
    needed = [Path(sys.prefix).resolve(), Path(sys.executable).resolve(), Path(__file__).resolve()]
    always = [Path(d).resolve() for d in sandbox.HIDDEN_DIRS]
    hidden = []
    for folder in (Path(settings.home).resolve(), settings.keyring_path.resolve().parent):
        if any(folder == d or d in folder.parents for d in always):
            continue  # hidden already (a home under /tmp): the same limits, so spares are reused
        if not any(path == folder or folder in path.parents for path in needed):
            hidden.append(str(folder))
    return tuple(dict.fromkeys(hidden))


def _jsonable(rows: Any) -> list[Any]:
    """Rows as JSON stores them (dates as ISO text), so a stored release answers as it was released."""
    loaded: list[Any] = json.loads(json.dumps(rows, default=str))
    return loaded
