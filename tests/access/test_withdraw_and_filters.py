"""Issue #19 on the API: a requester withdraws an undecided request, a request's history, grant
filters for officers, a grant's deliverability, and mechanism versions along amendments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.audit import AuditRepository
from gbadz.identity.models import Organization
from tests.datasets import Party, file_mechanism

MakeParty = Callable[..., Party]
Publish = Callable[..., dict[str, Any]]
PURPOSE = "trade_transport_academic_mfg_marketing"


def ask(http: TestClient, who: Party, dataset: str, **body: Any) -> dict[str, Any]:
    payload = {"purpose": PURPOSE, "purpose_text": "Demand forecasting for delivery routes"} | body
    response = http.post(f"/api/v1/datasets/{dataset}/access-requests", json=payload, headers=who.headers)
    assert 201 == response.status_code, response.text
    created: dict[str, Any] = response.json()
    return created


def registered(app: FastAPI, *parties: Party) -> None:
    with app.state.sessionmaker.begin() as session:
        for who in parties:
            org = session.get(Organization, who.client.org_id)
            assert org is not None
            org.gba_registered = True


@pytest.fixture
def waiting(
    app: FastAPI, http: TestClient, party: MakeParty, publish: Publish
) -> tuple[Party, Party, dict[str, Any]]:
    """A Shenzhen provider, a Hong Kong startup, and its request waiting for the provider's review."""
    provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
    registered(app, provider, startup)
    dataset = publish(provider, origin="CN-SZ")["id"]
    request = ask(http, startup, dataset)
    assert "under_provider_review" == request["state"]
    return provider, startup, request


def events(app: FastAPI, subject_type: str, subject_id: str) -> list[Any]:
    with app.state.sessionmaker() as session:
        return list(AuditRepository(session).for_subject(subject_type, subject_id))


