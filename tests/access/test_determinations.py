"""Issue #16 on both databases: an approval is a determination, and the log is the regulator's record.

Each test drives an exploit through the HTTP API as the party who would gain (an officer in a
hurry, a provider approving its own export, a startup keeping copies after its grant ends) and
shows it refused with nothing changed, or shows the record the law asks for.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import AccessRequest, Grant, Obligation
from gbadz.config import Settings, settings_environment
from gbadz.delivery.service import sweep_ended_grants
from gbadz.identity import service as identity_service
from gbadz.translog.log import export, verify_export
from gbadz.translog.models import Checkpoint, LogEntry, LogHead
from tests.access.test_bound_facts import ask, flag_gba, hospital, individuals, logistics, publish
from tests.api import Client, fetch_token
from tests.conftest import REPO, run_cli
from tests.datasets import Party, determination, file_mechanism

MakeParty = Callable[..., Party]


def officer_of(app: FastAPI, http: TestClient, org_id: str) -> Party:
    """A compliance officer employed by ``org_id`` (who could take that organisation's provider step)."""
    with app.state.sessionmaker.begin() as session:
        issued = identity_service.create_client(
            session, actor="test", org_id=org_id, role="compliance_officer"
        )
        client = Client(issued.client.client_id, issued.client_secret, org_id, "compliance_officer")
    return Party(client, fetch_token(http, client), "same org")


def state(app: FastAPI, request_id: str) -> tuple[str, int, int]:
    """The request's state, its grants, and the determinations logged for it."""
    with app.state.sessionmaker() as session:
        request = session.get(AccessRequest, request_id)
        assert request is not None
        grants = session.scalar(
            sa.select(sa.func.count()).select_from(Grant).where(Grant.request_id == request_id)
        )
        logged = session.scalar(
            sa.select(sa.func.count())
            .select_from(LogEntry)
            .where(LogEntry.kind == "determination", LogEntry.entry.contains(request_id))
        )
        return request.state, int(grants or 0), int(logged or 0)


@pytest.fixture
def health(
    app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
) -> dict[str, Any]:
    """The demo's journey: the Shenzhen hospital's visits (health overlay), a GBA-registered
    Hong Kong startup asking, the provider's step taken. Returns the parties and the request."""
    provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
    flag_gba(app, provider, startup)
    dataset = publish(app, http, settings, tmp_path, provider, hospital(provider), 60)
    body = ask(http, startup, dataset, purpose_text="Waiting-time research across clinics").json()
    assert ("HUMAN_REVIEW", "M2") == (body["decision"]["outcome"], body["decision"]["rule_id"]), body
    approve = f"/api/v1/access-requests/{body['id']}/approve"
    step = http.post(approve, json={"reason": "the hospital agrees"}, headers=provider.headers)
    assert "under_compliance_review" == step.json()["state"], step.text
    return {
        "provider": provider,
        "startup": startup,
        "dataset": dataset,
        "request": body["id"],
        "approve": approve,
        "gba_sc": file_mechanism(http, app, provider.client.org_id, startup.client.org_id, "GBA_SC"),
        "sector": file_mechanism(
            http,
            app,
            provider.client.org_id,
            startup.client.org_id,
            "SECTOR",
            sector="health",
            authority_name="Guangdong Provincial Health Commission",
        ),
    }


class TestTheDetermination:
    def test_an_empty_or_partial_approval_is_422_naming_the_field_and_changes_nothing(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any]
    ) -> None:
        """The one-click approval of the health request is gone: every missing piece is named."""
        officer = party("compliance_officer", "CN-SZ")
        full = determination(health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"])
        tomorrow = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
        for body, field in (
            ({}, "determination"),
            ({"determination": {}}, "determination.note"),
            ({"determination": full | {"sector_evidence_id": None}}, "determination.sector_evidence_id"),
            ({"determination": full | {"evidence_id": None}}, "determination.evidence_id"),
            ({"determination": full | {"pipia_reference": None}}, "determination.pipia_reference"),
            ({"determination": full | {"pipia_date": tomorrow}}, "determination.pipia_date"),
            ({"determination": full | {"consent_reference": None}}, "determination.consent_reference"),
            ({"determination": full | {"basis_rule_id": "M17"}}, "determination.basis_rule_id"),
        ):
            refused = http.post(health["approve"], json=body, headers=officer.headers)
            assert (422, field) == (refused.status_code, refused.json().get("field")), refused.text
            assert ("under_compliance_review", 0, 0) == state(app, health["request"])
        done = http.post(health["approve"], json={"determination": full}, headers=officer.headers)
        assert 200 == done.status_code, done.text
        decision = done.json()["decision"]
        # The final basis is the general regime's (M12, the GBA contract) plus the sector approval.
        assert ("GBA_SC", "M12") == (decision["outcome"], decision["rule_id"])
        assert health["sector"]["reference"] in decision["legal_basis"]
        assert "GBA SC Implementation Guidelines (Mainland-HK" in decision["legal_basis"]
        assert ("approved", 1, 1) == state(app, health["request"])

    def test_important_data_with_a_sector_overlay_needs_a_valid_assessment(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """M2 no longer hides M3: the assessment is required, in date and in scope."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        flag_gba(app, provider, startup)
        doc = hospital(provider)
        doc["gbadz"]["category"] = "important"
        doc["gbadz"]["visible_to"] = ["HK"]
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        body = ask(http, startup, dataset, purpose_text="Waiting-time research across clinics").json()
        assert (["ASSESSMENT"], "M2") == (
            body["decision"]["evidence_required"],
            body["decision"]["rule_id"],
        ), body
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        http.post(approve, json={}, headers=provider.headers)
        officer = party("compliance_officer", "CN-SZ")
        org, peer = provider.client.org_id, startup.client.org_id
        sector = file_mechanism(http, app, org, peer, "SECTOR", sector="health")
        gba = file_mechanism(http, app, org, peer, "GBA_SC")
        today = datetime.now(UTC).date()
        expired = file_mechanism(
            http, app, org, peer, "ASSESSMENT", issued=(today - timedelta(days=4 * 366)).isoformat()
        )
        too_small = file_mechanism(http, app, org, peer, "ASSESSMENT", approved_individuals=10)
        valid = file_mechanism(http, app, org, peer, "ASSESSMENT", approved_individuals=1000)
        for item, status, field_reason in (
            (gba, 422, "needs ASSESSMENT"),
            (expired, 409, "expired"),
            (too_small, 409, "approved 10 individuals"),
        ):
            refused = http.post(
                approve,
                json={"determination": determination(item["id"], sector_evidence_id=sector["id"])},
                headers=officer.headers,
            )
            assert status == refused.status_code, refused.text
            assert "determination.evidence_id" == refused.json()["field"]
            assert field_reason in refused.json()["detail"]
            assert ("under_compliance_review", 0, 0) == state(app, body["id"])
        done = http.post(
            approve,
            json={"determination": determination(valid["id"], sector_evidence_id=sector["id"])},
            headers=officer.headers,
        )
        assert 200 == done.status_code, done.text
        assert ("ASSESSMENT", "M3") == (
            done.json()["decision"]["outcome"],
            done.json()["decision"]["rule_id"],
        )

    def test_four_eyes(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any]
    ) -> None:
        """Whoever records the evidence cannot approve with it; nobody takes both review steps."""
        org, peer = health["provider"].client.org_id, health["startup"].client.org_id
        officer = party("compliance_officer", "CN-SZ")
        own = http.post(
            "/api/v1/mechanisms",
            json={
                "exporter_org_id": org,
                "recipient_org_id": peer,
                "kind": "GBA_SC",
                "reference": f"GBA-SC-{secrets.token_hex(4)}",
                "effective_date": (datetime.now(UTC).date() - timedelta(days=9)).isoformat(),
                "filing_date": (datetime.now(UTC).date() - timedelta(days=2)).isoformat(),
            },
            headers=officer.headers,
        ).json()
        refused = http.post(
            health["approve"],
            json={"determination": determination(own["id"], sector_evidence_id=health["sector"]["id"])},
            headers=officer.headers,
        )
        assert (403, "FourEyes", "determination.evidence_id") == (
            refused.status_code,
            refused.json()["error"],
            refused.json()["field"],
        )
        assert ("under_compliance_review", 0, 0) == state(app, health["request"])

        # An officer of the exporter takes its provider step, then tries the compliance step too.
        provider, startup = health["provider"], health["startup"]
        inside = officer_of(app, http, org)
        second = ask(http, startup, health["dataset"], purpose_text="A second study of waiting times").json()
        approve = f"/api/v1/access-requests/{second['id']}/approve"
        assert (
            "under_compliance_review" == http.post(approve, json={}, headers=inside.headers).json()["state"]
        )
        both = http.post(
            approve,
            json={
                "determination": determination(
                    health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"]
                )
            },
            headers=inside.headers,
        )
        assert (403, "FourEyes") == (both.status_code, both.json()["error"])
        assert "provider step" in both.json()["detail"]
        # A colleague of the exporter is not independent either (the review's finding F2).
        colleague = officer_of(app, http, org)
        own = http.post(
            approve,
            json={
                "determination": determination(
                    health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"]
                )
            },
            headers=colleague.headers,
        )
        assert (403, "FourEyes") == (own.status_code, own.json()["error"])
        assert "own organisation" in own.json()["detail"]
        assert ("under_compliance_review", 0, 0) == state(app, second["id"])
        # Another officer can: the provider's step and the determination are two people.
        other = party("compliance_officer", "CN-SZ")
        assert (
            200
            == http.post(
                approve,
                json={
                    "determination": determination(
                        health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"]
                    )
                },
                headers=other.headers,
            ).status_code
        )
        assert provider.client.org_id == org

    def test_a_review_no_finding_resolves_is_determined_as_a_basis_the_rules_allow(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Macao data to Hong Kong (O5, PDPA Art.20(2)): determined as O5a with a DSPDP authorisation."""
        provider, startup = party("provider", "MO"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "MO"), 40)
        body = ask(http, startup, dataset).json()
        assert ("HUMAN_REVIEW", "O5") == (body["decision"]["outcome"], body["decision"]["rule_id"]), body
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        http.post(approve, json={}, headers=provider.headers)
        officer = party("compliance_officer", "CN-SZ")
        auth = file_mechanism(
            http, app, provider.client.org_id, startup.client.org_id, "AUTHORISATION", authority="MO_DSPDP"
        )
        note = {"note": "DSPDP authorised the transfer with contractual safeguards."}
        for basis, field in ((None, "determination.basis_rule_id"), ("O4", "determination.basis_rule_id")):
            refused = http.post(
                approve,
                json={"determination": note | {"evidence_id": auth["id"], "basis_rule_id": basis}},
                headers=officer.headers,
            )
            assert (422, field) == (refused.status_code, refused.json()["field"]), refused.text
        done = http.post(
            approve,
            json={"determination": note | {"evidence_id": auth["id"], "basis_rule_id": "O5a"}},
            headers=officer.headers,
        )
        assert 200 == done.status_code, done.text
        assert ("ASSESSMENT", "O5a") == (
            done.json()["decision"]["outcome"],
            done.json()["decision"]["rule_id"],
        )
        duties = http.get("/api/v1/obligations?state=open", headers=provider.headers).json()
        grant = done.json()["grant_id"]
        assert "dspdp_notification" in {d["kind"] for d in duties if d["grant_id"] == grant}
        # The determined basis holds at the transfer: the delivery is logged as O5a, not O5.
        delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers)
        assert 201 == delivered.status_code, delivered.text
        entry = http.get(
            f"/api/v1/transfer-log/entries/{delivered.json()['log_index']}", headers=officer.headers
        ).json()["entry"]
        assert ("O5a", "DSPDP_AUTHORISATION") == (entry["rule_id"], entry["mechanism"])


