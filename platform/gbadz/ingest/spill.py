"""Exact answers over a whole upload in bounded memory: keys spilled to disk in hash partitions.

Two questions span every batch of an upload: is a column unique (and which rows repeat a
value), and who are the distinct individuals of a version. Both are answered exactly without
holding the file: each batch's keys go, as fixed-width records, into one of
:data:`PARTITIONS` files chosen by the key's hash; at the end each partition (about
1/256 of the keys: 1 MB per 10 million rows for a unique column) is sorted alone.
Memory is the write buffer plus one partition; the disk holds 24-25 bytes per key.
ADR 0028.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

PARTITIONS = 256
#: Records buffered in memory before they are appended to the partition files.
BUFFER_RECORDS = 1 << 19


class _Partitioned:
    """Fixed-width records appended to hash-partition files under a private temporary folder."""

    def __init__(self, dtype: np.dtype, workdir: Path | None) -> None:
        self.dtype = dtype
        self.folder = Path(tempfile.mkdtemp(prefix="gbadz-spill-", dir=workdir))
        self._records: list[np.ndarray] = []
        self._parts: list[np.ndarray] = []
        self._buffered = 0

    def add(self, records: np.ndarray, parts: np.ndarray) -> None:
        if not len(records):
            return
        self._records.append(records)
        self._parts.append(parts.astype(np.uint16, copy=False))
        self._buffered += len(records)
        if self._buffered >= BUFFER_RECORDS:
            self.flush()

    def flush(self) -> None:
        if not self._records:
            return
        records = np.concatenate(self._records)
        parts = np.concatenate(self._parts)
        self._records, self._parts, self._buffered = [], [], 0
        order = np.argsort(parts, kind="stable")
        records, parts = records[order], parts[order]
        bounds = np.searchsorted(parts, np.arange(PARTITIONS + 1))
        for part in range(PARTITIONS):
            start, end = bounds[part], bounds[part + 1]
            if start < end:
                with (self.folder / f"{part:03d}.bin").open("ab") as out:
                    records[start:end].tofile(out)

    def partitions(self) -> Iterator[tuple[Path, np.ndarray]]:
        self.flush()
        for path in sorted(self.folder.glob("*.bin")):
            yield path, np.fromfile(path, dtype=self.dtype)

    def close(self) -> None:
        for path in self.folder.glob("*"):
            path.unlink(missing_ok=True)
        self.folder.rmdir()


def _mix(values: np.ndarray) -> np.ndarray:
    """A partition (0..255) from 64-bit values (splitmix64's finaliser, top byte)."""
    x = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(56)).astype(np.uint16)


