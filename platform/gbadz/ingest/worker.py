"""The embedded ingest worker: queued uploads run through the ingest DAG without an operator.

An upload lands queued (``gbadz.ingest.uploads``). With ``GBADZ_INGEST__WORKER=true`` (the
default of ``gbadz serve``) the API process polls for queued runs on its background pool
(``gbadz.background.every``: a worker thread, never the event loop), claims the oldest one and
runs it through the real ingest DAG in a child process (``gbadz ingest-upload``: Airflow's
``dag.test()``, Great Expectations, pandas), so a large file's memory and CPU never live in the
API process and a crash of the DAG cannot take the API down.

Claiming is one conditional UPDATE (``queued`` -> ``running`` where it is still queued),
preceded on PostgreSQL by ``SELECT ... FOR UPDATE SKIP LOCKED``: two replicas (or a replica
and ``gbadz ingest-queued``) never run one upload twice, and neither waits for the other's
lock. A run left ``running`` longer than ``worker_timeout_s`` (its replica was lost) is
claimed again. The DAG's task states are stored with the run; a DAG that ends without a
result marks the run ``failed`` (the landed upload is kept, so nothing is lost).

With ``worker_mode=inline`` the DAG's steps run in the worker thread instead (no Airflow or
Great Expectations start-up per upload; each step's state is stored as it ends): for small
uploads, the demo and tests. ADR 0024.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db
from gbadz.catalog.models import Dataset, IngestionRun
from gbadz.catalog.service import stored_contract
from gbadz.config import Settings, child_environment
from gbadz.errors import GbadzError
from gbadz.ingest import pipeline
from gbadz.ingest.validate import validate_stream, without_values
from gbadz.log import get_logger

log = get_logger("gbadz.ingest.worker")
ACTOR = "system:ingest-worker"


def worker_name() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}"


def lock_run_and_dataset(session: Session, run_id: int, dataset_id: str) -> bool:
    """On PostgreSQL: lock the run's and its dataset's rows, skipping either if another worker holds
    it (``SKIP LOCKED``), so two replicas never claim one upload, nor two uploads of one dataset."""
    locked = session.execute(
        sa.select(IngestionRun.id).where(IngestionRun.id == run_id).with_for_update(skip_locked=True)
    ).first()
    dataset_free = session.execute(
        sa.select(Dataset.id).where(Dataset.id == dataset_id).with_for_update(skip_locked=True)
    ).first()
    return locked is not None and dataset_free is not None


def _claimable(stale: datetime) -> sa.ColumnElement[bool]:
    """Queued, or left running by a lost worker; and no other run of its dataset is running now
    (two runs of one dataset at once would race for its next version)."""
    other = sa.orm.aliased(IngestionRun)
    busy = (
        sa.select(other.id)
        .where(
            other.dataset_id == IngestionRun.dataset_id,
            other.id != IngestionRun.id,
            other.status == "running",
            other.started_at >= stale,
        )
        .exists()
    )
    # A run an Airflow DAG run holds (ADR 0026) is never taken over for being quiet: Airflow
    # retries its tasks under the same claim, and the trigger loop watches it instead.
    held_by_worker = sa.or_(
        IngestionRun.claimed_by.is_(None), ~IngestionRun.claimed_by.startswith("airflow:")
    )
    return sa.and_(
        sa.or_(
            IngestionRun.status == "queued",
            sa.and_(IngestionRun.status == "running", IngestionRun.started_at < stale, held_by_worker),
        ),
        ~busy,
    )


def claim_next(sessions: sessionmaker[Session], worker: str, stale_after_s: float) -> int | None:
    """Claim the oldest queued upload (or one left running by a lost worker); None if none.

    Never a run whose dataset has another run running: one dataset's uploads run one at a time.
    On PostgreSQL the run's and its dataset's rows are locked (SKIP LOCKED) in the claiming
    transaction, so two workers cannot both see the dataset idle; on SQLite the conditional
    UPDATE runs under the database's single write lock.
    """
    stale = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    with db.session_scope(sessions) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        candidates = session.execute(
            sa.select(IngestionRun.id, IngestionRun.dataset_id, IngestionRun.status)
            .where(_claimable(stale))
            .order_by(IngestionRun.id)
            .limit(20)
        ).all()
        for run_id, dataset_id, before in candidates:
            if postgres and not lock_run_and_dataset(session, run_id, dataset_id):
                continue
            # The same condition again, now under the locks (PostgreSQL) or the write lock (SQLite).
            claimed = session.execute(
                sa.update(IngestionRun)
                .where(IngestionRun.id == run_id, _claimable(stale))
                .values(
                    status="running",
                    started_at=datetime.now(UTC),
                    claimed_by=worker[:100],
                    summary="running the ingest DAG",
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            audit.record(
                session,
                actor=ACTOR,
                action="ingestion.started",
                subject_type="dataset",
                subject_id=dataset_id,
                details={"run": run_id, "worker": worker[:100], "reclaimed": before == "running"},
            )
            return int(run_id)
        return None


def heartbeat(sessions: sessionmaker[Session], run_id: int, worker: str) -> bool:
    """The claimant is still working: refresh the claim's time (False: the claim was lost)."""
    with db.session_scope(sessions) as session:
        done = session.execute(
            sa.update(IngestionRun)
            .where(
                IngestionRun.id == run_id,
                IngestionRun.status == "running",
                IngestionRun.claimed_by == worker[:100],
            )
            .values(started_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


@contextmanager
def beating(sessions: sessionmaker[Session], run_id: int, worker: str, timeout_s: float) -> Iterator[None]:
    """Keep a claim fresh while its upload runs, for at most ``timeout_s``: a run that outlives
    its timeout (a stuck inline step, a long ``gbadz ingest-queued`` run) goes stale and may be
    claimed again; the late claimant's finish is then refused (the claim is checked)."""
    stop = threading.Event()
    interval = max(0.05, min(timeout_s / 4, 30.0))
    deadline = time.monotonic() + timeout_s

    def beat() -> None:
        while not stop.wait(interval) and time.monotonic() < deadline:
            try:
                if not heartbeat(sessions, run_id, worker):
                    return
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the run goes on
                log.warning("ingest heartbeat failed", run=run_id, error=type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"gbadz-ingest-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def finish(
    sessions: sessionmaker[Session],
    run_id: int,
    task_states: dict[str, str],
    error: str | None,
    worker: str | None = None,
) -> str:
    """Store the DAG's task states with the run; a run the DAG left unfinished becomes failed.

    With ``worker``, only while that worker still holds the claim: a run claimed again by another
    worker (this one was too slow) keeps the new claimant's states and outcome."""
    with db.session_scope(sessions) as session:
        run = session.get(IngestionRun, run_id, with_for_update=True)
        if run is None:
            return "missing"
        if worker is not None and run.claimed_by != worker[:100]:
            log.warning("claim lost; outcome not stored", run=run_id)
            return run.status
        run.task_states = {str(k)[:100]: str(v)[:40] for k, v in task_states.items()}
        if run.status in ("queued", "running"):
            run.status = "failed"
            run.summary = (
                f"the ingest DAG did not finish ({error or 'no result'}); the upload is kept: "
                f"the operator can queue it again (gbadz ingest-requeue {run_id}) after a look at the worker's log"
            )[:2000]
            run.finished_at = datetime.now(UTC)
            audit.record(
                session,
                actor=ACTOR,
                action="ingestion.failed",
                subject_type="dataset",
                subject_id=run.dataset_id,
                details={"run": run_id, "error": (error or "no result")[:200], "tasks": run.task_states},
            )
        return run.status


def release(sessions: sessionmaker[Session], run_id: int, worker: str) -> None:
    """Put a run this worker claimed back in the queue (the worker is stopping)."""
    with db.session_scope(sessions) as session:
        session.execute(
            sa.update(IngestionRun)
            .where(
                IngestionRun.id == run_id,
                IngestionRun.status == "running",
                IngestionRun.claimed_by == worker[:100],
            )
            .values(
                status="queued",
                started_at=None,
                claimed_by=None,
                task_states=None,
                summary="back in the queue",
            )
            .execution_options(synchronize_session=False)
        )


def requeue(session: Session, run_id: int, actor: str) -> IngestionRun:
    """Put a failed run back in the queue (an operator's decision, audited). Its landed upload is
    reused as it is (the raw object is immutable and never re-uploaded or altered)."""
    from gbadz.errors import Conflict, NotFound

    run = session.get(IngestionRun, run_id, with_for_update=True)
    if run is None:
        raise NotFound(f"ingestion run {run_id}: no such run", field="run_id")
    if run.status != "failed":
        raise Conflict(
            f"ingestion run {run_id} is {run.status}: only a failed run can be queued again", field="run_id"
        )
    run.status = "queued"
    run.started_at = None
    run.claimed_by = None
    run.task_states = None
    # Under Airflow the next trigger is a new DAG run (its id counts the attempts made so far).
    run.airflow_run_id = run.airflow_state = run.trigger_error = run.next_trigger_at = None
    run.summary = "back in the queue (requeued by the operator)"
    audit.record(
        session,
        actor=actor,
        action="ingestion.requeued",
        subject_type="dataset",
        subject_id=run.dataset_id,
        details={"run": run_id, "landing_key": run.landing_key, "source_sha256": run.source_sha256},
    )
    return run


@dataclass
class ChildResult:
    task_states: dict[str, str]
    error: str | None


def progress(
    sessions: sessionmaker[Session], run_id: int, task_states: dict[str, str], worker: str | None = None
) -> None:
    """Show the steps done so far on the running run (its page reads them); with ``worker``, only
    while it holds the claim (and the claim's time is refreshed)."""
    where = [IngestionRun.id == run_id, IngestionRun.status == "running"]
    values: dict[str, Any] = {"task_states": dict(task_states)}
    if worker is not None:
        where.append(IngestionRun.claimed_by == worker[:100])
        values["started_at"] = datetime.now(UTC)
    with db.session_scope(sessions) as session:
        session.execute(
            sa.update(IngestionRun)
            .where(*where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def step_done(sessions: sessionmaker[Session], run_id: int, task: str, state: str = "success") -> None:
    """One DAG task of a running upload ended (called from the task, under Airflow): shown live."""
    with db.session_scope(sessions) as session:
        run = session.get(IngestionRun, run_id, with_for_update=True)
        if run is not None and run.status == "running":
            run.task_states = dict(run.task_states or {}) | {task: state}


def run_inline(ctx: pipeline.IngestContext, run_id: int, worker: str | None = None) -> dict[str, str]:
    """The DAG's steps (land, validate, route, publish | quarantine) in this thread, on the API's
    own storage, keys and background pool; each step's state is stored as it ends. With
    ``worker``, the outcome is stored only while that worker holds the run's claim."""
    states: dict[str, str] = {}

    def done(**steps: str) -> None:
        states.update(steps)
        progress(ctx.sessions, run_id, states, worker)

    with ctx.sessions() as session:
        run = session.get(IngestionRun, run_id)
        dataset = session.get(Dataset, run.dataset_id) if run is not None else None
        if run is None or dataset is None:
            raise LookupError(f"upload {run_id}: no such run or dataset")
        contract = stored_contract(dataset)
        contract_sha256 = dataset.contract_sha256
        landed = pipeline.Landed(
            key=run.landing_key,
            sha256=run.source_sha256,
            size=int(run.report.get("size", 0)),
            suffix=str(run.report.get("suffix", ".csv")),
        )
    done(land="success")
    found = pipeline.existing_version(ctx, contract, landed.sha256)
    if found is not None:
        pipeline.reuse(ctx, found, run_id, claim=worker)
        done(validate="success", route="success", publish="success", quarantine="skipped")
        return states
    with tempfile.TemporaryDirectory(prefix="gbadz-worker-") as tmp:
        # The landed file is streamed down and decrypted to a local file, then read batch by
        # batch: to validate, and (only if it passed) to publish (ADR 0028).
        raw = pipeline.fetch_raw(ctx, contract, landed, Path(tmp))
        report = validate_stream(contract, raw, ctx.settings.ingest)
        done(validate="success", route="success")
        if not report.success:
            pipeline.quarantine(ctx, contract, landed, report, run_id=run_id, claim=worker)
            done(publish="skipped", quarantine="success")
            return states
        pipeline.publish_file(
            ctx, contract, landed, raw, report, contract_sha256, run_id=run_id, claim=worker
        )
    done(publish="success", quarantine="skipped")
    return states


class IngestWorker:
    """Claims queued uploads and runs each through the DAG (a child process, or the DAG's steps
    in this thread when ``worker_mode`` is inline), one at a time."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        dags_folder: Path,
        context: pipeline.IngestContext | None = None,
        trigger: Any = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.dags_folder = dags_folder
        self.context = context
        #: worker_mode airflow: a gbadz.ingest.trigger.AirflowTrigger does the work (ADR 0026).
        self.trigger = trigger
        self.name = worker_name()
        self._child: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def drain(self) -> int:
        """Run queued uploads until none is left (or the worker stops); how many ran (airflow
        mode: how many were triggered)."""
        if self.trigger is not None:
            return 0 if self._stopping.is_set() else int(self.trigger.drain())
        ran = 0
        while not self._stopping.is_set():
            run_id = claim_next(self.sessions, self.name, self.settings.ingest.worker_timeout_s)
            if run_id is None:
                break
            timeout = self.settings.ingest.worker_timeout_s
            with beating(self.sessions, run_id, self.name, timeout):
                result = self._run_inline(run_id) if self.context is not None else self._run_child(run_id)
            if self._stopping.is_set():
                release(self.sessions, run_id, self.name)
                break
            status = finish(self.sessions, run_id, result.task_states, result.error, self.name)
            log.info("upload ingested", run=run_id, status=status)
            ran += 1
        return ran

    def _run_inline(self, run_id: int) -> ChildResult:
        assert self.context is not None
        try:
            return ChildResult(run_inline(self.context, run_id, self.name), None)
        except Exception as exc:  # noqa: BLE001 - any failure ends the run as failed, never the worker
            # Our errors name columns and rows, never a value; another library's message may quote
            # one (pyarrow does), so only its class is kept, and quoted text is dropped from ours.
            first = (str(exc).strip().splitlines() or [""])[0] if isinstance(exc, GbadzError) else ""
            reason = without_values(first)[:160]
            log.warning("upload failed", run=run_id, error=type(exc).__name__, reason=reason)
            with self.sessions() as session:
                run = session.get(IngestionRun, run_id)
                states = dict(run.task_states or {}) if run is not None else {}
            return ChildResult(states, f"{type(exc).__name__}: {reason}")

    def _run_child(self, run_id: int) -> ChildResult:
        command = [
            sys.executable,
            "-m",
            "gbadz",
            "ingest-upload",
            str(run_id),
            "--dags-folder",
            str(self.dags_folder),
            "--json",
        ]
        with self._lock:
            if self._stopping.is_set():
                return ChildResult({}, "stopping")
            self._child = subprocess.Popen(  # noqa: S603 - fixed argv: our own CLI, a number
                command,
                env=child_environment(self.settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        child = self._child
        try:
            out, err = child.communicate(timeout=self.settings.ingest.worker_timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return ChildResult({}, "timed out")
        finally:
            with self._lock:
                self._child = None
        return _parse(out, err, child.returncode)

    def stop(self) -> None:
        """Stop at once: kill a running child (its run goes back to the queue)."""
        self._stopping.set()
        with self._lock:
            if self._child is not None and self._child.poll() is None:
                self._child.kill()


def _parse(out: str, err: str, returncode: int) -> ChildResult:
    try:
        payload: dict[str, Any] = json.loads(out)
    except ValueError:
        # The child's last line says why (an error class and message of ours, no data values).
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        # Quoted text dropped: a library's message on the child's last line may quote a value.
        return ChildResult({}, (without_values(lines[-1])[:200] if lines else f"exit status {returncode}"))
    tasks = payload.get("tasks") or {}
    return ChildResult({str(k): str(v) for k, v in tasks.items()}, payload.get("error"))
