"""Keyed pseudonyms and masking."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gbadz.crypto.keys import LocalKeyProvider
from gbadz.crypto.pseudonym import (
    PSEUDONYM_LENGTH,
    mask_array,
    mask_email,
    mask_keep_last,
    pseudonymiser_for,
)
from gbadz.errors import KeyDestroyed


class TestPseudonyms:
    def test_deterministic_within_a_dataset(self, provider: LocalKeyProvider) -> None:
        """The same identifier always maps to the same pseudonym, so joins still work."""
        first = pseudonymiser_for(provider, "sz-hospital-visits").token("440301199001011234")
        again = pseudonymiser_for(provider, "sz-hospital-visits").token("440301199001011234")
        assert first == again
        assert PSEUDONYM_LENGTH == len(first)
        assert "1234" not in first

    def test_unlinkable_across_datasets(self, provider: LocalKeyProvider) -> None:
        """Two datasets give the same person different pseudonyms."""
        a = pseudonymiser_for(provider, "sz-hospital-visits").token("440301199001011234")
        b = pseudonymiser_for(provider, "hk-deliveries").token("440301199001011234")
        assert a != b

    def test_distinct_values_stay_distinct(self, provider: LocalKeyProvider) -> None:
        """10,000 distinct identifiers give 10,000 distinct pseudonyms; nulls stay null."""
        values = pa.array([f"id-{i}" for i in range(10_000)] + [None])
        tokens = pseudonymiser_for(provider, "ds").array(values).to_pylist()
        assert 10_000 == len({t for t in tokens if t is not None})
        assert tokens[-1] is None

    def test_types_do_not_collide(self, provider: LocalKeyProvider) -> None:
        """The integer 42 and the string '42' are different identifiers."""
        p = pseudonymiser_for(provider, "ds")
        assert p.token(42) != p.token("42")

    def test_shredding_destroys_the_pseudonym_key(self, provider: LocalKeyProvider) -> None:
        """A retired dataset's pseudonyms cannot be recomputed."""
        pseudonymiser_for(provider, "ds")
        provider.destroy_dataset("ds")
        with pytest.raises(KeyDestroyed):
            pseudonymiser_for(provider, "ds")


class TestMasks:
    def test_phone_keeps_last_four(self) -> None:
        """A phone number keeps its last four digits."""
        assert "*******8000" == mask_keep_last("13800138000")
        assert "**" == mask_keep_last("12", keep=0)
        assert mask_keep_last(None) is None

    def test_email(self) -> None:
        """An email keeps its first letter and its domain."""
        assert "c***@example.hk" == mask_email("chan.tai.man@example.hk")

    def test_array_and_unknown_mask(self) -> None:
        """Masks apply to Arrow columns; an unknown mask name is refused."""
        assert ["****5678", None] == mask_array(pa.array(["12345678", None]), "last4").to_pylist()
        with pytest.raises(ValueError, match="unknown mask 'blur'"):
            mask_array(pa.array(["x"]), "blur")


@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=30))
def test_vectorised_last4_mask_equals_the_scalar_mask(values: list[str | None]) -> None:
    """The Arrow last-four mask gives the same result as the scalar mask for any strings and nulls."""
    from gbadz.crypto.pseudonym import mask_keep_last

    assert [mask_keep_last(v) for v in values] == mask_array(
        pa.array(values, pa.string()), "last4"
    ).to_pylist()