class TestWithdrawRequest:
    def test_the_requester_withdraws_and_it_is_audited_without_the_reason(
        self, app: FastAPI, http: TestClient, waiting: tuple[Party, Party, dict[str, Any]]
    ) -> None:
        """The requester withdraws a request under review; the audit says a reason was given, not what."""
        _, startup, request = waiting
        done = http.post(
            f"/api/v1/access-requests/{request['id']}/withdraw",
            json={"reason": "We found the figures in a public report"},
            headers=startup.headers,
        )
        assert 200 == done.status_code, done.text
        assert ("withdrawn", "We found the figures in a public report") == (
            done.json()["state"],
            done.json()["reason"],
        )
        [event] = [e for e in events(app, "access_request", request["id"]) if e.action.endswith("withdrawn")]
        assert {"state": "withdrawn", "from_state": "under_provider_review", "reason_given": True} == (
            event.details
        )
        read = http.get(f"/api/v1/access-requests/{request['id']}", headers=startup.headers).json()
        assert [
            ("submitted", "requester"),
            ("under_provider_review", "platform"),
            ("withdrawn", "requester"),
        ] == [(h["state"], h["by"]) for h in read["history"]]
        listed = http.get("/api/v1/access-requests?state=withdrawn", headers=startup.headers).json()
        assert [request["id"]] == [r["id"] for r in listed]

    def test_the_provider_cannot_approve_a_withdrawn_request(
        self, app: FastAPI, http: TestClient, waiting: tuple[Party, Party, dict[str, Any]]
    ) -> None:
        """Exploit: the provider tries to approve (or reject) after the startup withdrew; 409 naming the state."""
        provider, startup, request = waiting
        assert (
            200
            == http.post(
                f"/api/v1/access-requests/{request['id']}/withdraw", headers=startup.headers
            ).status_code
        )
        for action, body in (("approve", {"reason": "ok"}), ("reject", {"reason": "no thanks"})):
            answer = http.post(
                f"/api/v1/access-requests/{request['id']}/{action}", json=body, headers=provider.headers
            )
            assert (409, "state") == (answer.status_code, answer.json().get("field")), answer.text
        read = http.get(f"/api/v1/access-requests/{request['id']}", headers=startup.headers).json()
        assert ("withdrawn", None) == (read["state"], read["grant_id"])

    def test_another_organisation_cannot_withdraw(
        self, http: TestClient, party: MakeParty, waiting: tuple[Party, Party, dict[str, Any]]
    ) -> None:
        """Exploit: the provider (a party) and another startup try to withdraw someone's request: 404."""
        provider, startup, request = waiting
        rival = party("consumer", "HK")
        for who in (rival, provider, party("compliance_officer", "CN-SZ")):
            answer = http.post(f"/api/v1/access-requests/{request['id']}/withdraw", headers=who.headers)
            assert answer.status_code in (403, 404), answer.text
            assert answer.status_code == 404 or who is not rival
        read = http.get(f"/api/v1/access-requests/{request['id']}", headers=startup.headers).json()
        assert "under_provider_review" == read["state"]

    def test_a_decided_request_cannot_be_withdrawn(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """An approved request is 409 naming its state; a second withdrawal too."""
        macao = party("provider", "MO")
        startup = party("consumer", "HK")
        request = ask(http, startup, publish(macao, origin="MO", with_pi=False)["id"])
        assert "approved" == request["state"]
        answer = http.post(f"/api/v1/access-requests/{request['id']}/withdraw", headers=startup.headers)
        assert (409, "state") == (answer.status_code, answer.json()["field"]), answer.text
        assert "approved" in answer.json()["detail"]

    def test_a_too_long_reason_is_refused_and_nothing_changes(
        self, http: TestClient, waiting: tuple[Party, Party, dict[str, Any]]
    ) -> None:
        """A reason over 500 characters is 422 naming ``reason``; the request stays under review."""
        _, startup, request = waiting
        answer = http.post(
            f"/api/v1/access-requests/{request['id']}/withdraw",
            json={"reason": "x" * 501},
            headers=startup.headers,
        )
        assert 422 == answer.status_code
        assert "reason" in str(answer.json()["detail"])
        read = http.get(f"/api/v1/access-requests/{request['id']}", headers=startup.headers).json()
        assert "under_provider_review" == read["state"]


class TestGrantFilters:
    def test_an_officer_filters_grants(self, http: TestClient, party: MakeParty, publish: Publish) -> None:
        """Status, dataset, grantee, kind and expiry each narrow the officer's list; revoked shows as revoked."""
        macao = party("provider", "MO")
        startup, other = party("consumer", "HK"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        first = publish(macao, origin="MO", with_pi=False)["id"]
        second = publish(macao, origin="MO", with_pi=False)["id"]
        a = ask(http, startup, first, duration_days=10)["grant_id"]
        b = ask(http, other, second, duration_days=30)["grant_id"]
        revoked = http.post(
            f"/api/v1/grants/{b}/revoke", json={"reason": "contract ended"}, headers=officer.headers
        )
        assert 200 == revoked.status_code, revoked.text

        def ids(**params: str) -> set[str]:
            response = http.get("/api/v1/grants", params=params | {"limit": "500"}, headers=officer.headers)
            assert 200 == response.status_code, response.text
            return {g["id"] for g in response.json()} & {a, b}

        assert {a} == ids(dataset_id=first)
        assert {b} == ids(grantee_org_id=other.client.org_id)
        assert {b} == ids(status="revoked")
        assert {a} == ids(status="active")
        assert set() == ids(status="suspended")
        assert {a, b} == ids(kind="copy")
        assert set() == ids(kind="analysis")
        soon = (datetime.now(UTC) + timedelta(days=20)).date().isoformat()
        assert {a} == ids(expires_before=soon)
        # The startup's filters stay within what it can see.
        mine = http.get(
            f"/api/v1/grants?grantee_org_id={other.client.org_id}", headers=startup.headers
        ).json()
        assert [] == mine

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("status", "paused"),
            ("kind", "rows"),
            ("expires_before", "next week"),
            # Valid ISO 8601 that UTC cannot hold (year 0 or 10000 once converted): 422, never a 500.
            ("expires_before", "0001-01-01T00:00:00+05:00"),
            ("expires_before", "9999-12-31T23:59:59-05:00"),
            ("dataset_id", "x" * 101),
        ],
    )
    def test_a_bad_filter_is_named(self, http: TestClient, party: MakeParty, name: str, value: str) -> None:
        """A filter the API cannot read is 422 naming it."""
        officer = party("compliance_officer", "CN-SZ")
        answer = http.get("/api/v1/grants", params={name: value}, headers=officer.headers)
        assert 422 == answer.status_code
        assert name in [str(part) for item in answer.json()["detail"] for part in item["loc"]]


