"""Replicas hear each other's revocations and catalog changes at once on PostgreSQL (ADR 0027).

Replica B's timers are set to an hour, so only the notification A's transaction sends when it
commits can make B refuse the token or drop the dataset within the test's few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.config import Settings
from tests.api import basic, bearer, fetch_token, make_client
from tests.datasets import YAML, as_yaml, contract, sign_off, token

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
HOUR = 3600.0
WITHIN_S = 3.0  # milliseconds when the machine is quiet; a shared 2-core machine is not


def _deaf_to_timers(settings: Settings) -> TestClient:
    """Replica B: its revocation refresh and catalog generation check wait an hour."""
    app = create_app(settings)
    revocations, index = app.state.authenticator.revocations, app.state.catalog_index
    revocations.refresh_s = revocations.max_age_s = HOUR
    index.refresh_s = index.max_age_s = HOUR
    return TestClient(app)


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not check():
        assert time.monotonic() < deadline, f"replica b did not hear of it within {WITHIN_S} s"
        time.sleep(0.05)


class TestListener:
    def test_a_token_revoked_on_a_is_refused_by_b_without_waiting_for_its_refresh(
        self, settings: Settings
    ) -> None:
        """B refuses a token A revoked, long before its hourly refresh."""
        replica_a = create_app(settings)
        client = make_client(replica_a, "consumer")
        with TestClient(replica_a) as a, _deaf_to_timers(settings) as b:
            issued = fetch_token(a, client)
            assert 200 == b.get("/api/v1/me", headers=bearer(issued)).status_code
            assert 200 == a.post("/oauth/revoke", data={"token": issued}, headers=basic(client)).status_code
            _until(lambda: b.get("/api/v1/me", headers=bearer(issued)).status_code == 401)

    def test_a_disabled_organisation_is_refused_by_b_without_waiting(self, settings: Settings) -> None:
        """An administrator disables an organisation through A: B refuses its member's token."""
        replica_a = create_app(settings)
        admin, member = make_client(replica_a, "admin"), make_client(replica_a, "consumer")
        with TestClient(replica_a) as a, _deaf_to_timers(settings) as b:
            held = fetch_token(a, member)
            assert 200 == b.get("/api/v1/me", headers=bearer(held)).status_code
            answer = a.post(
                f"/api/v1/organizations/{member.org_id}/disable",
                headers=bearer(fetch_token(a, admin)),
            )
            assert 200 == answer.status_code, answer.text
            _until(lambda: b.get("/api/v1/me", headers=bearer(held)).status_code == 401)

    def test_a_dataset_retired_on_a_leaves_bs_search_without_waiting(self, settings: Settings) -> None:
        """B's search stops finding a dataset A retired, long before its hourly generation check."""
        replica_a = create_app(settings)
        provider, consumer = make_client(replica_a, "provider"), make_client(replica_a, "consumer")
        with TestClient(replica_a) as a, _deaf_to_timers(settings) as b:
            provider_headers = bearer(fetch_token(a, provider))
            with replica_a.state.sessionmaker() as session:
                from gbadz.identity.models import Organization

                org = session.get(Organization, provider.org_id)
                assert org is not None
                name = org.name
            word = token()
            doc = contract(f"t-{word}", name, tags=(word,))
            assert (
                201
                == a.post(
                    "/api/v1/datasets", content=as_yaml(doc), headers=provider_headers | YAML
                ).status_code
            )
            sign_off(a, replica_a, doc["id"])
            reader = bearer(fetch_token(b, consumer))

            def found() -> bool:
                return 1 == b.get(f"/api/v1/datasets?q={word}", headers=reader).json()["total"]

            _until(found)
            retired = a.post(
                f"/api/v1/datasets/{doc['id']}/retire",
                json={"reason": "superseded"},
                headers=provider_headers,
            )
            assert 200 == retired.status_code, retired.text
            _until(lambda: not found())
