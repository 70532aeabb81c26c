"""Issue #18 on both databases: an access request may ask for analyses instead of a copy.

What leaves an analysis grant is decided by the rules like any transfer (MA1-MA3, HA1-HA3,
OA1-OA3), from the request's kind and the contract's compute mode, never from what the
requester says. Each exploit is driven through the HTTP API by the party who would gain (a
startup wanting rows from an analysis grant, or a DP finding it records itself; an officer in a
hurry) and shown refused with nothing changed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access import service as access_service
from gbadz.access.models import AccessRequest, Grant, Obligation
from gbadz.catalog.models import Dataset
from gbadz.config import Settings
from gbadz.translog.models import LogEntry
from tests.access.test_bound_facts import TRADE, ask, count, flag_gba, hospital, publish
from tests.access.test_determinations import state
from tests.datasets import YAML, Party, as_yaml, contract, determination, file_mechanism, sign_off

MakeParty = Callable[..., Party]
ANALYSABLE = ["department", "clinic_city", "gender", "visit_date", "insured", "fee_cny"]
DP_REF = "DP-EVAL-2026-004"


def analysis_contract(
    provider: Party, origin: str, *, mode: str = "dp", with_pi: bool = True
) -> dict[str, Any]:
    """A small contract from ``origin`` whose compute block offers district x trips (bounded 0..100)."""
    doc = contract(f"t-{secrets.token_hex(5)}", provider.org_name, origin=origin, with_pi=with_pi)
    for prop in doc["schema"][0]["properties"]:
        if prop["name"] == "trips":
            prop["logicalTypeOptions"] = {"minimum": 0, "maximum": 100}
    compute: dict[str, Any] = {"mode": mode, "dimensions": ["district"], "measures": ["trips"]}
    if mode == "dp":
        compute |= {"privacy_unit": "customer_id", "budget": {"epsilon": 1.0}, "min_group_size": 5}
    doc["gbadz"]["compute"] = compute
    return doc


def register(http: TestClient, app: FastAPI, provider: Party, doc: dict[str, Any]) -> str:
    """Register a contract (no data needed for a request) and have it signed off."""
    response = http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML)
    assert 201 == response.status_code, response.text
    sign_off(http, app, doc["id"])
    return str(doc["id"])


def officer(http: TestClient, party: MakeParty) -> Party:
    """An independent compliance officer (of neither party)."""
    return party("compliance_officer", "CN-SZ")


def transfers(app: FastAPI) -> int:
    return count(app, LogEntry, LogEntry.kind != "determination")


@pytest.fixture
def hospital_analysis(
    app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
) -> dict[str, Any]:
    """The demo's release: a GBA-registered Hong Kong startup asks to analyse the Shenzhen
    hospital's visits (health overlay, mode dp); the provider's step is taken."""
    provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
    flag_gba(app, provider, startup)
    dataset = publish(app, http, settings, tmp_path, provider, hospital(provider), 60)
    asked = ask(http, startup, dataset, kind="analysis", purpose_text="Average fee per department and month")
    assert 201 == asked.status_code, asked.text
    body = asked.json()
    approve = f"/api/v1/access-requests/{body['id']}/approve"
    step = http.post(approve, json={"reason": "the hospital agrees"}, headers=provider.headers)
    assert "under_compliance_review" == step.json()["state"], step.text
    sector = file_mechanism(
        http,
        app,
        provider.client.org_id,
        startup.client.org_id,
        "SECTOR",
        sector="health",
        authority_name="Guangdong Provincial Health Commission",
    )
    return {
        "provider": provider,
        "startup": startup,
        "dataset": dataset,
        "asked": body,
        "request": body["id"],
        "approve": approve,
        "sector": sector,
    }


def dp_finding() -> dict[str, Any]:
    return {"dp_release": True, "dp_evaluation_ref": DP_REF}


def analysis_determination(sector_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"note": "The contract's DP parameters were evaluated; releases are anonymised."}
    if sector_id is not None:
        body["sector_evidence_id"] = sector_id
    return body


class TestTheRequest:
    def test_an_analysis_request_is_decided_as_a_dp_release_awaiting_the_officer(
        self, hospital_analysis: dict[str, Any]
    ) -> None:
        """The hospital's analysis request: the sector rule first, then MA2 waiting for the DP finding;
        its columns are the compute block's, never the privacy unit."""
        body = hospital_analysis["asked"]
        decision = body["decision"]
        assert ("analysis", ANALYSABLE) == (body["kind"], body["columns"])
        assert ("HUMAN_REVIEW", "M2", "dp_release_accepted") == (
            decision["outcome"],
            decision["rule_id"],
            decision["awaits"],
        )
        assert "MA2" in decision["legal_basis"]
        assert ("dp_aggregate", False, True) == (
            decision["facts"]["release"],
            decision["facts"]["dp_release_accepted"],
            decision["facts"]["has_pi"],
        )

    def test_a_copy_request_on_the_same_dataset_decides_as_before(
        self, http: TestClient, hospital_analysis: dict[str, Any]
    ) -> None:
        """A copy of the hospital's visits is still the sector rule on top of the general regime's
        mechanism: the release rules never touch a copy."""
        copy = ask(http, hospital_analysis["startup"], hospital_analysis["dataset"]).json()
        decision = copy["decision"]
        assert ("copy", "HUMAN_REVIEW", "M2", None) == (
            copy["kind"],
            decision["outcome"],
            decision["rule_id"],
            decision["awaits"],
        )
        assert ("copy", False) == (decision["facts"]["release"], decision["facts"]["dp_release_accepted"])
        assert ["M12"] == [c["rule_id"] for c in decision["considered"]]
        assert ["GBA_SC"] == decision["evidence_required"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"kind": "rows"}, "kind"),
            ({"kind": "copy", "release": "dp_aggregate"}, "release"),
            ({"kind": "analysis", "dp_release_accepted": True}, "dp_release_accepted"),
        ],
    )
    def test_no_requester_field_sets_the_release(
        self, app: FastAPI, http: TestClient, party: MakeParty, body: dict[str, Any], field: str
    ) -> None:
        """An unknown kind, or a release or finding claimed in the body, is 422 naming it; nothing is written."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        refused = ask(http, startup, dataset, **body)
        assert 422 == refused.status_code, refused.text
        assert field in str(refused.json()["detail"])
        assert 0 == count(app, AccessRequest, AccessRequest.dataset_id == dataset)

    def test_a_copy_request_of_a_dp_dataset_is_decided_as_a_copy(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """The contract offers DP analyses; a copy request is still a copy (release is the platform's fact)."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        copy = ask(http, startup, dataset).json()
        assert ("copy", "copy") == (copy["kind"], copy["decision"]["facts"]["release"])
        assert copy["decision"]["rule_id"] not in ("MA1", "MA2", "MA3")

    def test_analysis_of_a_dataset_without_a_compute_block_is_refused_naming_kind(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """gbadz.compute mode none: no analysis request is taken (409 naming kind), nothing written."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        doc = contract(f"t-{secrets.token_hex(5)}", provider.org_name, origin="CN-SZ")
        dataset = register(http, app, provider, doc)
        refused = ask(http, startup, dataset, kind="analysis")
        assert (409, "kind") == (refused.status_code, refused.json().get("field")), refused.text
        assert "offers no analyses" in refused.json()["detail"]
        assert 0 == count(app, AccessRequest, AccessRequest.dataset_id == dataset)

    @pytest.mark.parametrize(
        ("columns", "named"),
        [
            (["district", "customer_id"], "customer_id is the privacy unit"),
            (["district", "phone"], "phone is not a dimension or measure"),
            (["record_id"], "record_id is not a dimension or measure"),
        ],
    )
    def test_only_the_compute_blocks_columns_are_granted_for_analysis(
        self, app: FastAPI, http: TestClient, party: MakeParty, columns: list[str], named: str
    ) -> None:
        """The privacy unit, a personal column or any column outside the compute block: 422 naming it."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        refused = ask(http, startup, dataset, kind="analysis", columns=columns)
        assert (422, "columns") == (refused.status_code, refused.json().get("field")), refused.text
        assert named in refused.json()["detail"]
        assert 0 == count(app, AccessRequest, AccessRequest.dataset_id == dataset)

    def test_a_subset_of_the_compute_columns_may_be_asked(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """Asking for one dimension only: granted as asked; the privacy unit still makes it personal."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        asked = ask(http, startup, dataset, kind="analysis", columns=["district"]).json()
        assert (["district"], True) == (asked["columns"], asked["decision"]["facts"]["has_pi"])
        assert "MA2" == asked["decision"]["rule_id"]

    def test_the_assessment_answers_for_an_analysis_too(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """POST /transfer-assessments with kind analysis: the release rule, without writing anything."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        answer = http.post(
            "/api/v1/transfer-assessments",
            json={"dataset_id": dataset, "purpose": TRADE, "kind": "analysis"},
            headers=startup.headers,
        )
        assert 200 == answer.status_code, answer.text
        assert (["district", "trips"], "MA2") == (
            answer.json()["columns"],
            answer.json()["decision"]["rule_id"],
        )


class TestTheDpFinding:
    @pytest.mark.parametrize(
        ("origin", "recipient", "waiting", "released"),
        [("CN-SZ", "HK", "MA2", "MA3"), ("HK", "CN-SZ", "HA2", "HA3"), ("MO", "HK", "OA2", "OA3")],
    )
    def test_provider_then_officer_finding_then_release_rule(
        self,
        app: FastAPI,
        http: TestClient,
        party: MakeParty,
        origin: str,
        recipient: str,
        waiting: str,
        released: str,
    ) -> None:
        """The whole path in each regime: provider review -> the officer records the DP finding ->
        decided again -> the EXEMPT release rule, a determination naming basis and people."""
        provider, startup, checker = party("provider", origin), party("consumer", recipient), None
        dataset = register(http, app, provider, analysis_contract(provider, origin))
        asked = ask(http, startup, dataset, kind="analysis").json()
        assert ("HUMAN_REVIEW", waiting, "dp_release_accepted") == (
            asked["decision"]["outcome"],
            asked["decision"]["rule_id"],
            asked["decision"]["awaits"],
        )
        approve = f"/api/v1/access-requests/{asked['id']}/approve"
        step = http.post(approve, json={"reason": "we agree to aggregates"}, headers=provider.headers)
        assert "under_compliance_review" == step.json()["state"], step.text
        checker = officer(http, party)
        done = http.post(
            approve,
            json={"findings": dp_finding(), "determination": analysis_determination()},
            headers=checker.headers,
        )
        assert 200 == done.status_code, done.text
        body = done.json()
        assert ("approved", "EXEMPT", released) == (
            body["state"],
            body["decision"]["outcome"],
            body["decision"]["rule_id"],
        )
        assert {"outcome": "HUMAN_REVIEW", "rule_id": waiting} == {
            k: body["decision"]["reviewed"][k] for k in ("outcome", "rule_id")
        }
        assert (True, DP_REF) == (body["findings"]["dp_release"], body["findings"]["dp_evaluation_ref"])
        grant = http.get(f"/api/v1/grants/{body['grant_id']}", headers=startup.headers).json()
        assert ("analysis", released, ["district", "trips"]) == (
            grant["kind"],
            grant["rule_id"],
            grant["columns"],
        )
        determined = grant["determination"]
        # The grantee reads the party that took each step, never the person (invariant 9).
        assert (released, [("provider", "provider")]) == (
            determined["rule_id"],
            [(a["step"], a["by"]) for a in determined["approvers"] if a["step"] == "provider"],
        )
        assert step.json()["reviews"][0]["by"] not in json.dumps(grant)
        assert {"provider", "compliance"} == {a["step"] for a in determined["approvers"]}
        assert (True, DP_REF) == (
            determined["findings"]["dp_release"],
            determined["findings"]["dp_evaluation_ref"],
        )
        # An anonymised release counts no individuals and reserves none; no copy, no deletion duty.
        with app.state.sessionmaker() as session:
            row = session.get(Grant, body["grant_id"])
            assert row is not None
            assert ("analysis", 0, 0) == (row.kind, row.reserved_pi, row.reserved_spi)
            duties = {
                d.kind for d in session.scalars(sa.select(Obligation).where(Obligation.grant_id == row.id))
            }
        assert not duties & {"pipia", "notice_consent", "recipient_deletion"}

    def test_an_approval_without_the_finding_is_refused_naming_it(
        self, app: FastAPI, http: TestClient, party: MakeParty, hospital_analysis: dict[str, Any]
    ) -> None:
        """The officer in a hurry: a full determination (sector approval named) but no DP finding is
        409 naming findings.dp_release; nothing changes."""
        refused = http.post(
            hospital_analysis["approve"],
            json={"determination": analysis_determination(hospital_analysis["sector"]["id"])},
            headers=officer(http, party).headers,
        )
        assert (409, "findings.dp_release") == (refused.status_code, refused.json().get("field")), (
            refused.text
        )
        assert "MA2" in refused.json()["detail"]
        assert ("under_compliance_review", 0, 0) == state(app, hospital_analysis["request"])

    def test_a_dp_finding_without_its_evaluation_is_refused_naming_it(
        self, app: FastAPI, http: TestClient, party: MakeParty, hospital_analysis: dict[str, Any]
    ) -> None:
        """crossborder-rules.md §4: anonymised only with an evaluation attached. The officer ticks
        the DP finding but names no evaluation: 422 naming findings.dp_evaluation_ref; nothing changes."""
        checker = officer(http, party)
        for findings in ({"dp_release": True}, {"dp_release": True, "dp_evaluation_ref": "   "}):
            refused = http.post(
                hospital_analysis["approve"],
                json={
                    "findings": findings,
                    "determination": analysis_determination(hospital_analysis["sector"]["id"]),
                },
                headers=checker.headers,
            )
            assert (422, "findings.dp_evaluation_ref") == (
                refused.status_code,
                refused.json().get("field"),
            ), refused.text
            assert ("under_compliance_review", 0, 0) == state(app, hospital_analysis["request"])
        shown = http.get(
            f"/api/v1/access-requests/{hospital_analysis['request']}", headers=checker.headers
        ).json()
        assert not (shown.get("findings") or {}).get("dp_release"), shown

    def test_the_startup_cannot_record_the_finding(
        self, app: FastAPI, http: TestClient, hospital_analysis: dict[str, Any]
    ) -> None:
        """The startup approving its own analysis with the DP finding: refused, nothing changes."""
        refused = http.post(
            hospital_analysis["approve"],
            json={
                "findings": dp_finding(),
                "determination": analysis_determination(hospital_analysis["sector"]["id"]),
            },
            headers=hospital_analysis["startup"].headers,
        )
        assert 403 == refused.status_code, refused.text
        assert ("under_compliance_review", 0, 0) == state(app, hospital_analysis["request"])

    def test_the_provider_cannot_record_the_finding_at_its_step(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """The provider taking its step with the DP finding: 403 naming findings; the step is not taken."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(http, app, provider, analysis_contract(provider, "CN-SZ"))
        asked = ask(http, startup, dataset, kind="analysis").json()
        refused = http.post(
            f"/api/v1/access-requests/{asked['id']}/approve",
            json={"reason": "fine by us", "findings": dp_finding()},
            headers=provider.headers,
        )
        assert (403, "findings") == (refused.status_code, refused.json().get("field")), refused.text
        assert ("under_provider_review", 0, 0) == state(app, asked["id"])

    def test_the_hospital_release_needs_the_sector_approval_and_the_finding(
        self, app: FastAPI, http: TestClient, party: MakeParty, hospital_analysis: dict[str, Any]
    ) -> None:
        """Health data: the finding alone leaves the sector rule open (sector approval named, 422);
        with both, MA3 with the sector approval in the basis, and the determination logged."""
        checker = officer(http, party)
        no_sector = http.post(
            hospital_analysis["approve"],
            json={"findings": dp_finding(), "determination": analysis_determination()},
            headers=checker.headers,
        )
        assert (422, "determination.sector_evidence_id") == (
            no_sector.status_code,
            no_sector.json().get("field"),
        ), no_sector.text
        assert ("under_compliance_review", 0, 0) == state(app, hospital_analysis["request"])
        done = http.post(
            hospital_analysis["approve"],
            json={
                "findings": dp_finding(),
                "determination": analysis_determination(hospital_analysis["sector"]["id"]),
            },
            headers=checker.headers,
        )
        assert 200 == done.status_code, done.text
        decision = done.json()["decision"]
        assert ("EXEMPT", "MA3") == (decision["outcome"], decision["rule_id"])
        assert decision["legal_basis"].startswith("PIPL Art.4, Art.73(4)")
        assert hospital_analysis["sector"]["reference"] in decision["legal_basis"]
        assert ("approved", 1, 1) == state(app, hospital_analysis["request"])
        grant = http.get(
            f"/api/v1/grants/{done.json()['grant_id']}", headers=hospital_analysis["startup"].headers
        ).json()
        assert {
            "mode": "dp",
            "dimensions": ["department", "clinic_city", "gender", "visit_date", "insured"],
            "measures": [{"name": "fee_cny", "minimum": 0.0, "maximum": 5000.0}],
            "privacy_unit": "patient_id",
            "max_rows_per_person": 5,
            "max_groups_per_person": None,
            "budget": {"epsilon": 3.0, "delta": 1e-7, "max_epsilon_per_query": 1.0},
            "min_group_size": 20,
        } == grant["analysis"]
        listed = http.get("/api/v1/grants", headers=hospital_analysis["startup"].headers).json()
        assert [("analysis", "MA3")] == [(g["kind"], g["rule_id"]) for g in listed]

    def test_a_dp_finding_does_not_relax_a_copy(
        self, app: FastAPI, http: TestClient, party: MakeParty, hospital_analysis: dict[str, Any]
    ) -> None:
        """The exploit: record the DP finding on a copy request to skip its mechanism. The copy still
        needs the general regime's GBA standard contract (422 naming determination.evidence_id)."""
        provider, startup = hospital_analysis["provider"], hospital_analysis["startup"]
        copy = ask(http, startup, hospital_analysis["dataset"], purpose_text="Raw visits for a model").json()
        approve = f"/api/v1/access-requests/{copy['id']}/approve"
        http.post(approve, json={"reason": "ok"}, headers=provider.headers)
        refused = http.post(
            approve,
            json={
                "findings": dp_finding(),
                "determination": determination(sector_evidence_id=hospital_analysis["sector"]["id"]),
            },
            headers=officer(http, party).headers,
        )
        assert (422, "determination.evidence_id") == (refused.status_code, refused.json().get("field")), (
            refused.text
        )
        assert ("under_compliance_review", 0, 0) == state(app, copy["id"])

    def test_redecide_gives_the_release_rule_again_with_live_facts(
        self, app: FastAPI, http: TestClient, party: MakeParty, hospital_analysis: dict[str, Any]
    ) -> None:
        """Invariant 7: before every release the grant is decided again (live contract, counters,
        findings and sector approval): MA3 again, nothing to suspend."""
        done = http.post(
            hospital_analysis["approve"],
            json={
                "findings": dp_finding(),
                "determination": analysis_determination(hospital_analysis["sector"]["id"]),
            },
            headers=officer(http, party).headers,
        ).json()
        with app.state.sessionmaker() as session:
            grant = session.get(Grant, done["grant_id"])
            dataset = session.get(Dataset, hospital_analysis["dataset"])
            assert grant is not None
            assert dataset is not None
            assert dataset.current_version is not None
            again = access_service.redecide(
                session, grant, dataset, dataset.current_version, datetime.now(UTC)
            )
        assert ("EXEMPT", "MA3", None) == (
            again.decision.outcome,
            again.decision.rule_id,
            again.suspend_because,
        )
        assert ("dp_aggregate", True, True) == (
            again.decision.facts["release"],
            again.decision.facts["dp_release_accepted"],
            again.decision.facts["sector_approved"],
        )
        assert "none" == again.decision.counter


class TestNoCopyOfAnAnalysisGrant:
    @pytest.fixture
    def analysis_grant(self, app: FastAPI, http: TestClient, party: MakeParty) -> dict[str, Any]:
        """A thresholded analysis of a dataset with no personal information: approved at once (M5)."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = register(
            http, app, provider, analysis_contract(provider, "CN-SZ", mode="threshold", with_pi=False)
        )
        asked = ask(http, startup, dataset, kind="analysis").json()
        assert ("approved", "M5", "threshold_aggregate") == (
            asked["state"],
            asked["decision"]["rule_id"],
            asked["decision"]["facts"]["release"],
        )
        return {"startup": startup, "grant": asked["grant_id"], "dataset": dataset}

    def test_a_delivery_of_an_analysis_grant_is_refused(
        self, app: FastAPI, http: TestClient, analysis_grant: dict[str, Any]
    ) -> None:
        """The startup asks for download links of its analysis grant: 409, nothing logged or copied."""
        before = transfers(app)
        refused = http.post(
            f"/api/v1/grants/{analysis_grant['grant']}/deliveries", headers=analysis_grant["startup"].headers
        )
        assert (409, "grant") == (refused.status_code, refused.json().get("field")), refused.text
        assert "grant: an analysis grant releases aggregates, not copies" == refused.json()["detail"]
        assert before == transfers(app)

    def test_a_sharing_profile_of_an_analysis_grant_is_refused(
        self, app: FastAPI, http: TestClient, analysis_grant: dict[str, Any]
    ) -> None:
        """No Delta Sharing profile (so no share) for an analysis grant: 409 as for a download."""
        refused = http.get(
            f"/api/v1/grants/{analysis_grant['grant']}/sharing-profile",
            headers=analysis_grant["startup"].headers,
        )
        assert (409, "grant") == (refused.status_code, refused.json().get("field")), refused.text

    def test_a_sharing_token_for_an_analysis_grant_finds_no_share(
        self, app: FastAPI, http: TestClient, analysis_grant: dict[str, Any]
    ) -> None:
        """Even with a validly signed sharing token naming it, an analysis grant is no share: 404."""
        from gbadz.delivery.sharing import issue_token

        with app.state.sessionmaker() as session:
            grant = session.get(Grant, analysis_grant["grant"])
            assert grant is not None
            token, _ = issue_token(app.state.keys, grant, datetime.now(UTC))
        before = transfers(app)
        for path in ("/delta-sharing/shares", f"/delta-sharing/shares/grant-{analysis_grant['grant']}"):
            refused = http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert 404 == refused.status_code, refused.text
        query = http.post(
            f"/delta-sharing/shares/grant-{analysis_grant['grant']}/schemas/default/tables/"
            f"{analysis_grant['dataset']}/query",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert 404 == query.status_code, query.text
        assert before == transfers(app)

    def test_the_grant_says_what_it_is(self, http: TestClient, analysis_grant: dict[str, Any]) -> None:
        """The grant's answer names its kind and what may be asked (threshold mode: no budget)."""
        grant = http.get(
            f"/api/v1/grants/{analysis_grant['grant']}", headers=analysis_grant["startup"].headers
        )
        body = grant.json()
        assert ("analysis", "threshold", None, ["district"]) == (
            body["kind"],
            body["analysis"]["mode"],
            body["analysis"]["budget"],
            body["analysis"]["dimensions"],
        )


class TestAChangedContract:
    def test_a_changed_compute_block_voids_the_finding_until_an_officer_decides_again(
        self,
        app: FastAPI,
        http: TestClient,
        party: MakeParty,
        hospital_analysis: dict[str, Any],
        settings: Settings,
        tmp_path: Path,
    ) -> None:
        """The provider raises the budget: the finding was made on the old parameters, so the grant
        stops (MA2 again) until an officer records it anew; a contract offering no analyses keeps
        it stopped."""
        checker = officer(http, party)
        done = http.post(
            hospital_analysis["approve"],
            json={
                "findings": dp_finding(),
                "determination": analysis_determination(hospital_analysis["sector"]["id"]),
            },
            headers=checker.headers,
        ).json()
        grant, startup = done["grant_id"], hospital_analysis["startup"]
        provider = hospital_analysis["provider"]
        doc = hospital(provider)
        doc["id"] = hospital_analysis["dataset"]
        doc["version"] = "1.0.1"
        doc["gbadz"]["compute"]["budget"]["epsilon"] = 9.0
        changed = http.put(
            f"/api/v1/datasets/{doc['id']}", content=as_yaml(doc), headers=provider.headers | YAML
        )
        assert 200 == changed.status_code, changed.text
        redecide = f"/api/v1/grants/{grant}/redecide"
        kept = http.post(redecide, headers=checker.headers)
        assert 200 == kept.status_code, kept.text
        assert ("suspended", True) == (kept.json()["status"], "MA2" in kept.json()["suspended_reason"])
        resumed = http.post(redecide, json={"findings": dp_finding()}, headers=checker.headers).json()
        assert ("active", None) == (resumed["status"], resumed["suspended_reason"])
        assert 9.0 == resumed["analysis"]["budget"]["epsilon"]
        doc["version"] = "1.0.2"
        doc["gbadz"]["compute"] = {"mode": "none"}
        changed = http.put(
            f"/api/v1/datasets/{doc['id']}", content=as_yaml(doc), headers=provider.headers | YAML
        )
        assert 200 == changed.status_code, changed.text
        stopped = http.post(redecide, json={"findings": dp_finding()}, headers=checker.headers).json()
        assert ("suspended", None) == (stopped["status"], stopped["analysis"])
        assert "no longer offers analyses" in stopped["suspended_reason"]
        held = http.get(f"/api/v1/grants/{grant}", headers=startup.headers).json()
        assert "suspended" == held["status"]