class TestDeliverable:
    def test_a_grant_on_a_dataset_with_no_published_version_is_not_deliverable(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """An active copy grant whose dataset has no published version says so (no download offered)."""
        macao = party("provider", "MO")
        startup = party("consumer", "HK")
        grant_id = ask(http, startup, publish(macao, origin="MO", with_pi=False)["id"])["grant_id"]
        grant = http.get(f"/api/v1/grants/{grant_id}", headers=startup.headers).json()
        assert ("active", None, False) == (grant["status"], grant["current_version"], grant["deliverable"])


class TestMechanismVersions:
    def test_amendments_number_the_versions_and_are_audited_as_amended(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """Record (version 1), amend (2), amend again (3); each amendment is a ``mechanism.amended`` event."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        first = file_mechanism(http, app, provider.client.org_id, startup.client.org_id, document=False)
        assert 1 == first["version"]
        body = {k: first[k] for k in ("exporter_org_id", "recipient_org_id", "kind", "reference")}
        today = datetime.now(UTC).date()
        body |= {"effective_date": (today - timedelta(days=9)).isoformat(), "filing_date": today.isoformat()}
        second = http.post(f"/api/v1/mechanisms/{first['id']}/amend", json=body, headers=officer.headers)
        assert 201 == second.status_code, second.text
        assert (2, first["id"]) == (second.json()["version"], second.json()["supersedes"])
        third = http.post(
            f"/api/v1/mechanisms/{second.json()['id']}/amend", json=body, headers=officer.headers
        )
        assert 3 == third.json()["version"], third.text
        [event] = events(app, "mechanism_evidence", third.json()["id"])
        assert ("mechanism.amended", 3, second.json()["id"]) == (
            event.action,
            event.details["version"],
            event.details["supersedes"],
        )
        # Each superseded version's own history ends with the version that replaced it.
        for older, newer in ((first["id"], second.json()["id"]), (second.json()["id"], third.json()["id"])):
            last = events(app, "mechanism_evidence", older)[-1]
            assert ("mechanism.superseded", newer) == (last.action, last.details["superseded_by"])
        listed = {m["id"]: m for m in http.get("/api/v1/mechanisms", headers=officer.headers).json()}
        assert [1, 2, 3] == [
            listed[i]["version"] for i in (first["id"], second.json()["id"], third.json()["id"])
        ]
        # Amending a superseded version is refused: only the newest is on file.
        again = http.post(f"/api/v1/mechanisms/{first['id']}/amend", json=body, headers=officer.headers)
        assert (409, "state") == (again.status_code, again.json()["field"]), again.text


class TestInstantsOutOfRange:
    @pytest.mark.parametrize("name", ["since", "until"])
    @pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
    def test_a_transfer_log_instant_utc_cannot_hold_is_named(
        self, http: TestClient, party: MakeParty, name: str, value: str
    ) -> None:
        """The transfer log's filters too: valid ISO 8601 outside UTC's range names the field, never a 500."""
        officer = party("compliance_officer", "CN-SZ")
        answer = http.get("/api/v1/transfers", params={name: value}, headers=officer.headers)
        assert (400, name) == (answer.status_code, answer.json()["field"]), answer.text
