"""Deterministic keyed pseudonyms and contract-driven masking.

A pseudonym is ``HMAC-SHA256(dataset key, canonical value)``, truncated to 120 bits and
written as 24 lowercase base32 characters behind a ``p`` prefix (120 bits is a whole number
of base32 groups, so a column's tokens are encoded in one call; collisions need about 2**60
distinct identifiers). The key is one per
dataset (shared by all its versions), so pseudonymised identifiers still join within a
dataset and across its versions, but cannot be reversed, nor linked across datasets,
without the key. Pseudonymised data is still personal information under PIPL Art. 73(3):
it changes how data is protected, not whether the transfer rules apply.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gbadz.crypto.keys import KeyContext, KeyProvider

PSEUDONYM_COLUMN = "__pseudonym__"
PSEUDONYM_LENGTH = 25  # "p" + 24 base32 characters (120 bits)
_DIGEST_BYTES = 15
_TOKEN_CHARS = 24


def _canonical(value: Any) -> bytes:
    if isinstance(value, bytes):
        return b"b:" + value
    if isinstance(value, str):
        return b"s:" + value.strip().encode()
    if isinstance(value, bool):
        return b"o:" + str(value).encode()
    if isinstance(value, int):
        return b"i:" + str(value).encode()
    return b"x:" + str(value).encode()


class Pseudonymiser:
    """``cache``: how many identifiers' pseudonyms are kept between calls (the batches of one
    upload; oldest first out, so memory stays bounded). The cache holds identifiers in this
    process's memory only, like the batch being protected."""

    def __init__(self, key: bytes, cache: int = 0) -> None:
        if len(key) < 32:
            raise ValueError("a pseudonym key must be at least 256 bits")
        self._key = key
        self._limit = cache
        self._cache: OrderedDict[bytes, str] = OrderedDict()

    def token(self, value: Any) -> str:
        mac = hmac.digest(self._key, _canonical(value), hashlib.sha256)[:_DIGEST_BYTES]
        return "p" + base64.b32encode(mac).decode("ascii").lower()

    def array(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Pseudonymise an Arrow column; nulls stay null. Each distinct value is hashed once."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = pc.dictionary_encode(values)
        uniques = encoded.dictionary.to_pylist()
        cache = self._cache
        # Keyed by the canonical bytes, never the value: 1, 1.0 and True are one dict key.
        canonical = [_canonical(v) for v in uniques]
        missing = [c for c in canonical if c not in cache] if self._limit else canonical
        key = self._key
        digests = b"".join(hmac.digest(key, c, hashlib.sha256)[:_DIGEST_BYTES] for c in missing)
        text = base64.b32encode(digests).decode("ascii").lower()
        fresh = ["p" + text[i * _TOKEN_CHARS : (i + 1) * _TOKEN_CHARS] for i in range(len(missing))]
        if not self._limit:
            return pc.take(pa.array(fresh, pa.string()), encoded.indices)
        made = dict(zip(missing, fresh, strict=True))
        tokens = pa.array([cache.get(c) or made[c] for c in canonical], pa.string())
        if len(made) >= self._limit:
            cache.clear()
            made = dict(list(made.items())[-self._limit :])
        cache.update(made)
        while len(cache) > self._limit:
            cache.popitem(last=False)  # oldest first, O(1) (a dict's front deletions make it O(n))
        return pc.take(tokens, encoded.indices)


def pseudonymiser_for(provider: KeyProvider, dataset: str, cache: int = 0) -> Pseudonymiser:
    """The dataset's pseudonymiser (its key lives in the keyring; shredding the dataset destroys it)."""
    dek_id = provider.data_key_id(KeyContext(dataset, "*", PSEUDONYM_COLUMN, "pi"))
    return Pseudonymiser(provider.data_key(dek_id), cache)


def mask_keep_last(value: str | None, keep: int = 4, char: str = "*") -> str | None:
    """``13800138000`` -> ``*******8000``: keep the last ``keep`` characters."""
    if value is None:
        return None
    keep = max(0, min(keep, len(value)))
    return char * (len(value) - keep) + value[len(value) - keep :]


def mask_email(value: str | None) -> str | None:
    """``chan.tai.man@example.hk`` -> ``c***@example.hk``."""
    if value is None:
        return None
    local, sep, domain = value.partition("@")
    if not sep:
        return mask_keep_last(value, 0)
    return (local[:1] or "*") + "***@" + domain


def mask_all(value: str | None) -> str | None:
    return None if value is None else "*" * len(value)


MASKS: dict[str, Callable[[str | None], str | None]] = {
    "last4": mask_keep_last,
    "email": mask_email,
    "all": mask_all,
}


def mask_array(values: pa.Array | pa.ChunkedArray, how: str) -> pa.Array:
    try:
        fn = MASKS[how]
    except KeyError:
        raise ValueError(f"unknown mask {how!r}: use one of {', '.join(MASKS)}") from None
    if how == "last4":  # vectorised (the common mask on large deliveries); same result as mask_keep_last
        text = pc.cast(values, pa.string())
        length = pc.utf8_length(text)
        hidden = pc.fill_null(pc.subtract(length, pc.min_element_wise(length, 4)), 0)
        stars = pc.binary_repeat(pa.scalar("*"), hidden)
        masked = pc.binary_join_element_wise(stars, pc.utf8_slice_codeunits(text, start=-4), "")
        return masked.combine_chunks() if isinstance(masked, pa.ChunkedArray) else masked
    return pa.array([fn(None if v is None else str(v)) for v in values.to_pylist()], type=pa.string())
