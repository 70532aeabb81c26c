"""Parquet modular encryption of sensitive columns, released only to covering grants.

Each protected column of a dataset version has its own data key in the
:class:`KeyProvider` (``KeyContext(dataset, version, column, classification)``); pyarrow
generates the per-file keys and asks our KMS client to wrap them with that data key. The
footer stays plaintext, so tools without keys still read the schema and every unprotected
column.

Reading goes through :class:`GrantKmsClient`: it unwraps a column's file key only when the
caller's grant, looked up *live* at every unwrap, covers that dataset version and column.
Wrapping is single (``double_wrapping=False``), which means pyarrow keeps no cache of
unwrapped keys; and every read builds a fresh ``CryptoFactory`` with a per-read access
token, so nothing learnt under one grant, or before a revocation, is reused (the
key-cache pitfall measured in architecture.md).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gbadz.crypto.keys import Classification, KeyContext, KeyProvider
from gbadz.errors import ColumnAccessDenied, IntegrityCheckFailed

FOOTER_COLUMN = "__footer__"
_WRITER_TOKEN_PREFIX = "writer:"  # noqa: S105 - a token label, not a secret


@dataclass(frozen=True)
class KeyGrant:
    """What a grant lets its holder decrypt: columns of one dataset version, until it expires."""

    grant_id: str
    dataset: str
    version: str
    columns: frozenset[str]
    expires_at: datetime | None = None


GrantLookup = Callable[[str], KeyGrant | None]
"""Returns the grant's *current* state, or None once it is revoked or unknown."""


def _wrap(provider: KeyProvider, key_bytes: bytes, dek_id: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(provider.data_key(dek_id)).encrypt(nonce, key_bytes, dek_id.encode())
    return base64.b64encode(nonce + sealed).decode("ascii")


def _unwrap(provider: KeyProvider, wrapped: str, dek_id: str) -> bytes:
    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(provider.data_key(dek_id)).decrypt(raw[:12], raw[12:], dek_id.encode())
    except InvalidTag:
        raise IntegrityCheckFailed(f"the wrapped file key for {dek_id} was altered") from None


class WriterKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Wraps new file keys for a writer; never unwraps (writers do not read back plaintext)."""

    def __init__(self, provider: KeyProvider) -> None:
        super().__init__()
        self.provider = provider

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return _wrap(self.provider, key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        raise ColumnAccessDenied("the writer's key client does not unwrap keys")


class GrantKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Unwraps a file key only for a live grant covering the key's dataset version and column."""

    def __init__(self, provider: KeyProvider, grant_id: str, lookup: GrantLookup) -> None:
        super().__init__()
        self.provider = provider
        self.grant_id = grant_id
        self.lookup = lookup

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        raise ColumnAccessDenied("a grant's key client does not wrap keys")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        context = self.provider.context_of(master_key_identifier)
        grant = self.lookup(self.grant_id)
        if grant is None:
            raise ColumnAccessDenied(f"grant {self.grant_id} is revoked or unknown")
        if grant.expires_at is not None and grant.expires_at <= datetime.now(UTC):
            raise ColumnAccessDenied(f"grant {self.grant_id} expired at {grant.expires_at.isoformat()}")
        if (context.dataset, context.version) != (grant.dataset, grant.version):
            raise ColumnAccessDenied(
                f"grant {self.grant_id} covers {grant.dataset} version {grant.version}, "
                f"not {context.dataset} version {context.version}"
            )
        if context.column != FOOTER_COLUMN and context.column not in grant.columns:
            raise ColumnAccessDenied(
                f"grant {self.grant_id} does not cover the protected column {context.column!r}"
            )
        return _unwrap(self.provider, wrapped_key, master_key_identifier)


@dataclass(frozen=True)
class ProtectedColumn:
    name: str
    classification: Classification


class ColumnProtector:
    """Write Parquet with per-column encryption; read it back under a grant."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider

    def encryption_properties(
        self, dataset: str, version: str, protected: Sequence[ProtectedColumn]
    ) -> pe.FileEncryptionProperties:
        footer = self.provider.data_key_id(KeyContext(dataset, version, FOOTER_COLUMN, "general"))
        column_keys: dict[str, list[str]] = {}
        for column in protected:
            dek_id = self.provider.data_key_id(
                KeyContext(dataset, version, column.name, column.classification)
            )
            column_keys[dek_id] = [column.name]
        config = pe.EncryptionConfiguration(
            footer_key=footer,
            column_keys=column_keys,
            encryption_algorithm="AES_GCM_V1",
            plaintext_footer=True,
            double_wrapping=False,
            data_key_length_bits=256,
        )
        factory = pe.CryptoFactory(lambda _cfg: WriterKmsClient(self.provider))
        token = pe.KmsConnectionConfig(key_access_token=_WRITER_TOKEN_PREFIX + secrets.token_hex(8))
        return factory.file_encryption_properties(token, config)

    def open_writer(
        self,
        sink: Any,
        schema: pa.Schema,
        dataset: str,
        version: str,
        protected: Sequence[ProtectedColumn],
        **options: Any,
    ) -> pq.ParquetWriter:
        """A streaming writer: write record batches as they come (larger-than-memory datasets)."""
        missing = [c.name for c in protected if c.name not in schema.names]
        if missing:
            raise ValueError(f"protected columns not in the schema: {', '.join(missing)}")
        if not protected:
            # Nothing to protect (pyarrow refuses an encryption configuration without column keys).
            return pq.ParquetWriter(sink, schema, **options)
        props = self.encryption_properties(dataset, version, protected)
        return pq.ParquetWriter(sink, schema, encryption_properties=props, **options)

    def write_table(
        self,
        table: pa.Table,
        sink: Any,
        dataset: str,
        version: str,
        protected: Sequence[ProtectedColumn],
        **options: Any,
    ) -> None:
        row_group_size = options.pop("row_group_size", None)
        with self.open_writer(sink, table.schema, dataset, version, protected, **options) as writer:
            writer.write_table(table, row_group_size=row_group_size)

    def decryption_properties(self, grant_id: str, lookup: GrantLookup) -> pe.FileDecryptionProperties:
        """Fresh factory and token per call: no unwrapped key outlives this read."""
        factory = pe.CryptoFactory(lambda _cfg: GrantKmsClient(self.provider, grant_id, lookup))
        token = pe.KmsConnectionConfig(key_access_token=f"grant:{grant_id}:{secrets.token_hex(8)}")
        return factory.file_decryption_properties(token, pe.DecryptionConfiguration(cache_lifetime=1))

    def read_table(
        self,
        source: Any,
        grant_id: str,
        lookup: GrantLookup,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read under a grant; a protected column the grant does not cover raises ColumnAccessDenied."""
        props = self.decryption_properties(grant_id, lookup)
        return pq.read_table(
            source, columns=list(columns) if columns is not None else None, decryption_properties=props
        )


def protected_columns(spec: Mapping[str, Classification]) -> list[ProtectedColumn]:
    return [ProtectedColumn(name, classification) for name, classification in spec.items()]
