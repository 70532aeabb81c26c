"""Compliance routes on both databases: inputs the fuzzer (tests/test_fuzz_api.py) found answering 5xx."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api import Client, bearer, fetch_token

HUGE = str(2**64)  # past a BIGINT: the database driver overflowed on it


class TestTransferLogPositions:
    @pytest.mark.parametrize(
        ("url", "field"),
        [
            (f"/api/v1/transfer-log/entries/{HUGE}", "index"),
            ("/api/v1/transfer-log/entries/-1", "index"),
            (f"/api/v1/transfer-log/entries/0?tree_size={HUGE}", "tree_size"),
            (f"/api/v1/transfer-log/consistency?from={HUGE}&to=2", "from"),
            (f"/api/v1/transfer-log/consistency?from=1&to={HUGE}", "to"),
        ],
    )
    def test_a_position_no_log_can_reach_is_refused_naming_it(
        self, http: TestClient, clients: dict[str, Client], url: str, field: str
    ) -> None:
        """A log position beyond a BIGINT (or below zero) is 422 naming the parameter, not a 500."""
        response = http.get(url, headers=bearer(fetch_token(http, clients["compliance_officer"])))
        assert 422 == response.status_code, response.text
        [error] = response.json()["detail"]
        assert field == error["loc"][-1]
