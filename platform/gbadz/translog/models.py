"""Tables of the transfer log: entries (leaves), the head counter, and signed checkpoints."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


class LogHead(Base):
    """One row: the number of entries. Appending updates it first, which serialises appends."""

    __tablename__ = "transfer_log_head"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)


class LogEntry(Base):
    """One transfer, as a leaf: ``leaf_hash = SHA-256(0x00 || entry)`` over the canonical JSON."""

    __tablename__ = "transfer_log"

    index: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(32))
    grant_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    # Copied from the entry for the compliance filters (the hashed entry stays the record).
    dataset_id: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    exporter_org_id: Mapped[str | None] = mapped_column(sa.String(36), default=None, index=True)
    recipient_org_id: Mapped[str | None] = mapped_column(sa.String(36), default=None, index=True)
    origin: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    destination: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    outcome: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    mechanism: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    entry: Mapped[str] = mapped_column(sa.Text)  # canonical JSON, exactly the hashed bytes
    leaf_hash: Mapped[str] = mapped_column(sa.String(64))
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    """A signed tree head: the note (size, root, time) and its Ed25519 signature."""

    __tablename__ = "transfer_log_checkpoints"

    tree_size: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[str] = mapped_column(sa.String(64))
    note: Mapped[str] = mapped_column(sa.Text)
    key_id: Mapped[str] = mapped_column(sa.String(100))
    signature: Mapped[str] = mapped_column(sa.String(200))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