class DuplicateFinder:
    """Which rows of a column repeat a value, over the whole stream (nulls are not values).

    Each value becomes a 128-bit key: integers, dates, times and booleans are their own 64-bit
    value (exact); floats their bits (``-0.0`` as ``0.0``); text two independent keyed 64-bit
    SipHashes (pandas' ``hash_array``) under keys drawn for this run, so two distinct texts
    share a key with probability about n²/2¹²⁹ and nobody can craft such a pair in advance.
    Equal values always share a key: a real duplicate is never missed.
    """

    dtype = np.dtype([("h1", "<u8"), ("h2", "<u8"), ("row", "<i8")])

    def __init__(self, workdir: Path | None = None) -> None:
        self._spill = _Partitioned(self.dtype, workdir)
        self._keys = (secrets.token_hex(8), secrets.token_hex(8))  # 16 characters each, as pandas asks
        self.elements = 0
        self.nonnull = 0

    def add(self, column: pa.Array | pa.ChunkedArray, offset: int) -> None:
        """Add one batch's column; ``offset`` is the file position (from 0) of its first row."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        self.elements += len(column)
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(valid).astype(np.int64) + offset
        present = column.drop_null()
        if not len(present):
            return
        self.nonnull += len(present)
        kind = present.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
            objects = present.to_numpy(zero_copy_only=False)
            h1 = pd.util.hash_array(objects, hash_key=self._keys[0], categorize=True)
            h2 = pd.util.hash_array(objects, hash_key=self._keys[1], categorize=True)
        else:
            if pa.types.is_floating(kind):
                floats = present.cast(pa.float64()).to_numpy(zero_copy_only=False) + 0.0  # -0.0 -> 0.0
                h1 = floats.view(np.uint64)
            elif pa.types.is_boolean(kind):
                h1 = present.cast(pa.uint8()).to_numpy(zero_copy_only=False).astype(np.uint64)
            else:  # integers, dates, timestamps: their 64-bit value
                h1 = present.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
            h2 = np.zeros(len(h1), np.uint64)
        records = np.empty(len(h1), self.dtype)
        records["h1"], records["h2"], records["row"] = h1, h2, rows
        self._spill.add(records, _mix(h1 ^ h2))

    def finish(self, sample: int) -> tuple[int, list[int]]:
        """How many rows share their value with another row, and the first ``sample`` of them
        (file positions from 0, ascending). Removes the spill files."""
        count = 0
        first = np.empty(0, np.int64)
        try:
            for _, records in self._spill.partitions():
                records = records[np.lexsort((records["h2"], records["h1"]))]
                same = (records["h1"][1:] == records["h1"][:-1]) & (records["h2"][1:] == records["h2"][:-1])
                repeated = np.zeros(len(records), bool)
                repeated[1:] |= same
                repeated[:-1] |= same
                count += int(repeated.sum())
                if repeated.any():
                    first = np.sort(np.concatenate([first, records["row"][repeated]]))[:sample]
        finally:
            self._spill.close()
        return count, [int(r) for r in first]


#: base32 (RFC 4648, lower case) character -> its 5-bit value.
_BASE32 = np.zeros(256, np.uint16)
for _i, _c in enumerate(b"abcdefghijklmnopqrstuvwxyz234567"):
    _BASE32[_c] = _i
TOKEN_BYTES = 25  # gbadz.crypto.pseudonym.PSEUDONYM_LENGTH


class DistinctSubjects:
    """The distinct subject tokens of a version, each with whether any of its rows is sensitive.

    Tokens are the pseudonymiser's fixed-width ``p`` + 24 base32 characters (a keyed HMAC, so
    already uniform): the partition is taken from their first characters."""

    dtype = np.dtype([("token", f"S{TOKEN_BYTES}"), ("sensitive", "u1")])

    def __init__(self, workdir: Path | None = None) -> None:
        self._spill = _Partitioned(self.dtype, workdir)
        self.individuals = 0
        self.sensitive_individuals = 0
        self._finished = False

    def add(self, tokens: pa.Array, sensitive: np.ndarray) -> None:
        tokens = tokens.cast(pa.string())
        if tokens.null_count or not pc.all(pc.equal(pc.binary_length(tokens), TOKEN_BYTES)).as_py():
            raise ValueError("subject tokens must be non-null pseudonyms of fixed width")
        _, offsets, data = tokens.buffers()
        if offsets is None or data is None:
            raise ValueError("subject tokens must be a plain string array")
        start = int(np.frombuffer(offsets, dtype=np.int32)[tokens.offset])  # fixed width: contiguous
        fixed = np.frombuffer(data, dtype=f"S{TOKEN_BYTES}", count=len(tokens), offset=start)
        chars = np.frombuffer(data, dtype=np.uint8, count=len(tokens) * TOKEN_BYTES, offset=start)
        chars = chars.reshape(len(tokens), TOKEN_BYTES)
        parts = (_BASE32[chars[:, 1]] << 3) | (_BASE32[chars[:, 2]] >> 2)  # 5 + 3 bits: 0..255
        records = np.empty(len(tokens), self.dtype)
        records["token"], records["sensitive"] = fixed, sensitive.astype(np.uint8)
        self._spill.add(records, parts)

    def finish(self) -> None:
        """Reduce every partition to its distinct tokens (a token is sensitive if any row is)."""
        for path, records in self._spill.partitions():
            records = records[np.argsort(records["token"], kind="stable")]
            starts = np.flatnonzero(np.r_[True, records["token"][1:] != records["token"][:-1]])
            distinct = np.empty(len(starts), self.dtype)
            distinct["token"] = records["token"][starts]
            distinct["sensitive"] = np.maximum.reduceat(records["sensitive"], starts)
            distinct.tofile(path)
            self.individuals += len(distinct)
            self.sensitive_individuals += int(distinct["sensitive"].sum())
        self._finished = True

    def chunks(self) -> Iterator[tuple[list[str], list[bool]]]:
        """The distinct (token, sensitive) pairs, one partition at a time."""
        assert self._finished, "finish() first"
        for path in sorted(self._spill.folder.glob("*.bin")):
            records = np.fromfile(path, dtype=self.dtype)
            yield (
                [t.decode("ascii") for t in records["token"].tolist()],
                records["sensitive"].astype(bool).tolist(),
            )

    def close(self) -> None:
        self._spill.close()
