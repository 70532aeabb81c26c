"""Wire schemas of the transfer log: checkpoints, entries with proofs, consistency proofs, verifications."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CheckpointRead(BaseModel):
    tree_size: int
    root_hash: str
    note: str
    key_id: str
    signature: str
    signed_at: str
    public_keys: list[dict[str, str]]


class EntryRead(BaseModel):
    index: int
    kind: str
    entry: dict[str, Any]
    leaf_hash: str
    tree_size: int
    root_hash: str
    inclusion_proof: list[str] = Field(description="RFC 6962 audit path, base64, leaf to root")


class ConsistencyRead(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class VerificationRead(BaseModel):
    ok: bool = Field(description="every entry, every checkpoint root and signature, and their chain verified")
    entries: int
    checkpoints: int
    problem: str | None
    first_bad_index: int | None
    trusted_key_ids: list[str] = Field(description="the platform keys the signatures were checked against")
    checkpoint: CheckpointRead | None = Field(description="the latest signed checkpoint")
