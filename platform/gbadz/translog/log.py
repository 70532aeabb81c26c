"""Appending to the transfer log, signing checkpoints, proofs, and the offline export/verify.

Appends are serialised by the one-row ``transfer_log_head`` (updated first in the appending
transaction: a row lock on PostgreSQL, the write lock on SQLite), so indices are dense and
each entry is committed with the transaction that made the transfer. Each process keeps a
:class:`~gbadz.translog.merkle.CompactTree` of the committed leaves and catches up from the
database before it answers (tree heads and proofs in O(log n)).

Checkpoints are signed notes (C2SP signed-note style)::

    gbadz transfer log
    <tree size>
    <root hash, base64>
    <UTC time, ISO 8601>

signed with the keyring's Ed25519 key ``transfer-log``; anyone holding the public key can
verify an export with ``gbadz audit verify`` — no database, no network.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker

from gbadz.crypto.keys import KeyProvider
from gbadz.crypto.signing import Signer, verify
from gbadz.log import get_logger
from gbadz.translog.merkle import EMPTY_ROOT, CompactTree, leaf_hash
from gbadz.translog.models import Checkpoint, LogEntry, LogHead

SIGNING_KEY = "transfer-log"
log = get_logger("gbadz.translog")
ORIGIN = "gbadz transfer log"
EXPORT_FORMAT = "gbadz-transfer-log-export/1"


def canonical(entry: dict[str, Any]) -> bytes:
    """The exact bytes that are hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def note_text(size: int, root: bytes, at: datetime, previous: tuple[int, bytes]) -> str:
    """The signed text; it names the previous checkpoint, so dropping one breaks the chain."""
    prev_size, prev_root = previous
    return (
        f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n{at.isoformat()}\n"
        f"previous {prev_size} {base64.b64encode(prev_root).decode()}\n"
    )


_HEAD = sa.table("transfer_log_head", sa.column("id"), sa.column("size"))
_BUMP_HEAD = sa.update(_HEAD).where(_HEAD.c.id == 1).values(size=_HEAD.c.size + 1).returning(_HEAD.c.size)
_INSERT_ENTRY = sa.insert(
    sa.table("transfer_log", *(sa.column(c.name, c.type) for c in LogEntry.__table__.columns))
)


_ROW = (
    "index",
    "kind",
    "grant_id",
    "idempotency_key",
    "entry",
    "leaf_hash",
    "logged_at",
    "dataset_id",
    "exporter_org_id",
    "recipient_org_id",
    "origin",
    "destination",
    "outcome",
    "mechanism",
)
_MARKS = {"sqlite": ":{}", "postgresql": "%({})s"}  # sqlite3 named, psycopg pyformat


@dataclass(frozen=True)
class _Raw:
    bump: str
    insert: str
    stamp: Callable[[datetime], Any]  # the column type's bind processing (UTC; SQLite's text form)


@functools.cache
def _raw_statements(dialect: Dialect) -> _Raw | None:
    """The append's SQL for the driver itself, on the two databases gbadz runs on (else None)."""
    mark = _MARKS.get(dialect.name)
    if mark is None:
        return None
    columns = ", ".join(f'"{c}"' for c in _ROW)  # "index" is a reserved word
    values = ", ".join(mark.format(c) for c in _ROW)
    # The column type as the dialect binds it (UTCDateTime -> UTC -> SQLite's text form), so raw
    # rows are stored exactly as the Core path stores them.
    processor = LogEntry.__table__.c.logged_at.type.dialect_impl(dialect).bind_processor(dialect)
    return _Raw(
        bump="UPDATE transfer_log_head SET size = size + 1 WHERE id = 1 RETURNING size",
        insert=f"INSERT INTO transfer_log ({columns}) VALUES ({values})",  # noqa: S608 - fixed column names and driver placeholders, no input
        stamp=processor if processor is not None else (lambda value: value),
    )


@dataclass(frozen=True)
class Appended:
    index: int
    leaf: bytes


def _org_id(party: Any) -> str | None:
    value = party.get("org_id") if isinstance(party, dict) else None
    return str(value) if value is not None else None


