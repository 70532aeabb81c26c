"""Uploads trigger Airflow (``GBADZ_INGEST__WORKER_MODE=airflow``, ADR 0026).

A queued upload is claimed the way ADR 0024's worker claims one (one conditional UPDATE, SKIP
LOCKED on PostgreSQL, one dataset's uploads one at a time), but the claimant is the Airflow run:
``claimed_by = "airflow:<dag run id>"``. The DAG run id is derived from the run id and the
upload's SHA-256, so however often gbadz triggers (two replicas, a replayed loop, a trigger whose
answer was lost), Airflow creates one run and answers 409 to the others. Airflow retries a task
under the same DAG run, so a retried task holds the same claim and is never refused.

When Airflow cannot be reached or refuses, the upload goes back to ``queued`` with the reason
(no secret, no address, no value) and a time for the next try (exponential backoff); the loop
tries again then. While Airflow runs it, the loop reads the run's state and its tasks' states into
the ingestion run (the provider's API and console show them) and refreshes the claim's time; a
DAG run that ended ``failed`` before the tasks stored an outcome fails the ingestion run, naming
the task (the landed upload is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db
from gbadz.catalog.models import IngestionRun
from gbadz.config import Settings
from gbadz.ingest.airflow import AirflowClient, AirflowUnavailable, RunState, dag_run_id
from gbadz.ingest.worker import lock_run_and_dataset
from gbadz.log import get_logger

log = get_logger("gbadz.ingest.trigger")
ACTOR = "system:airflow-trigger"
CLAIM_PREFIX = "airflow:"
#: Runs whose Airflow state is read per tick, and uploads triggered per tick, at most.
BATCH = 50


def claim_of(airflow_run_id: str) -> str:
    """The claim an upload's Airflow run holds (and every retried task of it)."""
    return (CLAIM_PREFIX + airflow_run_id)[:100]


def backoff_s(settings: Settings, attempts: int) -> float:
    """How long to wait after the ``attempts``-th failed trigger: doubling, capped."""
    air = settings.airflow
    return float(min(air.retry_max_s, air.retry_min_s * 2 ** max(0, min(attempts - 1, 30))))


@dataclass(frozen=True)
class Claimed:
    run_id: int
    dataset_id: str
    airflow_run_id: str
    attempts: int


