"""RFC 6962 / RFC 9162 Merkle trees: tree heads, inclusion and consistency proofs, verification.

Hashes: a leaf is ``SHA-256(0x00 || entry)``, an interior node ``SHA-256(0x01 || left || right)``;
the tree over n leaves splits at the largest power of two below n (RFC 6962 §2.1).

:class:`CompactTree` keeps the hash of every *aligned perfect subtree* (level k holds the
hashes of leaves ``[j*2^k, (j+1)*2^k)``), so appending is O(log n) and any tree head,
inclusion proof or consistency proof for a size up to the current one is O(log n) lookups
and hashes. The verifiers are the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms; they need
nothing but the hashes, so a regulator can run them without trusting the platform.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactTree:
    """An append-only Merkle tree with O(log n) heads and proofs (see the module docstring)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append_hash(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_hash(self, leaf: bytes) -> int:
        """Add a leaf hash; return its index."""
        index = len(self.levels[0])
        self.levels[0].append(leaf)
        level, position = 0, index
        while position % 2 == 1:  # a right child completes its parent
            parent = node_hash(self.levels[level][position - 1], self.levels[level][position])
            level += 1
            if len(self.levels) == level:
                self.levels.append([])
            self.levels[level].append(parent)
            position //= 2
        return index

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi), where the RFC's recursion only ever asks for aligned ranges."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check(size)
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 6962 §2.1.1)."""
        size = self.size if size is None else size
        self._check(size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not in a tree of {size} entries")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path

    def consistency(self, old: int, new: int | None = None) -> list[bytes]:
        """The proof that the tree of ``old`` leaves is a prefix of the one of ``new`` (§2.1.2)."""
        new = self.size if new is None else new
        self._check(new)
        if not 0 <= old <= new:
            raise ValueError(f"cannot prove {old} entries consistent with {new}")
        if old in (0, new):
            return []
        return self._subproof(old, 0, new, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self._range(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete), self._range(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._range(lo, lo + k)]

    def _check(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the log has {self.size} entries, not {size}")


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if old > new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