class TestTheRecord:
    def test_the_log_csv_and_offline_export_name_the_basis_mechanism_and_both_approvers(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any], tmp_path: Path
    ) -> None:
        """The officer reads, per entry: the final basis, the mechanism, both approvers, the PIPIA."""
        # The database is shared by the worker's tests, whose checkpoints other keyrings signed:
        # this test's log starts empty, so its export is this app's alone.
        with app.state.sessionmaker.begin() as session:
            session.execute(sa.delete(Checkpoint))
            session.execute(sa.delete(LogEntry))
            session.execute(sa.update(LogHead).values(size=0))
        officer = party("compliance_officer", "CN-SZ")
        full = determination(health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"])
        grant = http.post(health["approve"], json={"determination": full}, headers=officer.headers).json()[
            "grant_id"
        ]
        delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=health["startup"].headers)
        assert 201 == delivered.status_code, delivered.text
        entry = http.get(
            f"/api/v1/transfer-log/entries/{delivered.json()['log_index']}", headers=officer.headers
        ).json()["entry"]
        assert 2 == entry["entry_version"]
        assert ("GBA_SC", "M12") == (entry["decision_outcome"], entry["rule_id"])
        assert "HUMAN_REVIEW" not in entry["legal_basis"]
        assert health["sector"]["reference"] in entry["legal_basis"]
        assert ("GBA_SC_HK", health["gba_sc"]["reference"], "GD_CAC") == (
            entry["mechanism"],
            entry["mechanism_evidence"]["reference"],
            entry["mechanism_evidence"]["authority"],
        )
        assert ["provider", "compliance"] == [a["step"] for a in entry["approvers"]]
        assert full["pipia_reference"] == entry["pipia"]["reference"]
        assert full["consent_reference"] == entry["consent"]["reference"]
        assert "M2" == entry["determination"]["reviewed"]["rule_id"]
        assert "encrypt" == entry["deid"]["diagnosis_icd10"]
        # Both parties file a GBA standard contract: the exporter's filing is on file, the
        # Hong Kong party's (with the DPO) is owed within 10 working days.
        duties = http.get("/api/v1/obligations", headers=officer.headers).json()
        filings = {
            (d["owner_role"], d["state"])
            for d in duties
            if d["grant_id"] == grant and d["kind"] == "contract_filing"
        }
        assert {("exporter", "met"), ("recipient", "open")} == filings
        # The officer's transfer list and its CSV show the basis, the reference and the approvers.
        listed = http.get(f"/api/v1/transfers?dataset={health['dataset']}", headers=officer.headers)
        assert ["M12"] == [row["entry"]["rule_id"] for row in listed.json()]
        csv = http.get(
            f"/api/v1/transfers?dataset={health['dataset']}&format=csv", headers=officer.headers
        ).text
        assert health["gba_sc"]["reference"] in csv
        assert "provider: " in csv
        assert "compliance: " in csv
        assert full["pipia_reference"] in csv
        determinations = http.get(
            f"/api/v1/determinations?dataset={health['dataset']}", headers=officer.headers
        ).json()
        assert [("M12", "M2")] == [
            (d["entry"]["rule_id"], d["entry"]["reviewed"]["rule_id"]) for d in determinations
        ]
        # A v1-shaped entry beside the v2 ones: the offline export verifies both.
        log = app.state.transfer_log
        with app.state.sessionmaker.begin() as session:
            log.append(session, {"transfer_id": "v1-entry", "decision_outcome": "EXEMPT"}, kind="download")
        with app.state.sessionmaker.begin() as session:
            log.checkpoint(session)
        target = tmp_path / "log.jsonl"
        with app.state.sessionmaker() as session:
            export(session, log, target)
        verdict = verify_export(target)
        assert verdict.ok, verdict.problem
        bodies = [
            json.loads(json.loads(line)["entry"])
            for line in target.read_text().splitlines()[1:]
            if '"entry"' in line
        ]
        versions = {b.get("entry_version", 1) for b in bodies}
        assert {1, 2} <= versions
        ours = [b for b in bodies if b.get("grant_id") == grant and b.get("entry_version") == 2]
        assert {"determination", None} <= {b.get("type") for b in ours}
        assert all(len(b["approvers"]) == 2 for b in ours)
        # Each exported entry answers on its own: the final basis and the filed mechanism.
        assert all(b["rule_id"] == "M12" and "HUMAN_REVIEW" not in b["legal_basis"] for b in ours)
        assert {health["gba_sc"]["reference"]} == {b["mechanism_evidence"]["reference"] for b in ours}


