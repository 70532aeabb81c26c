"""Delivery copies sealed at rest under a key per grant, and the signed tickets that open them.

A grant's copy is written to the delivery bucket as a ``GBZENV1`` envelope (AES-256-GCM,
chunked STREAM construction, gbadz.crypto.envelope) under the grant's own data key in the
keyring: ``KeyContext(dataset, "grant-<id>", "__delivery__", "spi")``. So the bucket, its
volumes and any S3 GET hold only ciphertext; the key is destroyed when the grant ends
(revocation, expiry: the grant sweep; retirement: the dataset's keys are shredded), after
which nothing delivered under it decrypts (ADR 0018).

The grantee's URL is a ticket to the API (``/api/v1/delivery-files/<ticket>``), signed with
the keyring's Ed25519 key ``delivery-url``: it names the grant, the object, the envelope's
header hash and when it dies. The API checks the ticket and the grant's live status, then
streams the plaintext, Range requests included, each chunk authenticated before it leaves.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gbadz.crypto.envelope import encrypt_stream
from gbadz.crypto.keys import KeyContext, KeyProvider, grant_delivery_context
from gbadz.crypto.signing import Signer, verify
from gbadz.errors import GbadzError

TICKET_KEY = "delivery-url"
HASH_BLOCK = 1024 * 1024


class TicketInvalid(GbadzError):
    """A delivery URL that does not verify, names nothing, or died: looks like a missing file."""

    status_code = 404


def grant_key_context(dataset_id: str, grant_id: str) -> KeyContext:
    """The data key of a grant's delivery copies (under the dataset's KEK: retiring shreds it)."""
    return grant_delivery_context(dataset_id, grant_id)


@dataclass(frozen=True)
class Sealed:
    plaintext_sha256: str
    plaintext_size: int
    stored_sha256: str
    stored_size: int
    envelope_sha256: str  # SHA-256 of the envelope header: names this object among the grant's


def seal_file(keys: KeyProvider, context: KeyContext, source: Path, target: Path) -> Sealed:
    """Encrypt ``source`` into ``target`` (streamed); hash both sides."""
    with source.open("rb") as src, target.open("wb") as dst:
        info = encrypt_stream(keys, src, dst, context)
    stored_sha256, header_sha256 = file_digests(target)
    assert info.plaintext_sha256 is not None
    return Sealed(
        info.plaintext_sha256, info.plaintext_size, stored_sha256, info.ciphertext_size, header_sha256
    )


def header_digest(full_header: bytes) -> str:
    return hashlib.sha256(full_header).hexdigest()


def file_digests(path: Path) -> tuple[str, str]:
    """SHA-256 of a sealed file and of its envelope header."""
    from gbadz.crypto.envelope import read_header

    with path.open("rb") as fh:
        full_header, _ = read_header(fh)
        fh.seek(0)
        digest = hashlib.sha256()
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest(), header_digest(full_header)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Ticket:
    grant_id: str
    key: str
    envelope_sha256: str
    expires: int  # Unix seconds


def issue_ticket(keys: KeyProvider, ticket: Ticket) -> str:
    """The same ticket always signs to the same string (Ed25519 is deterministic): a repeat
    delivery within the URL's life hands out the very URL already logged."""
    claims = json.dumps(
        {"g": ticket.grant_id, "k": ticket.key, "h": ticket.envelope_sha256, "exp": ticket.expires},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    signature = Signer(keys, TICKET_KEY).sign(claims)
    return f"{_b64(claims)}.{_b64(signature.signature)}"


def read_ticket(keys: KeyProvider, text: str, now: datetime | None = None) -> Ticket:
    """The ticket if its signature verifies and it has not expired; else TicketInvalid (404)."""
    claims_part, _, signature_part = text.partition(".")
    try:
        claims_raw, signature = _unb64(claims_part), _unb64(signature_part)
    except (ValueError, TypeError):
        raise TicketInvalid("no such delivery file") from None
    public = [k.public_key for k in keys.public_keys() if k.name == TICKET_KEY]
    public += [k.public_key for k, _ in keys.retired_public_keys(TICKET_KEY)]
    if not signature or not any(verify(p, claims_raw, signature) for p in public):
        raise TicketInvalid("no such delivery file")
    try:
        claims = json.loads(claims_raw)
        ticket = Ticket(str(claims["g"]), str(claims["k"]), str(claims["h"]), int(claims["exp"]))
    except (ValueError, KeyError, TypeError):
        raise TicketInvalid("no such delivery file") from None
    if ticket.expires < (now or datetime.now(UTC)).timestamp():
        raise TicketInvalid("the delivery URL expired; ask for a new delivery")
    return ticket
