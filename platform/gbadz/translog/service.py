"""Use cases of the transfer log: the current checkpoint, an entry with its proof, consistency, verification.

Each takes the sessionmaker and opens its own unit of work: reading a checkpoint may sign
and store a new one, and a verification is audited after the export it checks.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db
from gbadz.errors import BadRequest, NotFound
from gbadz.translog.log import TransferLog, export, verify_export
from gbadz.translog.models import Checkpoint, LogEntry
from gbadz.translog.schemas import CheckpointRead, ConsistencyRead, EntryRead, VerificationRead


class LogEntryNotFound(NotFound):
    """No transfer-log entry has this index."""


class NoCoveringCheckpoint(BadRequest):
    """No signed checkpoint of the asked size covers the entry, or a size is not a checkpoint's."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checkpoint_read(log: TransferLog, cp: Checkpoint) -> CheckpointRead:
    return CheckpointRead(
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        note=cp.note,
        key_id=cp.key_id,
        signature=cp.signature,
        signed_at=cp.signed_at.isoformat(),
        public_keys=log.public_keys(),
    )


def current_checkpoint(sessions: sessionmaker[Session], log: TransferLog, *, fresh: bool) -> CheckpointRead:
    """The latest signed checkpoint; a new one is signed when asked or when the log grew past it."""
    with db.session_scope(sessions) as session:
        cp = log.latest_checkpoint(session)
        if fresh or cp is None or cp.tree_size < log.sync(session):
            cp = log.checkpoint(session)
        return checkpoint_read(log, cp)


def entry_with_proof(
    sessions: sessionmaker[Session], log: TransferLog, index: int, tree_size: int | None
) -> EntryRead:
    with db.session_scope(sessions) as session:
        row = session.get(LogEntry, index)
        if row is None:
            raise LogEntryNotFound(f"no transfer-log entry {index}")
        cp = session.get(Checkpoint, tree_size) if tree_size else log.latest_checkpoint(session)
        if cp is None or cp.tree_size <= index:
            cp = log.checkpoint(session) if tree_size is None else None
        if cp is None:
            raise NoCoveringCheckpoint(
                f"tree_size: no signed checkpoint of size {tree_size} covers entry {index}", field="tree_size"
            )
        log.sync(session)
        proof = log.tree.inclusion(index, cp.tree_size)
        return EntryRead(
            index=row.index,
            kind=row.kind,
            entry=json.loads(row.entry),
            leaf_hash=row.leaf_hash,
            tree_size=cp.tree_size,
            root_hash=cp.root_hash,
            inclusion_proof=[_b64(p) for p in proof],
        )


def consistency(
    sessions: sessionmaker[Session], log: TransferLog, first: int, second: int
) -> ConsistencyRead:
    if first > second:
        raise BadRequest("from: must not be greater than to", field="from")
    with sessions() as session:
        old, new = session.get(Checkpoint, first), session.get(Checkpoint, second)
        if old is None or new is None:
            raise NoCoveringCheckpoint("from/to: both must be sizes of signed checkpoints", field="from")
        log.sync(session)
        proof = log.tree.consistency(first, second)
        return ConsistencyRead(
            first=first,
            second=second,
            first_root=old.root_hash,
            second_root=new.root_hash,
            proof=[_b64(p) for p in proof],
        )


def verify(sessions: sessionmaker[Session], log: TransferLog, actor: str) -> VerificationRead:
    """Export the whole log and verify it as ``gbadz audit verify`` would, then audit the verdict."""
    keys = log.public_keys()
    with tempfile.TemporaryDirectory(prefix="gbadz-verify-") as tmp:
        target = Path(tmp) / "log.jsonl"
        with sessions() as session:
            export(session, log, target)
            latest = log.latest_checkpoint(session)
            checkpoint = checkpoint_read(log, latest) if latest is not None else None
        verdict = verify_export(target, [base64.b64decode(k["public_key"]) for k in keys])
    with db.session_scope(sessions) as session:
        audit.record(
            session,
            actor=actor,
            action="transfer_log.verified",
            subject_type="transfer_log",
            subject_id=str(verdict.entries),
            details={
                "ok": verdict.ok,
                "problem": verdict.problem,
                "first_bad_index": verdict.first_bad_index,
            },
        )
    return VerificationRead(
        ok=verdict.ok,
        entries=verdict.entries,
        checkpoints=verdict.checkpoints,
        problem=verdict.problem,
        first_bad_index=verdict.first_bad_index,
        trusted_key_ids=[k["key_id"] for k in keys],
        checkpoint=checkpoint,
    )
