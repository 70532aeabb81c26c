"""Access requests end to end on both databases: licence binding, engine decisions, review states, grants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import AccessRequest
from gbadz.audit import AuditRepository
from tests.datasets import Party, determination, file_mechanism

MakeParty = Callable[..., Party]
Publish = Callable[..., dict[str, Any]]
PURPOSE = "trade_transport_academic_mfg_marketing"


def ask(http: TestClient, who: Party, dataset: str, **body: Any) -> Any:
    payload = {"purpose": PURPOSE, "purpose_text": "Demand forecasting for delivery routes"} | body
    return http.post(f"/api/v1/datasets/{dataset}/access-requests", json=payload, headers=who.headers)


def created(response: Any) -> dict[str, Any]:
    assert 201 == response.status_code, response.text
    body: dict[str, Any] = response.json()
    return body


def state_of(app: FastAPI, request_id: str) -> str:
    with app.state.sessionmaker() as session:
        return str(session.scalar(sa.select(AccessRequest.state).where(AccessRequest.id == request_id)))


@pytest.fixture
def gba_registered(app: FastAPI) -> Callable[[Party], Party]:
    from gbadz.identity.models import Organization

    def mark(who: Party) -> Party:
        with app.state.sessionmaker.begin() as session:
            org = session.get(Organization, who.client.org_id)
            assert org is not None
            org.gba_registered = True
        return who

    return mark


class TestDecisions:
    def test_macao_statistics_to_a_hong_kong_startup_is_approved_automatically(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Macao statistics without personal data reach a Hong Kong startup at once, with an active grant."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False)["id"]
        startup = party("consumer", "HK")
        body = created(ask(http, startup, dataset, duration_days=30))
        assert "approved" == body["state"]
        assert body["grant_id"]
        assert body["decision"]["legal_basis"]
        assert body["decision"]["rules_hash"]
        grants = http.get("/api/v1/grants", headers=startup.headers).json()
        assert [body["grant_id"]] == [g["id"] for g in grants]
        assert "active" == grants[0]["status"]

    def test_shenzhen_personal_data_to_a_gba_registered_startup_needs_the_gba_contract(
        self,
        http: TestClient,
        party: MakeParty,
        publish: Publish,
        gba_registered: Callable[[Party], Party],
        app: FastAPI,
    ) -> None:
        """Shenzhen personal data needs provider review, then compliance approval once a GBA SC is filed."""
        shenzhen = gba_registered(party("provider", "CN-SZ"))
        dataset = publish(shenzhen, origin="CN-SZ")["id"]
        startup = gba_registered(party("consumer", "HK"))
        officer = party("compliance_officer", "CN-SZ")
        # "What would it take?" first: advice, nothing written.
        advice = http.post(
            "/api/v1/transfer-assessments",
            json={"dataset_id": dataset, "purpose": PURPOSE},
            headers=startup.headers,
        )
        assert 200 == advice.status_code, advice.text
        assert "GBA_SC" == advice.json()["decision"]["outcome"]
        assert ["GBA_SC"] == advice.json()["decision"]["evidence_required"]
        assert "missing" == advice.json()["decision"]["evidence"]["status"]
        assert not advice.json()["auto_approvable"]

        body = created(ask(http, startup, dataset, duration_days=30))
        assert "under_provider_review" == body["state"]
        assert "GBA_SC" == body["decision"]["outcome"]
        # The startup cannot approve its own request; another provider cannot see it.
        assert (
            403
            == http.post(
                f"/api/v1/access-requests/{body['id']}/approve", json={}, headers=startup.headers
            ).status_code
        )
        stranger = party("provider", "CN-SZ")
        assert (
            404
            == http.post(
                f"/api/v1/access-requests/{body['id']}/approve", json={}, headers=stranger.headers
            ).status_code
        )
        assert "under_provider_review" == state_of(app, body["id"])

        step = http.post(
            f"/api/v1/access-requests/{body['id']}/approve",
            json={"reason": "fine by us"},
            headers=shenzhen.headers,
        )
        assert "under_compliance_review" == step.json()["state"], step.text
        # The provider cannot also do the compliance step.
        assert (
            403
            == http.post(
                f"/api/v1/access-requests/{body['id']}/approve", json={}, headers=shenzhen.headers
            ).status_code
        )
        # An empty approval is not a determination: 422 naming the field, nothing changes.
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        empty = http.post(approve, json={}, headers=officer.headers)
        assert (422, "determination") == (empty.status_code, empty.json()["field"])
        # No GBA standard contract on file: the determination names none yet.
        blocked = http.post(approve, json={"determination": determination()}, headers=officer.headers)
        assert (422, "determination.evidence_id") == (blocked.status_code, blocked.json()["field"])
        assert "under_compliance_review" == state_of(app, body["id"])
        filed = file_mechanism(http, app, shenzhen.client.org_id, startup.client.org_id, "GBA_SC")
        assert ("GBA_SC_HK", "GD_CAC") == (filed["variant"], filed["authority"])
        for missing in ("note", "pipia_reference", "pipia_date"):
            partial = http.post(
                approve,
                json={"determination": determination(filed["id"]) | {missing: None}},
                headers=officer.headers,
            )
            assert (422, f"determination.{missing}") == (partial.status_code, partial.json()["field"])
        assert "under_compliance_review" == state_of(app, body["id"])
        approved = http.post(
            approve, json={"determination": determination(filed["id"])}, headers=officer.headers
        )
        assert 200 == approved.status_code, approved.text
        assert "approved" == approved.json()["state"]
        assert "satisfied" == approved.json()["decision"]["evidence"]["status"]
        assert ["provider", "compliance"] == [r["step"] for r in approved.json()["reviews"]]
        # Approving twice is a conflict and changes nothing.
        again = http.post(
            approve, json={"determination": determination(filed["id"])}, headers=officer.headers
        )
        assert 409 == again.status_code
        with app.state.sessionmaker() as session:
            actions = [e.action for e in AuditRepository(session).for_subject("access_request", body["id"])]
        assert [
            "access_request.submitted",
            "access_request.under_provider_review",
            "access_request.under_compliance_review",
            "access_request.approved",
        ] == actions

    def test_a_late_filed_contract_does_not_satisfy_the_mechanism(
        self, http: TestClient, party: MakeParty, publish: Publish, gba_registered: Callable[[Party], Party]
    ) -> None:
        """A GBA standard contract filed too long after taking effect is a late filing, not evidence."""
        shenzhen = gba_registered(party("provider", "CN-SZ"))
        dataset = publish(shenzhen, origin="CN-SZ")["id"]
        startup = gba_registered(party("consumer", "HK"))
        officer = party("compliance_officer")
        effective = datetime.now(UTC).date() - timedelta(days=60)
        http.post(
            "/api/v1/mechanisms",
            json={
                "exporter_org_id": shenzhen.client.org_id,
                "recipient_org_id": startup.client.org_id,
                "kind": "GBA_SC",
                "reference": f"GBA-SC-LATE-{startup.client.org_id[:8]}",
                "effective_date": effective.isoformat(),
                "filing_date": (effective + timedelta(days=40)).isoformat(),
            },
            headers=officer.headers,
        )
        advice = http.post(
            "/api/v1/transfer-assessments",
            json={"dataset_id": dataset, "purpose": PURPOSE},
            headers=startup.headers,
        ).json()
        assert "late_filing" == advice["decision"]["evidence"]["status"]

    def test_core_data_is_prohibited_and_can_never_be_approved(
        self, http: TestClient, party: MakeParty, publish: Publish, app: FastAPI
    ) -> None:
        """A request for core data is rejected as prohibited (M1), and nobody can approve it afterwards."""
        shenzhen = party("provider", "CN-SZ")
        dataset = publish(shenzhen, origin="CN-SZ", category="core", visible_to=("HK",))["id"]
        startup = party("consumer", "HK")
        body = created(ask(http, startup, dataset))
        assert ("rejected", "PROHIBITED", "M1") == (
            body["state"],
            body["decision"]["outcome"],
            body["decision"]["rule_id"],
        )
        assert body["grant_id"] is None
        for who in (shenzhen, party("compliance_officer")):
            response = http.post(
                f"/api/v1/access-requests/{body['id']}/approve", json={}, headers=who.headers
            )
            assert (409, "RequestNotUnderReview", "state") == (
                response.status_code,
                response.json()["error"],
                response.json()["field"],
            )
        assert "rejected" == state_of(app, body["id"])

    def test_the_provider_can_reject_with_a_reason(
        self, http: TestClient, party: MakeParty, publish: Publish, gba_registered: Callable[[Party], Party]
    ) -> None:
        """A provider can reject a request only with a reason, and a rejected request stays rejected."""
        shenzhen = gba_registered(party("provider", "CN-SZ"))
        dataset = publish(shenzhen, origin="CN-SZ")["id"]
        body = created(ask(http, gba_registered(party("consumer", "HK")), dataset))
        url = f"/api/v1/access-requests/{body['id']}/reject"
        assert 422 == http.post(url, json={}, headers=shenzhen.headers).status_code  # a reason is required
        rejected = http.post(url, json={"reason": "not for this purpose"}, headers=shenzhen.headers)
        assert ("rejected", "not for this purpose") == (rejected.json()["state"], rejected.json()["reason"])
        again = http.post(url, json={"reason": "again"}, headers=shenzhen.headers)
        assert (409, "RequestNotUnderReview") == (again.status_code, again.json()["error"])


class TestLicence:
    def test_a_purpose_the_licence_does_not_permit_is_rejected_with_the_clause(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A purpose the licence does not permit is rejected, citing the permitted_purposes clause."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False, purposes=("other",))["id"]
        body = created(ask(http, party("consumer", "HK"), dataset, purpose="emergency"))
        assert "rejected" == body["state"]
        assert "licence.permitted_purposes" in body["reason"]

    def test_duration_is_capped_and_columns_limited(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A request's duration is capped at the licence maximum and covers only the columns asked for."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False)["id"]  # licence: P1Y
        body = created(
            ask(http, party("consumer", "HK"), dataset, duration_days=2000, columns=["district", "trips"])
        )
        assert 365 == body["duration_days"]
        assert ["district", "trips"] == body["columns"]

    def test_onward_transfer_refused_when_the_licence_forbids_it(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Onward transfer outside the GBA is rejected when the licence does not allow it."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False)["id"]
        body = created(ask(http, party("consumer", "HK"), dataset, onward_transfer="outside_gba"))
        assert "rejected" == body["state"]
        assert "onward_transfer_allowed" in body["reason"]


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "status", "field"),
        [
            ({"purpose": "world_domination"}, 422, "purpose"),
            ({"destination": "XX"}, 422, "destination"),
            ({"duration_days": -1}, 422, "duration_days"),
            ({"duration_days": 10**9}, 422, "duration_days"),
            ({"columns": ["no_such_column"]}, 400, "columns"),
            ({"columns": ["trips", "trips"]}, 400, "columns"),
            ({"purpose_text": "x"}, 422, "purpose_text"),
            ({"surprise": True}, 422, "surprise"),
        ],
    )
    def test_bad_requests_name_the_field_and_write_nothing(
        self,
        http: TestClient,
        party: MakeParty,
        publish: Publish,
        app: FastAPI,
        body: dict[str, Any],
        status: int,
        field: str,
    ) -> None:
        """An invalid access request is refused naming the offending field, and no request is stored."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False)["id"]
        response = ask(http, party("consumer", "HK"), dataset, **body)
        assert status == response.status_code, response.text
        assert field in str(response.json()["detail"])
        if status == 400:  # a business rule names its field for clients; 422 lists pydantic's locations
            assert ("ColumnNotInSchema", field) == (response.json()["error"], response.json()["field"])
        with app.state.sessionmaker() as session:
            count = session.scalar(sa.select(sa.func.count()).where(AccessRequest.dataset_id == dataset))
        assert 0 == count

    def test_hidden_or_missing_datasets_are_404_and_providers_cannot_request(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A hidden dataset is a 404 like a missing one, to requests and assessments; providers can't ask."""
        shenzhen = party("provider", "CN-SZ")
        secret = publish(shenzhen, origin="CN-SZ", category="important")["id"]
        startup = party("consumer", "HK")
        hidden, missing = ask(http, startup, secret), ask(http, startup, "no-such-dataset")
        assert (404, "DatasetNotFound") == (hidden.status_code, hidden.json()["error"])
        assert hidden.json()["error"] == missing.json()["error"]
        assert hidden.json()["detail"].replace(secret, "X") == missing.json()["detail"].replace(
            "no-such-dataset", "X"
        )
        assert 403 == ask(http, shenzhen, secret).status_code
        advice = http.post(
            "/api/v1/transfer-assessments",
            json={"dataset_id": secret, "purpose": PURPOSE},
            headers=startup.headers,
        )
        assert 404 == advice.status_code

    def test_grants_can_be_revoked_once_and_only_by_a_party(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Only a party to a grant can revoke it, and only once; to anyone else the grant is missing."""
        macao = party("provider", "MO")
        dataset = publish(macao, origin="MO", with_pi=False)["id"]
        startup = party("consumer", "HK")
        grant = created(ask(http, startup, dataset))["grant_id"]
        url = f"/api/v1/grants/{grant}/revoke"
        assert (
            404
            == http.post(
                url, json={"reason": "not mine"}, headers=party("consumer", "HK").headers
            ).status_code
        )
        revoked = http.post(url, json={"reason": "licence breach reported"}, headers=macao.headers)
        assert "revoked" == revoked.json()["status"], revoked.text
        again = http.post(url, json={"reason": "again"}, headers=macao.headers)
        assert (409, "GrantAlreadyRevoked") == (again.status_code, again.json()["error"])


class TestExpiringMechanisms:
    def test_only_mechanisms_expiring_within_the_window_are_listed(
        self, http: TestClient, party: MakeParty
    ) -> None:
        """Officers see only mechanisms expiring within the window; a reference can't be filed twice."""
        exporter, recipient = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer")
        today = datetime.now(UTC).date()
        references = {}
        for label, valid_to in (("soon", today + timedelta(days=20)), ("later", today + timedelta(days=700))):
            reference = f"CAC-ASSESS-{label}-{exporter.client.org_id[:8]}"
            references[label] = reference
            filed = http.post(
                "/api/v1/mechanisms",
                json={
                    "exporter_org_id": exporter.client.org_id,
                    "recipient_org_id": recipient.client.org_id,
                    "kind": "ASSESSMENT",
                    "reference": reference,
                    "issued": (today - timedelta(days=300)).isoformat(),
                    "valid_to": valid_to.isoformat(),
                },
                headers=exporter.headers,
            )
            assert 201 == filed.status_code, filed.text
        listed = http.get("/api/v1/compliance/mechanisms/expiring", headers=officer.headers)
        assert 200 == listed.status_code, listed.text
        mine = [m for m in listed.json() if m["exporter_org_id"] == exporter.client.org_id]
        assert [references["soon"]] == [m["reference"] for m in mine]
        assert 0 < mine[0]["working_days_left"] <= 20
        assert 403 == http.get("/api/v1/compliance/mechanisms/expiring", headers=exporter.headers).status_code
        # Filing the same reference twice is refused.
        again = http.post(
            "/api/v1/mechanisms",
            json={
                "exporter_org_id": exporter.client.org_id,
                "recipient_org_id": recipient.client.org_id,
                "kind": "ASSESSMENT",
                "reference": references["soon"],
            },
            headers=exporter.headers,
        )
        assert 409 == again.status_code


class TestLicenceRefusal:
    def test_a_licence_narrowed_under_review_is_refused_as_the_licence_not_the_law(
        self,
        http: TestClient,
        party: MakeParty,
        publish: Publish,
        gba_registered: Callable[[Party], Party],
        app: FastAPI,
    ) -> None:
        """The provider narrows the licence while a request waits for compliance: the approval is
        refused (409) as LicenceProhibits naming the licence, not as a prohibited transfer."""
        from gbadz.console.i18n import _ROWS
        from tests.datasets import YAML, as_yaml, contract, sign_off

        shenzhen = gba_registered(party("provider", "CN-SZ"))
        dataset = publish(shenzhen, origin="CN-SZ")["id"]
        startup = gba_registered(party("consumer", "HK"))
        body = created(ask(http, startup, dataset, duration_days=30))
        url = f"/api/v1/access-requests/{body['id']}/approve"
        step = http.post(url, json={"reason": "fine by us"}, headers=shenzhen.headers)
        assert "under_compliance_review" == step.json()["state"], step.text
        narrowed = contract(dataset, shenzhen.org_name, origin="CN-SZ", version="1.1.0", purposes=("other",))
        changed = http.put(
            f"/api/v1/datasets/{dataset}", content=as_yaml(narrowed), headers=shenzhen.headers | YAML
        )
        assert 200 == changed.status_code, changed.text
        sign_off(http, app, dataset)
        officer = party("compliance_officer", "CN-SZ")
        refused = http.post(url, json={"determination": determination()}, headers=officer.headers)
        assert (409, "LicenceProhibits", "licence") == (
            refused.status_code,
            refused.json()["error"],
            refused.json().get("field"),
        ), refused.text
        assert "licence.permitted_purposes" in refused.json()["detail"]
        assert all(_ROWS["error:LicenceProhibits"][1:])
        assert "出境" not in "".join(_ROWS["error:LicenceProhibits"][1:])
