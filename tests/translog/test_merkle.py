"""The Merkle tree against a literal RFC 6962 reference, and the verifiers against tampering."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gbadz.translog.merkle import (
    EMPTY_ROOT,
    CompactTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, written the way the RFC states it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def tree(n: int) -> tuple[CompactTree, list[bytes]]:
    leaves = [leaf_hash(f"entry {i}".encode()) for i in range(n)]
    return CompactTree(leaves), leaves


class TestRoots:
    def test_known_answer(self) -> None:
        """Empty-tree, leaf and two-leaf hashes match the RFC 6962 known answers."""
        # RFC 6962 hashing: the empty tree, one leaf, two leaves.
        assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        assert hashlib.sha256(b"\x00").digest() == leaf_hash(b"")
        a, b = leaf_hash(b"a"), leaf_hash(b"b")
        assert hashlib.sha256(b"\x01" + a + b).digest() == CompactTree([a, b]).root()

    @given(st.integers(min_value=0, max_value=70))
    def test_every_prefix_root_matches_the_reference(self, n: int) -> None:
        """The compact tree's root at every prefix size equals the literal RFC 6962 reference root."""
        compact, leaves = tree(n)
        for size in range(n + 1):
            assert reference_root(leaves[:size]) == compact.root(size)


class TestProofs:
    @settings(max_examples=60)
    @given(st.data())
    def test_inclusion_proofs_verify_and_reject_any_change(self, data: st.DataObject) -> None:
        """Inclusion proofs verify, and fail for a forged leaf, wrong index, or altered or truncated path."""
        n = data.draw(st.integers(min_value=1, max_value=100))
        compact, leaves = tree(n)
        size = data.draw(st.integers(min_value=1, max_value=n))
        index = data.draw(st.integers(min_value=0, max_value=size - 1))
        path = compact.inclusion(index, size)
        root = compact.root(size)
        assert verify_inclusion(leaves[index], index, size, path, root)
        assert not verify_inclusion(leaf_hash(b"forged"), index, size, path, root)
        if size > 1:
            assert not verify_inclusion(leaves[index], (index + 1) % size, size, path, root)
        if path:
            broken = list(path)
            broken[data.draw(st.integers(0, len(path) - 1))] = leaf_hash(b"x")
            assert not verify_inclusion(leaves[index], index, size, broken, root)
            assert not verify_inclusion(leaves[index], index, size, path[:-1], root)

    @settings(max_examples=60)
    @given(st.data())
    def test_consistency_proofs_verify_and_reject_a_rewritten_history(self, data: st.DataObject) -> None:
        """Consistency proofs verify, and fail for a history with a rewritten entry or a truncated proof."""
        n = data.draw(st.integers(min_value=1, max_value=100))
        compact, leaves = tree(n)
        new = data.draw(st.integers(min_value=1, max_value=n))
        old = data.draw(st.integers(min_value=1, max_value=new))
        proof = compact.consistency(old, new)
        assert verify_consistency(old, new, compact.root(old), compact.root(new), proof)
        if old < new:
            # A log that rewrote an old entry cannot prove consistency with the old head.
            rewritten = list(leaves[:new])
            rewritten[data.draw(st.integers(0, old - 1))] = leaf_hash(b"rewritten")
            other = CompactTree(rewritten)
            assert not verify_consistency(
                old, new, compact.root(old), other.root(new), other.consistency(old, new)
            )
            assert not verify_consistency(old, new, compact.root(old), compact.root(new), proof[:-1])