class TestGrantEnd:
    def test_revocation_and_expiry_delete_every_delivery_object(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        provider, startup = party("provider", "HK"), party("consumer", "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "HK"), 30)
        client, bucket = app.state.s3, settings.s3.delivery_bucket

        def copies(grant: str) -> list[str]:
            prefix = f"datasets/{dataset}/grants/{grant}/"
            return [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]

        grants = []
        for _ in range(2):
            body = ask(http, startup, dataset, purpose_text="Route planning for cold-chain deliveries").json()
            assert "approved" == body["state"], body
            grants.append(body["grant_id"])
            assert (
                201
                == http.post(
                    f"/api/v1/grants/{body['grant_id']}/deliveries", headers=startup.headers
                ).status_code
            )
            assert copies(body["grant_id"])
        revoked, expiring = grants
        # Attesting deletion before the grant ends is refused.
        attest = {"statement": "All copies deleted from our storage and backups."}
        early = http.post(
            f"/api/v1/grants/{revoked}/deletion-attestation", json=attest, headers=startup.headers
        )
        assert 409 == early.status_code
        answer = http.post(
            f"/api/v1/grants/{revoked}/revoke", json={"reason": "licence breach"}, headers=provider.headers
        )
        assert 200 == answer.status_code, answer.text
        assert answer.json()["copies_deleted_at"] is not None
        assert [] == copies(revoked)
        assert copies(expiring)
        with app.state.sessionmaker.begin() as session:
            row = session.get(Grant, expiring)
            assert row is not None
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        # The sweeper, as operators run it (the API also runs it on a timer).
        env = settings_environment(settings) | {"GBADZ_CRYPTO__KEYRING_PATH": str(settings.keyring_path)}
        swept = run_cli(settings.home, "sweep-grants", "--json", **env)
        assert 0 == swept.returncode, swept.stderr
        assert 1 <= json.loads(swept.stdout)["grants_swept"]
        assert 0 == sweep_ended_grants(app.state.sessionmaker, client, settings)  # nothing left to do
        assert [] == copies(expiring)
        # The provider cannot attest for the recipient; the recipient attests, once.
        assert (
            403
            == http.post(
                f"/api/v1/grants/{revoked}/deletion-attestation", json=attest, headers=provider.headers
            ).status_code
        )
        done = http.post(
            f"/api/v1/grants/{revoked}/deletion-attestation", json=attest, headers=startup.headers
        )
        assert 200 == done.status_code, done.text
        assert done.json()["deletion_attested_at"] is not None
        with app.state.sessionmaker() as session:
            states = {
                o.kind: o.state
                for o in session.scalars(sa.select(Obligation).where(Obligation.grant_id == revoked))
            }
        assert "met" == states["recipient_deletion"]

    def test_no_url_outlives_its_grant(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        provider, startup = party("provider", "HK"), party("consumer", "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "HK"), 10)
        body = ask(http, startup, dataset, purpose_text="Route planning for cold-chain deliveries").json()
        end = datetime.now(UTC) + timedelta(seconds=40)
        with app.state.sessionmaker.begin() as session:
            row = session.get(Grant, body["grant_id"])
            assert row is not None
            row.expires_at = end
        links = http.post(f"/api/v1/grants/{body['grant_id']}/deliveries", headers=startup.headers).json()[
            "files"
        ]
        assert links
        assert all(datetime.fromisoformat(f["expires_at"]) <= end + timedelta(seconds=1) for f in links)


class TestPreconditions:
    def test_an_exempt_mainland_transfer_waits_for_the_pipia_and_consent(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Auto-approved under Art.5(4), nothing leaves until the exporter records its PIPIA and consent."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 20)
        body = ask(http, startup, dataset, gba_sc_opt_in=False).json()
        assert ("approved", "M17") == (body["state"], body["decision"]["rule_id"]), body
        deliveries = f"/api/v1/grants/{body['grant_id']}/deliveries"
        waiting = http.post(deliveries, headers=startup.headers)
        assert (409, "obligations") == (waiting.status_code, waiting.json()["field"])
        assert "PIPIA" in waiting.json()["detail"]
        duties = [
            d
            for d in http.get("/api/v1/obligations?state=open", headers=provider.headers).json()
            if d["grant_id"] == body["grant_id"] and d["precondition"]
        ]
        assert {"pipia", "notice_consent"} == {d["kind"] for d in duties}
        # The startup cannot tick the exporter's duties.
        assert (
            404
            == http.post(
                f"/api/v1/obligations/{duties[0]['id']}/met",
                json={"reference": "PIPIA-x"},
                headers=startup.headers,
            ).status_code
        )
        [pipia] = [d for d in duties if d["kind"] == "pipia"]
        tomorrow = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
        for body_, field in (
            ({"reference": "PIPIA-1"}, "date"),
            ({"reference": "PIPIA-1", "date": tomorrow}, "date"),
        ):
            undated = http.post(
                f"/api/v1/obligations/{pipia['id']}/met", json=body_, headers=provider.headers
            )
            assert (422, field) == (undated.status_code, undated.json()["field"])
        done_on = (datetime.now(UTC).date() - timedelta(days=4)).isoformat()
        for duty in duties:
            met = http.post(
                f"/api/v1/obligations/{duty['id']}/met",
                json={"reference": f"REC-{duty['kind']}", "date": done_on},
                headers=provider.headers,
            )
            assert 200 == met.status_code, met.text
        twice = http.post(
            f"/api/v1/obligations/{pipia['id']}/met",
            json={"reference": "again", "date": done_on},
            headers=provider.headers,
        )
        assert (409, "ObligationAlreadyMet") == (twice.status_code, twice.json()["error"])
        delivered = http.post(deliveries, headers=startup.headers)
        assert 201 == delivered.status_code
        # The log entry names the exporter's PIPIA (with its date) and consent record.
        officer = party("compliance_officer", "CN-SZ")
        entry = http.get(
            f"/api/v1/transfer-log/entries/{delivered.json()['log_index']}", headers=officer.headers
        ).json()["entry"]
        assert ({"reference": "REC-pipia", "date": done_on}, {"reference": "REC-notice_consent"}) == (
            entry["pipia"],
            entry["consent"],
        )
        assert [("automatic", "gbadz")] == [(a["step"], a["by"]) for a in entry["approvers"]]


class TestEvidenceRegistry:
    def test_the_document_is_required_kept_and_checked(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any]
    ) -> None:
        """A determination relies on a filed document, not a reference string; it cannot be replaced."""
        officer = party("compliance_officer", "CN-SZ")
        org, peer = health["provider"].client.org_id, health["startup"].client.org_id
        bare = file_mechanism(http, app, org, peer, "GBA_SC", document=False)
        refused = http.post(
            health["approve"],
            json={"determination": determination(bare["id"], sector_evidence_id=health["sector"]["id"])},
            headers=officer.headers,
        )
        assert (422, "determination.evidence_id") == (refused.status_code, refused.json()["field"])
        assert "no document" in refused.json()["detail"]
        item = health["gba_sc"]
        again = http.put(
            f"/api/v1/mechanisms/{item['id']}/document",
            content=b"%PDF-1.4 another document",
            headers=officer.headers | {"Content-Type": "application/pdf"},
        )
        assert 409 == again.status_code  # a new document is an amendment, never an overwrite
        fetched = http.get(f"/api/v1/mechanisms/{item['id']}/document", headers=officer.headers)
        assert 200 == fetched.status_code
        assert item["document_sha256"] == fetched.headers["x-content-sha256"]
        assert item["reference"].encode() in fetched.content
        assert (
            404
            == http.get(
                f"/api/v1/mechanisms/{item['id']}/document", headers=party("consumer").headers
            ).status_code
        )

    def test_an_amendment_carries_the_grant_on_and_a_withdrawal_stops_it(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any]
    ) -> None:
        officer = party("compliance_officer", "CN-SZ")
        full = determination(health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"])
        grant = http.post(health["approve"], json={"determination": full}, headers=officer.headers).json()[
            "grant_id"
        ]
        recorder = party("compliance_officer", "CN-SZ")
        original = health["gba_sc"]
        fields = {
            k: original[k]
            for k in (
                "exporter_org_id",
                "recipient_org_id",
                "kind",
                "reference",
                "effective_date",
                "filing_date",
            )
        }
        # Amending keeps the old item (withdrawn) and files the reference again, with its document.
        amended = http.post(
            f"/api/v1/mechanisms/{original['id']}/amend", json=fields, headers=recorder.headers
        )
        assert 201 == amended.status_code, amended.text
        assert original["id"] == amended.json()["supersedes"]
        assert (
            200
            == http.put(
                f"/api/v1/mechanisms/{amended.json()['id']}/document",
                content=b"%PDF-1.4 corrected filing",
                headers=recorder.headers | {"Content-Type": "application/pdf"},
            ).status_code
        )
        # The corrected filing carries the grant on, and the log names it.
        delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=health["startup"].headers)
        assert 201 == delivered.status_code, delivered.text
        entry = http.get(
            f"/api/v1/transfer-log/entries/{delivered.json()['log_index']}", headers=officer.headers
        ).json()["entry"]
        assert amended.json()["id"] == entry["mechanism_evidence"]["evidence_id"]
        # Withdrawn for good: the grant's next transfer stops, and it is suspended.
        withdrawn = http.post(
            f"/api/v1/mechanisms/{amended.json()['id']}/withdraw",
            json={"reason": "the contract was terminated"},
            headers=recorder.headers,
        )
        assert 200 == withdrawn.status_code, withdrawn.text
        stopped = http.post(f"/api/v1/grants/{grant}/deliveries", headers=health["startup"].headers)
        assert (410, "GrantSuspended") == (stopped.status_code, stopped.json()["error"]), stopped.text
        assert "mechanism is no longer valid" in stopped.json()["detail"]

    def test_a_gba_contract_needs_its_dates_and_the_parties_variant(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        exporter, recipient, other = (
            party("provider", "CN-SZ"),
            party("consumer", "MO"),
            party("consumer", "OTHER"),
        )
        officer = party("compliance_officer").headers
        base = {
            "exporter_org_id": exporter.client.org_id,
            "recipient_org_id": recipient.client.org_id,
            "kind": "GBA_SC",
            "reference": f"GBA-{secrets.token_hex(4)}",
        }
        undated = http.post("/api/v1/mechanisms", json=base, headers=officer)
        assert (422, "effective_date") == (undated.status_code, undated.json()["field"])
        today = datetime.now(UTC).date()
        dated = base | {"effective_date": today.isoformat(), "filing_date": today.isoformat()}
        wrong = http.post("/api/v1/mechanisms", json=dated | {"variant": "GBA_SC_HK"}, headers=officer)
        assert (422, "variant") == (wrong.status_code, wrong.json()["field"])
        outside = http.post(
            "/api/v1/mechanisms", json=dated | {"recipient_org_id": other.client.org_id}, headers=officer
        )
        assert (422, "kind") == (outside.status_code, outside.json()["field"])
        filed = http.post("/api/v1/mechanisms", json=dated, headers=officer)
        assert 201 == filed.status_code, filed.text
        assert ("GBA_SC_MO", "GD_CAC") == (filed.json()["variant"], filed.json()["authority"])


class TestFilingPackage:
    def test_the_filing_annex_of_the_gba_contract_as_json_and_a_bilingual_pdf(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any], tmp_path: Path
    ) -> None:
        officer = party("compliance_officer", "CN-SZ")
        full = determination(health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"])
        assert (
            200
            == http.post(health["approve"], json={"determination": full}, headers=officer.headers).status_code
        )
        url = f"/api/v1/mechanisms/{health['gba_sc']['id']}/filing-package"
        annex = http.get(url, headers=health["provider"].headers)
        assert 200 == annex.status_code, annex.text
        body = annex.json()
        assert ("GBA_SC_HK", health["gba_sc"]["reference"]) == (
            body["mechanism"]["variant"],
            body["mechanism"]["reference"],
        )
        [transfer] = body["transfers"]
        people, _ = individuals(app, health["dataset"])
        assert (health["dataset"], people) == (transfer["dataset_id"], transfer["n_individuals"])
        assert "medical_health" in transfer["spi_categories"]
        assert full["pipia_reference"] == body["pipia"]["reference"]
        assert ["provider", "compliance"] == [a["step"] for a in body["determination"]["approvers"]]
        # Hidden looks like missing; a sector approval has no filing annex.
        assert 404 == http.get(url, headers=party("consumer", "HK").headers).status_code
        sector = http.get(
            f"/api/v1/mechanisms/{health['sector']['id']}/filing-package", headers=officer.headers
        )
        assert (409, "kind") == (sector.status_code, sector.json()["field"])
        pdf = http.get(url + "?format=pdf", headers=officer.headers)
        assert (200, "application/pdf") == (pdf.status_code, pdf.headers["content-type"])
        path = tmp_path / "annex.pdf"
        path.write_bytes(pdf.content)
        for tool in ("pdftoppm", "pdftotext"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} not found: `make setup` installs poppler-utils")
        subprocess.run(
            ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", path, tmp_path / "page"], check=True
        )
        [png] = list(tmp_path.glob("page*.png"))
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(png, artifacts / "filing-package-api.png")
        text = subprocess.run(["pdftotext", path, "-"], capture_output=True, text=True, check=True).stdout
        for expected in (
            health["gba_sc"]["reference"],
            full["pipia_reference"],
            "个人信息保护影响评估",
            "PIPIA",
            "境外接收方",
            "Recipient",
            health["provider"].org_name,
            health["startup"].org_name,
        ):
            assert expected in text, expected


class TestUpgrade:
    def test_a_review_grant_from_before_determinations_stops_at_its_next_transfer(
        self, app: FastAPI, http: TestClient, party: MakeParty, health: dict[str, Any]
    ) -> None:
        """A grant approved with one click before migration 0010 (HUMAN_REVIEW, no determination)
        hands out nothing more: it is suspended until someone asks again and it is determined."""
        officer = party("compliance_officer", "CN-SZ")
        full = determination(health["gba_sc"]["id"], sector_evidence_id=health["sector"]["id"])
        grant = http.post(health["approve"], json={"determination": full}, headers=officer.headers).json()[
            "grant_id"
        ]
        with app.state.sessionmaker.begin() as session:  # what such a grant looks like after the upgrade
            row = session.get(Grant, grant)
            assert row is not None
            row.determination = None
            row.decision = {k: v for k, v in row.decision.items() if k != "determination"} | {
                "outcome": "HUMAN_REVIEW",
                "rule_id": "M2",
            }
        stopped = http.post(f"/api/v1/grants/{grant}/deliveries", headers=health["startup"].headers)
        assert (410, "GrantSuspended") == (stopped.status_code, stopped.json()["error"]), stopped.text
        assert "not resolved by a determination" in stopped.json()["detail"]

    def test_an_id_no_record_can_have_is_named_not_a_500(self, http: TestClient, party: MakeParty) -> None:
        """A NUL or a query character in an id (PostgreSQL refuses NUL in text) is 422 naming the id."""
        officer = party("compliance_officer", "CN-SZ")
        for path in (
            "/api/v1/mechanisms/%00/withdraw",
            "/api/v1/grants/%00/revoke",
            "/api/v1/obligations/a%3Fb/met",
            "/api/v1/access-requests/%0d%0a/approve",
        ):
            answer = http.post(
                path, json={"reason": "not a record", "reference": "x-1"}, headers=officer.headers
            )
            assert 422 == answer.status_code, (path, answer.text)