class TransferLog:
    def __init__(self, keys: KeyProvider) -> None:
        self.keys = keys
        self.tree = CompactTree()
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------
    def append(
        self,
        session: Session,
        entry: dict[str, Any],
        *,
        kind: str,
        grant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Appended:
        """Add ``entry`` inside the caller's transaction (it is durable when that commits).

        After the commit, :meth:`committed` lets this process prove the entry at once.
        """
        conn = session.connection()
        raw = _raw_statements(conn.dialect)
        cursor = conn.connection.cursor() if raw is not None else None
        if raw is not None and cursor is not None:
            # The driver's cursor on the session's connection, inside its transaction: the two
            # statements of an append cost less than the one statement of the plain-insert floor
            # through SQLAlchemy (bench_translog.py).
            cursor.execute(raw.bump)
            bumped = cursor.fetchone()
            if bumped is None:  # pragma: no cover - the head row is made by migration 0007
                raise RuntimeError("transfer_log_head has no row: run the migrations")
            size = bumped[0]
        else:
            size = conn.execute(_BUMP_HEAD).scalar_one()
        index = int(size) - 1
        body = canonical({**entry, "index": index})
        leaf = leaf_hash(body)
        now = datetime.now(UTC)
        row = {
            "index": index,
            "kind": kind,
            "grant_id": grant_id,
            "idempotency_key": idempotency_key,
            "entry": body.decode(),
            "leaf_hash": leaf.hex(),
            "logged_at": now,
            "dataset_id": entry.get("dataset_id"),
            "exporter_org_id": _org_id(entry.get("exporter")),
            "recipient_org_id": _org_id(entry.get("recipient")),
            "origin": entry.get("origin"),
            "destination": entry.get("destination"),
            "outcome": entry.get("decision_outcome"),
            "mechanism": entry.get("mechanism"),
        }
        if raw is not None and cursor is not None:
            row["logged_at"] = raw.stamp(now)
            try:
                cursor.execute(raw.insert, row)
            finally:
                cursor.close()
        else:
            conn.execute(_INSERT_ENTRY, row)
        return Appended(index, leaf)

    def committed(self, appended: Appended) -> None:
        """The transaction holding ``appended`` committed: grow the in-memory tree if it is next."""
        with self._lock:
            if self.tree.size == appended.index:
                self.tree.append_hash(appended.leaf)

    # -- reading ------------------------------------------------------------------------
    def sync(self, session: Session) -> int:
        """Catch the in-memory tree up with the committed entries; return its size."""
        with self._lock:
            while True:
                rows = session.execute(
                    sa.select(LogEntry.index, LogEntry.leaf_hash)
                    .where(LogEntry.index >= self.tree.size)
                    .order_by(LogEntry.index)
                    .limit(50_000)
                ).all()
                if not rows:
                    return self.tree.size
                for index, leaf in rows:
                    if index != self.tree.size:  # a gap: a transaction holding a lower index is still open
                        return self.tree.size
                    self.tree.append_hash(bytes.fromhex(leaf))

    def checkpoint(self, session: Session) -> Checkpoint:
        """Sign the current tree head (or return the checkpoint already made for this size)."""
        # Take the head row first: checkpoints are made one at a time, each naming the last.
        session.execute(sa.update(LogHead).where(LogHead.id == 1).values(size=LogHead.size))
        size = self.sync(session)
        existing = session.get(Checkpoint, size)
        if existing is not None:
            return existing
        last = self.latest_checkpoint(session)
        previous = (last.tree_size, bytes.fromhex(last.root_hash)) if last else (0, EMPTY_ROOT)
        at = datetime.now(UTC).replace(microsecond=0)
        root = self.tree.root(size)
        note = note_text(size, root, at, previous)
        signature = Signer(self.keys, SIGNING_KEY).sign(note.encode())
        row = Checkpoint(
            tree_size=size,
            root_hash=root.hex(),
            note=note,
            key_id=signature.key_id,
            signature=base64.b64encode(signature.signature).decode(),
            signed_at=at,
        )
        session.add(row)
        session.flush()
        return row

    def checkpoint_if_grown(self, sessions: sessionmaker[Session]) -> Checkpoint | None:
        """Sign a checkpoint when entries were added since the last one (the periodic publisher)."""
        with sessions.begin() as session:
            latest = self.latest_checkpoint(session)
            size = self.sync(session)
            if size == 0 or (latest is not None and latest.tree_size >= size):
                return None
            return self.checkpoint(session)

    def latest_checkpoint(self, session: Session) -> Checkpoint | None:
        return session.scalar(sa.select(Checkpoint).order_by(Checkpoint.tree_size.desc()).limit(1))

    def public_keys(self) -> list[dict[str, str]]:
        from gbadz.crypto.signing import to_pem

        self.keys.signing_key(SIGNING_KEY)  # created on first use
        current = [k for k in self.keys.public_keys() if k.name == SIGNING_KEY]
        retired = [k for k, _ in self.keys.retired_public_keys(SIGNING_KEY)]
        return [
            {"key_id": k.key_id, "public_key": base64.b64encode(k.public_key).decode(), "pem": to_pem(k)}
            for k in [*current, *retired]
        ]


# -- export and offline verification --------------------------------------------------------
def export(
    session: Session, log: TransferLog, target: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Write header, every entry and every checkpoint as JSON lines; return (entries, checkpoints).

    ``progress(done, total)`` is told every 10,000 entries and at the end (the CLI's progress bar)."""
    entries = checkpoints = 0
    total = 0
    if progress is not None:
        total = session.scalar(sa.select(sa.func.count()).select_from(LogEntry)) or 0
    with target.open("w", encoding="utf-8") as out:
        header = {
            "type": "header",
            "format": EXPORT_FORMAT,
            "origin": ORIGIN,
            "public_keys": log.public_keys(),
        }
        out.write(json.dumps(header) + "\n")
        query = sa.select(LogEntry.index, LogEntry.entry, LogEntry.leaf_hash).order_by(LogEntry.index)
        for index, entry, leaf in session.execute(query.execution_options(yield_per=10_000)):
            out.write(json.dumps({"type": "entry", "index": index, "leaf_hash": leaf, "entry": entry}) + "\n")
            entries += 1
            if progress is not None and entries % 10_000 == 0:
                progress(entries, max(total, entries))
        if progress is not None:
            progress(entries, entries)
        for cp in session.scalars(sa.select(Checkpoint).order_by(Checkpoint.tree_size)):
            line = {
                "type": "checkpoint",
                "tree_size": cp.tree_size,
                "root_hash": cp.root_hash,
                "note": cp.note,
                "key_id": cp.key_id,
                "signature": cp.signature,
            }
            out.write(json.dumps(line) + "\n")
            checkpoints += 1
    return entries, checkpoints


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    checkpoints: int
    problem: str | None = None
    first_bad_index: int | None = None


class _Bad(Exception):
    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index = problem, index


def _lines(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    read = 0
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if progress is not None:
                read += len(line)
                if number % 10_000 == 0:
                    progress(read)
            try:
                item = json.loads(line)
            except ValueError:
                raise _Bad(f"line {number}: not JSON") from None
            if not isinstance(item, dict):
                raise _Bad(f"line {number}: not a JSON object")
            yield number, item


def verify_export(
    path: Path, trusted_keys: Iterable[bytes] | None = None, progress: Callable[[int], None] | None = None
) -> Verdict:
    """Recompute every leaf, every checkpoint's root and signature, and their consistency.

    ``progress(characters_read)`` is told every 10,000 lines (the CLI's progress bar).

    ``trusted_keys``: raw Ed25519 public keys obtained out of band; by default the export's
    own header (which proves integrity, not authenticity — pass the regulator's copy).
    """
    tree = CompactTree()
    checkpoints = 0
    try:
        lines = _lines(path, progress)
        number, header = next(lines, (0, {}))
        if header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
            raise _Bad(f"line {number or 1}: not a {EXPORT_FORMAT} file")
        keys = {k["key_id"]: base64.b64decode(k["public_key"]) for k in header.get("public_keys", [])}
        if trusted_keys is not None:
            allowed = set(trusted_keys)
            keys = {kid: key for kid, key in keys.items() if key in allowed}
        previous: tuple[int, bytes] | None = None
        for number, item in lines:
            kind = item.get("type")
            if kind == "entry":
                if checkpoints:
                    raise _Bad(f"line {number}: an entry after the checkpoints", tree.size)
                expected = tree.size
                index, body = item.get("index"), item.get("entry")
                if index != expected:
                    raise _Bad(f"line {number}: entry index {index} where {expected} was expected", expected)
                if not isinstance(body, str):
                    raise _Bad(f"line {number}: entry {expected} has no body", expected)
                try:
                    inner_index = json.loads(body).get("index")
                except (ValueError, AttributeError):
                    raise _Bad(f"line {number}: entry {expected} is not a JSON object", expected) from None
                if inner_index != expected:
                    raise _Bad(f"line {number}: entry {expected} says it is entry {inner_index}", expected)
                leaf = leaf_hash(body.encode())
                if item.get("leaf_hash") != leaf.hex():
                    raise _Bad(
                        f"line {number}: entry {expected} does not hash to its recorded leaf", expected
                    )
                tree.append_hash(leaf)
            elif kind == "checkpoint":
                checkpoints += 1
                previous = _check_point(number, item, tree, keys, previous)
            else:
                raise _Bad(f"line {number}: unknown line type {kind!r}")
    except _Bad as bad:
        return Verdict(False, tree.size, checkpoints, bad.problem, bad.index)
    except OSError as exc:
        return Verdict(False, 0, 0, f"{path}: {exc.strerror or exc}")
    if checkpoints == 0:
        return Verdict(False, tree.size, 0, "no signed checkpoint: nothing ties the entries to the log")
    assert previous is not None
    if previous[0] != tree.size:
        return Verdict(
            False,
            tree.size,
            checkpoints,
            f"entries {previous[0]}..{tree.size - 1} are not covered by a signed checkpoint",
            previous[0],
        )
    return Verdict(True, tree.size, checkpoints)


def _check_point(
    number: int,
    item: dict[str, Any],
    tree: CompactTree,
    keys: dict[str, bytes],
    previous: tuple[int, bytes] | None,
) -> tuple[int, bytes]:
    size, note, signature = item.get("tree_size"), item.get("note"), item.get("signature")
    if not isinstance(size, int) or not isinstance(note, str) or not isinstance(signature, str):
        raise _Bad(f"line {number}: a checkpoint needs tree_size, note and signature")
    key = keys.get(str(item.get("key_id")))
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except ValueError:
        raise _Bad(f"line {number}: checkpoint {size}: signature is not base64") from None
    if key is None or not verify(key, note.encode(), raw_signature):
        raise _Bad(f"line {number}: checkpoint {size}: the signature does not verify with a trusted key")
    parts = note.split("\n")
    if len(parts) < 5 or parts[0] != ORIGIN or parts[1] != str(size) or not parts[4].startswith("previous "):
        raise _Bad(f"line {number}: checkpoint {size}: its signed note is for another log or size")
    signed_root = base64.b64decode(parts[2])
    _, prev_size, prev_root = parts[4].split(" ")
    expected_prev = previous or (0, EMPTY_ROOT)
    if (int(prev_size), base64.b64decode(prev_root)) != expected_prev:
        raise _Bad(
            f"line {number}: checkpoint {size} follows checkpoint {prev_size}, "
            f"but the export's previous checkpoint is {expected_prev[0]}: a checkpoint was removed, added or moved"
        )
    if size > tree.size:
        raise _Bad(
            f"line {number}: checkpoint {size} covers entries that are missing (have {tree.size})", tree.size
        )
    if tree.root(size) != signed_root:
        first = previous[0] if previous else 0
        raise _Bad(
            f"line {number}: entries {first}..{size - 1} do not match signed checkpoint {size}; "
            f"the first bad entry is at or after index {first}",
            first,
        )
    # Both roots were recomputed from the same entries, so the older checkpoint is a prefix of
    # this one by construction; what is left to check is that the log only grew.
    if previous is not None and size < previous[0]:
        raise _Bad(
            f"line {number}: checkpoint {size} is smaller than the checkpoint before it ({previous[0]})"
        )
    return size, signed_root