def claim(
    sessions: sessionmaker[Session], stale_after_s: float, *, only: int | None = None
) -> Claimed | None:
    """Claim the oldest queued upload whose next try is due (``only``: that upload alone) for an
    Airflow run; None if none may be triggered now."""
    from gbadz.ingest.worker import _claimable

    now = datetime.now(UTC)
    stale = now - timedelta(seconds=stale_after_s)
    due = sa.or_(IngestionRun.next_trigger_at.is_(None), IngestionRun.next_trigger_at <= now)
    where = [_claimable(stale), due]
    if only is not None:
        where.append(IngestionRun.id == only)
    with db.session_scope(sessions) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        candidates = session.execute(
            sa.select(
                IngestionRun.id,
                IngestionRun.dataset_id,
                IngestionRun.source_sha256,
                IngestionRun.airflow_run_id,
                IngestionRun.trigger_attempts,
            )
            .where(*where)
            .order_by(IngestionRun.id)
            .limit(20)
        ).all()
        for run_id, dataset_id, sha, previous, attempts in candidates:
            if postgres and not lock_run_and_dataset(session, run_id, dataset_id):
                continue
            # A run tried before keeps its id (Airflow may have created it although the answer was
            # lost: the next trigger then gets 409); a run an operator queued again gets a new one.
            airflow_id = previous or dag_run_id(int(run_id), str(sha), int(attempts or 0))
            same_id = (
                IngestionRun.airflow_run_id.is_(None)
                if previous is None
                else IngestionRun.airflow_run_id == previous
            )
            claimed = session.execute(
                sa.update(IngestionRun)
                .where(IngestionRun.id == run_id, same_id, *where)
                .values(
                    status="running",
                    started_at=now,
                    claimed_by=claim_of(airflow_id),
                    airflow_run_id=airflow_id,
                    trigger_attempts=IngestionRun.trigger_attempts + 1,
                    summary="triggering the ingest DAG in Airflow",
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            return Claimed(int(run_id), str(dataset_id), airflow_id, int(attempts or 0) + 1)
        return None


def _triggered(sessions: sessionmaker[Session], claimed: Claimed, created: bool, state: str | None) -> None:
    with db.session_scope(sessions) as session:
        done = session.execute(
            sa.update(IngestionRun)
            .where(
                IngestionRun.id == claimed.run_id,
                IngestionRun.status == "running",
                IngestionRun.claimed_by == claim_of(claimed.airflow_run_id),
            )
            .values(
                summary=f"running in Airflow (DAG run {claimed.airflow_run_id})",
                airflow_state=state or ("queued" if created else None),
                trigger_error=None,
                next_trigger_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount:  # type: ignore[attr-defined]
            audit.record(
                session,
                actor=ACTOR,
                action="ingestion.started",
                subject_type="dataset",
                subject_id=claimed.dataset_id,
                details={
                    "run": claimed.run_id,
                    "worker": "airflow",
                    "airflow_run_id": claimed.airflow_run_id,
                    "created": created,
                },
            )


def _trigger_failed(
    sessions: sessionmaker[Session], settings: Settings, claimed: Claimed, reason: str
) -> None:
    """Back in the queue with the reason and the time of the next try. The claim and the DAG run
    id stay: if Airflow did create the run although its answer was lost, that run's tasks still
    hold the claim and the next trigger is answered 409."""
    wait = backoff_s(settings, claimed.attempts)
    when = datetime.now(UTC) + timedelta(seconds=wait)
    with db.session_scope(sessions) as session:
        done = session.execute(
            sa.update(IngestionRun)
            .where(
                IngestionRun.id == claimed.run_id,
                IngestionRun.status == "running",
                IngestionRun.claimed_by == claim_of(claimed.airflow_run_id),
            )
            .values(
                status="queued",
                started_at=None,
                trigger_error=reason[:500],
                next_trigger_at=when,
                summary=(
                    f"queued: Airflow could not start it ({reason}); tried {claimed.attempts} "
                    f"time(s), next try at {when:%Y-%m-%d %H:%M:%S} UTC"
                )[:2000],
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount and claimed.attempts == 1:  # type: ignore[attr-defined]
            audit.record(
                session,
                actor=ACTOR,
                action="ingestion.trigger_deferred",
                subject_type="dataset",
                subject_id=claimed.dataset_id,
                details={"run": claimed.run_id, "reason": reason[:200]},
            )


def trigger(
    sessions: sessionmaker[Session],
    client: AirflowClient,
    settings: Settings,
    *,
    only: int | None = None,
    timeout: float | None = None,
) -> Claimed | None:
    """Claim one queued upload (``only``: that one) and trigger its Airflow run; None if none was
    due. A failed trigger is not raised: the upload is queued again with the reason."""
    claimed = claim(sessions, settings.ingest.worker_timeout_s, only=only)
    if claimed is None:
        return None
    try:
        started = client.trigger(claimed.airflow_run_id, {"upload": claimed.run_id}, timeout=timeout)
    except AirflowUnavailable as exc:
        log.warning(
            "airflow trigger deferred",
            run=claimed.run_id,
            airflow=client.where,
            reason=exc.reason,
            attempts=claimed.attempts,
        )
        _trigger_failed(sessions, settings, claimed, exc.reason)
        raise
    except Exception as exc:
        # Anything else (a bug, a broken answer): the upload must not stay claimed by nobody.
        _trigger_failed(sessions, settings, claimed, f"trigger failed ({type(exc).__name__})")
        raise
    _triggered(sessions, claimed, started.created, started.state)
    log.info(
        "airflow run triggered",
        run=claimed.run_id,
        airflow_run_id=claimed.airflow_run_id,
        created=started.created,
    )
    return claimed


def trigger_now(
    sessions: sessionmaker[Session], client: AirflowClient, settings: Settings, run_id: int
) -> bool:
    """The upload route's attempt, with the short timeout: True if Airflow has the run now."""
    try:
        return (
            trigger(sessions, client, settings, only=run_id, timeout=settings.airflow.trigger_timeout_s)
            is not None
        )
    except AirflowUnavailable:
        return False
    except Exception as exc:  # noqa: BLE001 - the upload is landed and queued: accepted whatever happens here
        log.warning("airflow trigger failed; the loop retries", run=run_id, error=type(exc).__name__)
        return False


def _watched(session: Session) -> list[tuple[int, str]]:
    """Runs gbadz handed to Airflow whose DAG run has not ended (as far as gbadz knows)."""
    rows = session.execute(
        sa.select(IngestionRun.id, IngestionRun.airflow_run_id)
        .where(
            IngestionRun.airflow_run_id.is_not(None),
            IngestionRun.status != "queued",
            sa.or_(
                IngestionRun.airflow_state.is_(None),
                IngestionRun.airflow_state.not_in(("success", "failed", "missing")),
            ),
            IngestionRun.claimed_by == sa.literal(CLAIM_PREFIX) + IngestionRun.airflow_run_id,
        )
        .order_by(IngestionRun.id)
        .limit(BATCH)
    ).all()
    return [(int(r), str(a)) for r, a in rows]


def _apply(
    sessions: sessionmaker[Session], run_id: int, airflow_id: str, seen: RunState | None, grace_s: float = 0.0
) -> None:
    with db.session_scope(sessions) as session:
        run = session.get(IngestionRun, run_id, with_for_update=True)
        if run is None or run.airflow_run_id != airflow_id or run.claimed_by != claim_of(airflow_id):
            return
        if seen is None:
            claimed_at = run.started_at or datetime.now(UTC)
            if run.status == "running" and claimed_at < datetime.now(UTC) - timedelta(seconds=grace_s):
                # Airflow has no such run, well after the claim (not a trigger still on its way):
                # the trigger was never sent (the replica stopped between the claim and the call).
                # Queue it again: the same id is triggered next.
                run.status, run.started_at = "queued", None
                run.summary = "queued: Airflow has no run for it yet; triggering again"
                run.next_trigger_at = None
            elif run.status != "running":
                run.airflow_state = "missing"
            return
        run.airflow_state = seen.state[:32]
        if seen.tasks:
            run.task_states = dict(seen.tasks)
        if run.status != "running":
            return
        if not seen.final:
            run.started_at = datetime.now(UTC)  # the claim is alive while Airflow runs it
            run.summary = f"running in Airflow (DAG run {airflow_id}: {seen.state})"[:2000]
            return
        task = seen.failing_task()
        why = f"failed at task {task}" if task else f"ended {seen.state} without recording a result"
        run.status = "failed"
        run.finished_at = datetime.now(UTC)
        run.summary = (
            f"the Airflow run {airflow_id} {why}; the upload is kept: the operator can queue it "
            f"again (gbadz ingest-requeue {run_id}) after a look at the task's log in Airflow"
        )[:2000]
        audit.record(
            session,
            actor=ACTOR,
            action="ingestion.failed",
            subject_type="dataset",
            subject_id=run.dataset_id,
            details={
                "run": run_id,
                "airflow_run_id": airflow_id,
                "error": why[:200],
                "tasks": run.task_states,
            },
        )


def sync(sessions: sessionmaker[Session], client: AirflowClient) -> int:
    """Read the state of every watched Airflow run into its ingestion run; how many were read."""
    with sessions() as session:
        watched = _watched(session)
    # A run Airflow does not know yet may be a trigger still in flight on another thread or replica.
    grace = max(60.0, 3 * client.settings.timeout_s)
    for run_id, airflow_id in watched:
        _apply(sessions, run_id, airflow_id, client.run_state(airflow_id), grace)
    return len(watched)


class AirflowTrigger:
    """The worker loop's work in airflow mode: read the running runs back, then trigger what is due."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], client: AirflowClient) -> None:
        self.settings = settings
        self.sessions = sessions
        self.client = client

    def drain(self) -> int:
        """One tick: how many uploads were triggered. Stops triggering at the first failure (the
        next tick, or the backoff, tries again) so an Airflow that is down is not hammered."""
        try:
            sync(self.sessions, self.client)
        except AirflowUnavailable as exc:
            log.warning("airflow state not read", airflow=self.client.where, reason=exc.reason)
        started = 0
        for _ in range(BATCH):
            try:
                if trigger(self.sessions, self.client, self.settings) is None:
                    break
            except AirflowUnavailable:
                break
            started += 1
        return started
