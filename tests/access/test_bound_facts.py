"""Issue #15 on both databases: every fact the law turns on comes from a registration or the data.

Each test drives one exploit through the HTTP API as the party who would gain from it, and
shows it refused or decided strictly, with nothing written on refusal. The app here runs on a
reviewed rules file with low thresholds (100 individuals, 50 sensitive), so volume rules can be
crossed with small real uploads.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import AccessRequest, Grant
from gbadz.app import create_app
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.compliance.counters import counter_year
from gbadz.compliance.models import CountedSubject, CounterTotal
from gbadz.config import Settings, TransferSettings
from gbadz.contract import Contract
from gbadz.identity import service as identity_service
from gbadz.identity.models import Organization
from gbadz.ingest import pipeline, samples
from gbadz.translog.models import LogEntry
from tests.api import Client, bearer, fetch_token
from tests.conftest import REPO
from tests.datasets import (
    YAML,
    Party,
    as_yaml,
    contract,
    determination,
    file_mechanism,
    meet_preconditions,
    sign_off,
)

MakeParty = Callable[..., Party]
TRADE = "trade_transport_academic_mfg_marketing"


@pytest.fixture
def app(settings: Settings, tmp_path: Path) -> FastAPI:
    raw = (resources.files("gbadz.law") / "rules" / "crossborder.yaml").read_text()
    low = (
        raw.replace("pi_exempt_below: 100000", "pi_exempt_below: 100")
        .replace("spi_assessment_from: 10000", "spi_assessment_from: 50")
        .replace('version: "', 'version: "test-low-')
    )
    assert low != raw
    path = tmp_path / "low-thresholds.yaml"
    path.write_text(low)
    return create_app(settings.model_copy(update={"transfer": TransferSettings(rules_file=path)}))


def flag_gba(app: FastAPI, *parties: Party) -> None:
    with app.state.sessionmaker.begin() as session:
        for who in parties:
            org = session.get(Organization, who.client.org_id)
            assert org is not None
            org.gba_registered = True


def logistics(provider: Party, origin: str, **gbadz: Any) -> dict[str, Any]:
    """The sample logistics contract, as ``provider``'s, from ``origin``."""
    doc: dict[str, Any] = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["id"] = f"t-{secrets.token_hex(5)}-deliveries"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    doc["gbadz"]["origin"] = origin
    doc["gbadz"]["licence"]["permitted_purposes"] = [TRADE, "other", "emergency", "foreign_pi_transit"]
    doc["gbadz"].update(gbadz)
    return doc


def hospital(provider: Party) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO / "contracts" / "sz-hospital-outpatient-visits.yaml").read_text()
    )
    doc["id"] = f"t-{secrets.token_hex(5)}-visits"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    return doc


def register(http: TestClient, provider: Party, doc: dict[str, Any]) -> Any:
    return http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML)


def publish(
    app: FastAPI,
    http: TestClient,
    settings: Settings,
    tmp_path: Path,
    provider: Party,
    doc: dict[str, Any],
    rows: int,
    other_people: bool = False,
) -> str:
    """Register ``doc`` by the API and publish ``rows`` sample rows through the ingest pipeline."""
    registered = register(http, provider, doc)
    assert 201 == registered.status_code, registered.text
    sample = "sz-hospital-outpatient-visits" if doc["id"].endswith("visits") else "hk-logistics-deliveries"
    source = tmp_path / f"{doc['id']}.csv"
    table = samples.generate(sample, rows)
    if other_people:  # the same shape, different individuals: R0xxxxxxx becomes R9xxxxxxx
        index = table.column_names.index("recipient_id")
        table = table.set_column(
            index, "recipient_id", pc.replace_substring_regex(table["recipient_id"], "^R0", "R9")
        )
    pacsv.write_csv(table, source)
    ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
    sign_off(http, app, doc["id"])
    return str(doc["id"])


def ask(http: TestClient, who: Party, dataset: str, **body: Any) -> Any:
    payload = {"purpose": TRADE, "purpose_text": "Demand forecasting for delivery routes"} | body
    return http.post(f"/api/v1/datasets/{dataset}/access-requests", json=payload, headers=who.headers)


def individuals(app: FastAPI, dataset: str) -> tuple[int, int]:
    with app.state.sessionmaker() as session:
        row = session.scalars(sa.select(DatasetVersion).where(DatasetVersion.dataset_id == dataset)).one()
        assert row.individuals is not None
        return int(row.individuals), int(row.sensitive_individuals or 0)


def count(app: FastAPI, model: Any, *where: Any) -> int:
    with app.state.sessionmaker() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


class TestWhoDeclaresWhat:
    def test_a_declared_domestic_location_does_not_make_an_export_domestic(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Defect 1: a Hong Kong startup that says it processes in Shenzhen is still decided as Hong Kong."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 200)
        advice = http.post(
            "/api/v1/transfer-assessments",
            json={"dataset_id": dataset, "purpose": TRADE, "dest": "CN-SZ"},
            headers=startup.headers,
        ).json()
        assert "NOT_EXPORT" != advice["decision"]["outcome"]
        assert "HK" == advice["decision"]["facts"]["dest"]
        own = (advice["decision"]["outcome"], advice["decision"]["rule_id"])
        assert [own, ("NOT_EXPORT", "M0")] == [
            (c["outcome"], c["rule_id"]) for c in advice["decision"]["considered"]
        ]
        body = ask(http, startup, dataset, destination="CN-SZ").json()
        assert ("HK", "CN-SZ") == (body["destination"], body["processing_location"])
        assert "M0" != body["decision"]["rule_id"]
        assert "HK" == body["decision"]["facts"]["dest"]

    def test_a_provider_cannot_choose_its_datas_origin(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """Defect 2: a Shenzhen exporter's contract saying origin HK is refused naming the field; nothing is written."""
        provider = party("provider", "CN-SZ")
        doc = logistics(provider, "HK")
        response = register(http, provider, doc)
        assert 400 == response.status_code, response.text
        assert "gbadz.origin" == response.json()["field"]
        assert "CN-SZ" in response.json()["detail"]
        assert 0 == count(app, Dataset, Dataset.id == doc["id"])

    def test_a_place_of_collection_only_tightens(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Hong Kong data collected in Shenzhen is decided under the Mainland rules too, and the stricter wins."""
        provider, startup = party("provider", "HK"), party("consumer", "OTHER")
        doc = logistics(provider, "HK", provenance={"collection_purposes": [TRADE], "collected_in": "CN-SZ"})
        dataset = publish(app, http, settings, tmp_path, provider, doc, 400)
        body = ask(http, startup, dataset).json()
        # Under HK rules alone: H4 EXEMPT. Collected on the Mainland, over 100 people: a mechanism.
        assert ("SCC_OR_CERT", "M16") == (body["decision"]["outcome"], body["decision"]["rule_id"]), body
        assert "under_provider_review" == body["state"]


class TestClassification:
    def test_an_unclassified_column_is_refused_naming_the_field(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """Defect 3: a column missing from gbadz.columns is an error, never 'not personal'."""
        provider = party("provider", "HK")
        doc = contract(f"t-{secrets.token_hex(5)}", provider.org_name, extra_columns=("visits",))
        del doc["gbadz"]["columns"]["visits"]
        response = register(http, provider, doc)
        assert 400 == response.status_code
        assert "gbadz.columns" == response.json()["field"]
        assert "visits" in response.json()["detail"]
        assert 0 == count(app, Dataset, Dataset.id == doc["id"])

    def test_a_dataset_is_listed_only_once_its_classification_is_signed_off(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """Listing review: hidden from others until an officer signs off; a reclassifying change reopens it."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "CN-GZ")
        officer = party("compliance_officer", "CN-SZ")
        doc = hospital(provider)
        assert 201 == register(http, provider, doc).status_code
        page = f"/api/v1/datasets/{doc['id']}"
        assert 404 == http.get(page, headers=startup.headers).status_code
        assert 404 == ask(http, startup, doc["id"]).status_code
        assert 200 == http.get(page, headers=provider.headers).status_code
        assert 403 == http.get("/api/v1/classification-reviews", headers=provider.headers).status_code
        review = f"/api/v1/datasets/{doc['id']}/classification-review"

        def reviewed() -> dict[str, Any]:
            [item] = http.get(
                f"/api/v1/classification-reviews?dataset={doc['id']}", headers=officer.headers
            ).json()
            return item

        item = reviewed()
        verdict = {"approve": True, "note": "looks right to me", "contract_sha256": item["contract_sha256"]}
        assert 403 == http.post(review, json=verdict, headers=provider.headers).status_code
        # An officer of the provider's own organisation does not sign off its dataset.
        with app.state.sessionmaker.begin() as session:
            issued = identity_service.create_client(
                session, actor="test", org_id=provider.client.org_id, role="compliance_officer"
            )
            colleague = Client(
                issued.client.client_id, issued.client_secret, provider.client.org_id, "compliance_officer"
            )
        assert (
            403 == http.post(review, json=verdict, headers=bearer(fetch_token(http, colleague))).status_code
        )
        by_name = {c["name"]: c for c in item["columns"]}
        assert ("spi", "sector_overlay") == (
            by_name["fee_cny"]["classification"],
            by_name["fee_cny"]["classified_by"],
        )
        assert {"birth_year_column": "birth_year", "birth_date_column": None} == item["minors"]
        assert 200 == http.post(review, json=verdict, headers=officer.headers).status_code
        assert 200 == http.get(page, headers=startup.headers).status_code
        # The provider argues the fee is not health data: that is a reclassification to review.
        doc["version"] = "1.0.1"
        doc["gbadz"]["columns"]["fee_cny"]["not_sensitive_because"] = "A price list amount, not about health"
        changed = http.put(page, content=as_yaml(doc), headers=provider.headers | YAML)
        assert 200 == changed.status_code, changed.text
        assert "pending" == changed.json()["classification_state"]
        assert 404 == http.get(page, headers=startup.headers).status_code
        # A sign-off names the contract reviewed: a stale one is refused and signs nothing.
        assert 409 == http.post(review, json=verdict, headers=officer.headers).status_code
        assert 404 == http.get(page, headers=startup.headers).status_code
        verdict["contract_sha256"] = reviewed()["contract_sha256"]
        assert 200 == http.post(review, json=verdict, headers=officer.headers).status_code
        # A change that classifies nothing differently keeps the listing.
        doc["version"], doc["description"]["usage"] = "1.0.2", "Aggregate analysis only."
        assert (
            "approved"
            == http.put(page, content=as_yaml(doc), headers=provider.headers | YAML).json()[
                "classification_state"
            ]
        )

    def test_health_records_are_sensitive_and_children_count_by_the_row(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Visit columns of a health dataset are sensitive without a diagnosis; minors are counted."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, hospital(provider), 300)
        people, minors = individuals(app, dataset)
        assert 0 < minors < people < 300  # people, not rows; some born within 14 years
        body = ask(http, startup, dataset, columns=["visit_id", "department", "fee_cny"]).json()
        facts = body["decision"]["facts"]
        assert facts["has_spi"] is True
        assert people == facts["pi_ytd_after"] == facts["spi_ytd_after"]
        assert "approved" != body["state"]

    def test_a_provider_cannot_choose_how_people_are_counted(
        self, app: FastAPI, http: TestClient, party: MakeParty
    ) -> None:
        """The subject identifier must be a required, personal column (else 400 naming gbadz.columns)."""
        provider = party("provider", "CN-SZ")
        doc = logistics(provider, "CN-SZ")
        doc["gbadz"]["columns"]["district"] = {"pi": False, "subject_identifier": True}
        del doc["gbadz"]["columns"]["recipient_id"]["subject_identifier"]
        refused = register(http, provider, doc)
        assert 400 == refused.status_code
        assert ("gbadz.columns", True) == (refused.json()["field"], "district" in refused.json()["detail"])
        optional = logistics(provider, "CN-SZ")
        optional["schema"][0]["properties"][1]["required"] = False  # recipient_id
        refused = register(http, provider, optional)
        assert 400 == refused.status_code
        assert "required" in refused.json()["detail"]
        assert 0 == count(app, Dataset, Dataset.id.in_([doc["id"], optional["id"]]))


class TestVolumes:
    def test_an_unknown_volume_goes_to_review(self, app: FastAPI, http: TestClient, party: MakeParty) -> None:
        """Defect 4: before the first version, a request is not exempt by a count of zero."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        doc = logistics(provider, "CN-SZ")
        assert 201 == register(http, provider, doc).status_code
        sign_off(http, app, doc["id"])
        body = ask(http, startup, doc["id"]).json()
        assert ("HUMAN_REVIEW", "V1") == (body["decision"]["outcome"], body["decision"]["rule_id"])
        assert "under_provider_review" == body["state"]
        assert body["grant_id"] is None

    def test_requests_sliced_under_a_threshold_add_up(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Approved, undelivered grants reserve their people: a second slice is decided on the sum."""
        provider = party("provider", "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 120)
        people, _ = individuals(app, dataset)
        assert people < 100
        first = ask(http, party("consumer", "HK"), dataset).json()
        assert ("approved", "M17") == (first["state"], first["decision"]["rule_id"])
        second = ask(http, party("consumer", "HK"), dataset).json()
        assert 2 * people == second["decision"]["facts"]["pi_ytd_after"]
        assert ("SCC_OR_CERT", "M16") == (second["decision"]["outcome"], second["decision"]["rule_id"])
        assert "approved" != second["state"]

    def test_a_dataset_of_an_unregistered_exporter_takes_no_requests(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """No registered exporter, no origin and no counters: the request is refused and nothing is written."""
        ghost = party("provider", "CN-SZ")
        doc = logistics(ghost, "CN-SZ")
        doc["gbadz"]["provider"]["organization"] = f"Unregistered {secrets.token_hex(4)}"
        source = tmp_path / "ghost.csv"
        pacsv.write_csv(samples.generate("hk-logistics-deliveries", 50), source)
        ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
        assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
        sign_off(http, app, doc["id"])
        response = ask(http, party("consumer", "CN-GZ"), doc["id"])
        assert 409 == response.status_code, response.text
        assert "dataset_id" == response.json()["field"]
        assert 0 == count(app, AccessRequest, AccessRequest.dataset_id == doc["id"])

    def test_one_person_in_two_datasets_of_one_exporter_counts_once(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """The counters hash subjects under the exporter's key: the same people in two datasets are counted once."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        first = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 60)
        second = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 60)
        people, _ = individuals(app, first)
        for dataset in (first, second):
            grant = ask(http, startup, dataset).json()
            assert "approved" == grant["state"], grant
            meet_preconditions(http, provider, grant["grant_id"])
            assert (
                201
                == http.post(
                    f"/api/v1/grants/{grant['grant_id']}/deliveries", headers=startup.headers
                ).status_code
            )
        counted = count(
            app,
            CountedSubject,
            CountedSubject.exporter_id == provider.client.org_id,
            CountedSubject.kind == "pi",
        )
        assert people == counted
        with app.state.sessionmaker() as session:  # the running total agrees with the rows
            total = session.get(
                CounterTotal, (provider.client.org_id, counter_year(datetime.now(UTC)), "mechanism", "pi")
            )
        assert total is not None
        assert counted == total.individuals
        with app.state.sessionmaker() as session:  # keyed hashes, never the identifiers
            subjects = session.scalars(
                sa.select(CountedSubject.subject).where(CountedSubject.exporter_id == provider.client.org_id)
            ).all()
        assert not any(s.startswith("R") for s in subjects)


class TestDeliverable:
    def test_a_grant_is_not_deliverable_while_its_preconditions_are_open(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """An exempt Mainland grant of personal data: PIPIA and notice/consent are open, so it is not
        ``deliverable`` (a delivery would be 409) and says which; met, it is, and a delivery works.
        Ended, or on a dataset hidden from the grantee, it tells no current version."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 60)
        asked = ask(http, startup, dataset).json()
        assert ("approved", "EXEMPT") == (asked["state"], asked["decision"]["outcome"]), asked
        path = f"/api/v1/grants/{asked['grant_id']}"

        def held() -> dict[str, Any]:
            answer = http.get(path, headers=startup.headers)
            assert 200 == answer.status_code, answer.text
            return dict(answer.json())

        grant = held()
        assert (1, False, ["notice_consent", "pipia"]) == (
            grant["current_version"],
            grant["deliverable"],
            grant["open_preconditions"],
        )
        listed = {g["id"]: g for g in http.get("/api/v1/grants", headers=startup.headers).json()}
        assert not listed[grant["id"]]["deliverable"]
        refused = http.post(f"{path}/deliveries", headers=startup.headers)
        assert (409, "ObligationsOpen") == (refused.status_code, refused.json()["error"]), refused.text
        meet_preconditions(http, provider, grant["id"])
        assert (True, []) == (held()["deliverable"], held()["open_preconditions"])
        assert 201 == http.post(f"{path}/deliveries", headers=startup.headers).status_code
        retired = http.post(
            f"/api/v1/datasets/{dataset}/retire",
            json={"reason": "Replaced by a new feed"},
            headers=provider.headers,
        )
        assert 200 == retired.status_code, retired.text
        assert (None, False) == (held()["current_version"], held()["deliverable"])  # hidden now
        revoked = http.post(f"{path}/revoke", json={"reason": "Licence ended"}, headers=provider.headers)
        assert (200, None) == (revoked.status_code, revoked.json()["current_version"]), revoked.text


class TestDecidedAgainWhenDataLeaves:
    def test_a_reclassified_contract_suspends_its_grants_until_decided_again(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Defect 5: the contract turns important; its live grants stop at once, and an officer's
        decision keeps a grant suspended while stricter (410 with the reason, nothing logged)."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        doc = logistics(provider, "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        grant = ask(http, startup, dataset).json()["grant_id"]
        meet_preconditions(http, provider, grant)
        assert 201 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers).status_code
        doc["version"], doc["gbadz"]["category"] = "1.1.0", "important"
        changed = http.put(
            f"/api/v1/datasets/{dataset}", content=as_yaml(doc), headers=provider.headers | YAML
        )
        assert 200 == changed.status_code, changed.text

        def held() -> dict[str, Any]:
            [mine] = [
                g for g in http.get("/api/v1/grants", headers=startup.headers).json() if g["id"] == grant
            ]
            return mine

        assert ("suspended", True) == (held()["status"], "reclassified" in held()["suspended_reason"])
        logged = count(app, LogEntry)
        refused = http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers)
        assert 410 == refused.status_code, refused.text
        assert logged == count(app, LogEntry)
        items = http.get("/api/v1/grants?suspended=true&limit=500", headers=officer.headers).json()
        assert grant in [g["id"] for g in items]
        assert all(g["status"] in ("suspended", "expired") for g in items)
        redecide = f"/api/v1/grants/{grant}/redecide"
        assert 403 == http.post(redecide, headers=provider.headers).status_code
        kept = http.post(redecide, headers=officer.headers)
        assert 200 == kept.status_code, kept.text
        assert "suspended" == kept.json()["status"]
        assert "M3" in kept.json()["suspended_reason"]
        again = http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers)
        assert (410, True) == (again.status_code, "ASSESSMENT" in again.json()["detail"])
        assert logged == count(app, LogEntry)

    def test_a_grant_no_stricter_after_reclassification_resumes_when_decided_again(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """A reclassification that changes nothing for the law still stops the grant until an officer looks."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        doc = logistics(provider, "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        grant = ask(http, startup, dataset).json()["grant_id"]
        meet_preconditions(http, provider, grant)
        doc["version"] = "1.0.1"
        doc["gbadz"]["columns"]["parcel_weight_kg"] = {"pi": False}
        assert (
            200
            == http.put(
                f"/api/v1/datasets/{dataset}", content=as_yaml(doc), headers=provider.headers | YAML
            ).status_code
        )
        assert 410 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers).status_code
        resumed = http.post(f"/api/v1/grants/{grant}/redecide", headers=officer.headers).json()
        assert ("active", None) == (resumed["status"], resumed["suspended_reason"])
        assert 201 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=startup.headers).status_code

    def test_a_counter_crossing_a_threshold_suspends_an_exempt_grant(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Another export of the same exporter lifts the counter past 100 people: the exempt grant
        delivered next is decided again, found to need a contract, and suspended (410, unlogged)."""
        provider, officer = party("provider", "CN-SZ"), party("compliance_officer", "CN-SZ")
        first, second = party("consumer", "HK"), party("consumer", "HK")
        a = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 120)
        b_doc = logistics(provider, "CN-SZ")
        b = publish(app, http, settings, tmp_path, provider, b_doc, 120, other_people=True)
        exempt = ask(http, first, a).json()
        assert ("approved", "M17") == (exempt["state"], exempt["decision"]["rule_id"])
        meet_preconditions(http, provider, exempt["grant_id"])
        # The second request counts the first grant's reservation: it needs a contract.
        needs = ask(http, second, b).json()
        assert ("SCC_OR_CERT", "M16") == (needs["decision"]["outcome"], needs["decision"]["rule_id"])
        approve = f"/api/v1/access-requests/{needs['id']}/approve"
        assert 200 == http.post(approve, json={}, headers=provider.headers).status_code
        filed = file_mechanism(http, app, provider.client.org_id, second.client.org_id, "SCC")
        granted = http.post(
            approve,
            json={"reason": "SCC filed", "determination": determination(filed["id"])},
            headers=officer.headers,
        ).json()
        assert "approved" == granted["state"], granted
        assert (
            201
            == http.post(
                f"/api/v1/grants/{granted['grant_id']}/deliveries", headers=second.headers
            ).status_code
        )
        logged = count(app, LogEntry)
        refused = http.post(f"/api/v1/grants/{exempt['grant_id']}/deliveries", headers=first.headers)
        assert 410 == refused.status_code, refused.text
        assert "M16" in refused.json()["detail"]
        assert logged == count(app, LogEntry)


class TestExemptionsNeedAnOfficer:
    def test_art5_needs_a_justification_an_officer_accepts(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Defect 6: an emergency purpose is not an exemption until a compliance officer accepts why."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 300)
        bare = ask(http, startup, dataset, purpose="emergency")
        assert 400 == bare.status_code
        assert "necessity_justification" == bare.json()["field"]
        assert 0 == count(app, AccessRequest, AccessRequest.dataset_id == dataset)
        why = "Typhoon evacuation: locate parcels with medicine for stranded recipients"
        body = ask(http, startup, dataset, purpose="emergency", necessity_justification=why).json()
        assert ("HUMAN_REVIEW", "M8p", "under_provider_review") == (
            body["decision"]["outcome"],
            body["decision"]["rule_id"],
            body["state"],
        )
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        assert (
            "under_compliance_review" == http.post(approve, json={}, headers=provider.headers).json()["state"]
        )
        empty = http.post(approve, json={}, headers=officer.headers)
        assert (422, "determination") == (empty.status_code, empty.json()["field"])
        unfound = http.post(approve, json={"determination": determination()}, headers=officer.headers)
        assert 409 == unfound.status_code
        assert "findings.necessity_accepted" == unfound.json()["field"]
        with app.state.sessionmaker() as session:
            assert "under_compliance_review" == session.get(AccessRequest, body["id"]).state  # type: ignore[union-attr]
        accepted = http.post(
            approve,
            json={"findings": {"necessity_accepted": True}, "determination": determination()},
            headers=officer.headers,
        )
        assert 200 == accepted.status_code, accepted.text
        assert ("approved", "EXEMPT", "M10") == (
            accepted.json()["state"],
            accepted.json()["decision"]["outcome"],
            accepted.json()["decision"]["rule_id"],
        )
        assert accepted.json()["findings"]["necessity_accepted"] is True

    def test_art4_is_a_provenance_not_a_purpose(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Choosing the 'foreign PI in transit' purpose exempts nothing; a contract's claim goes to review."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 300)
        body = ask(http, startup, dataset, purpose="foreign_pi_transit").json()
        assert "M6" != body["decision"]["rule_id"]
        assert "approved" != body["state"]
        claimed = logistics(
            provider,
            "CN-SZ",
            provenance={"foreign_pi_in_transit": True, "evidence": "Manifest of carrier AB-12"},
        )
        other = publish(app, http, settings, tmp_path, provider, claimed, 60)
        review = ask(http, party("consumer", "HK"), other).json()
        assert ("HUMAN_REVIEW", "M6p") == (review["decision"]["outcome"], review["decision"]["rule_id"])

    def test_a_finding_holds_only_for_the_contract_it_was_made_on(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """An accepted anonymisation report is void once the contract changes: the grant is suspended."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        doc = logistics(provider, "CN-SZ", anonymisation={"report_ref": "GB/T 42460 evaluation 2026-18"})
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        body = ask(http, startup, dataset).json()
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        http.post(approve, json={}, headers=provider.headers)
        done = http.post(
            approve,
            json={
                "findings": {"anonymised": True},
                "determination": {"note": "Finding checked against the evidence on file."},
            },
            headers=officer.headers,
        ).json()
        assert ("approved", "M4") == (done["state"], done["decision"]["rule_id"])
        deliveries = f"/api/v1/grants/{done['grant_id']}/deliveries"
        assert 201 == http.post(deliveries, headers=startup.headers).status_code
        doc["version"] = "1.0.1"
        doc["gbadz"]["anonymisation"] = {"report_ref": "another report, never checked"}
        assert (
            200
            == http.put(
                f"/api/v1/datasets/{dataset}", content=as_yaml(doc), headers=provider.headers | YAML
            ).status_code
        )
        assert 410 == http.post(deliveries, headers=startup.headers).status_code
        kept = http.post(f"/api/v1/grants/{done['grant_id']}/redecide", headers=officer.headers).json()
        assert ("suspended", True) == (kept["status"], "M4x" in kept["suspended_reason"])


class TestGbaContractAndProtectiveFacts:
    def test_an_organisation_outside_the_area_is_never_eligible(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Defect 7: an OTHER organisation flagged GBA-registered does not get the GBA standard contract."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "OTHER")
        flag_gba(app, provider, startup)
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 300)
        body = ask(http, startup, dataset).json()
        assert body["decision"]["outcome"] not in ("GBA_SC", "EXEMPT")
        assert body["decision"]["facts"]["recipient_gba_registered"] is False

    def test_a_new_purpose_for_hong_kong_data_is_prohibited(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """PDPO DPP3: a purpose outside those the data was collected for is refused (H2)."""
        provider = party("provider", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "HK"), 60)
        body = ask(http, party("consumer", "CN-SZ"), dataset, purpose="other").json()
        assert ("rejected", "PROHIBITED", "H2") == (
            body["state"],
            body["decision"]["outcome"],
            body["decision"]["rule_id"],
        )

    def test_data_received_under_a_gba_contract_stays_in_the_area(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """GBA SC recipient clause: data received under it cannot go outside the GBA (H5)."""
        provider = party("provider", "HK")
        doc = logistics(
            provider, "HK", provenance={"collection_purposes": [TRADE], "received_under_gba_sc": True}
        )
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        body = ask(http, party("consumer", "OTHER"), dataset).json()
        assert ("rejected", "H5") == (body["state"], body["decision"]["rule_id"])

    def test_a_macao_ground_is_a_compliance_officers_finding(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """PDPA Art.20(1): the requester cannot claim a ground; the officer records it and the request is re-decided."""
        provider, startup = party("provider", "MO"), party("consumer", "CN")
        officer = party("compliance_officer", "MO")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "MO"), 60)
        body = ask(http, startup, dataset).json()
        assert ("HUMAN_REVIEW", "O5") == (body["decision"]["outcome"], body["decision"]["rule_id"])
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        provider_findings = http.post(
            approve, json={"findings": {"macao_art20_ground": "consent"}}, headers=provider.headers
        )
        assert 403 == provider_findings.status_code
        assert 200 == http.post(approve, json={}, headers=provider.headers).status_code
        done = http.post(
            approve,
            json={
                "findings": {"macao_art20_ground": "consent"},
                "determination": {"note": "Finding checked against the evidence on file."},
            },
            headers=officer.headers,
        )
        assert 200 == done.status_code, done.text
        assert ("approved", "EXEMPT", "O4") == (
            done.json()["state"],
            done.json()["decision"]["outcome"],
            done.json()["decision"]["rule_id"],
        )

    def test_a_claimed_anonymisation_waits_for_the_officer(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """PIPL Art.73(4): a contract's anonymisation claim sends requests to review until the report is accepted."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        officer = party("compliance_officer", "CN-SZ")
        doc = logistics(provider, "CN-SZ", anonymisation={"report_ref": "GB/T 42460 evaluation 2026-17"})
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        body = ask(http, startup, dataset).json()
        assert ("HUMAN_REVIEW", "M4x") == (body["decision"]["outcome"], body["decision"]["rule_id"])
        approve = f"/api/v1/access-requests/{body['id']}/approve"
        http.post(approve, json={}, headers=provider.headers)
        refused = http.post(
            approve,
            json={"determination": {"note": "Finding checked against the evidence on file."}},
            headers=officer.headers,
        )
        assert (409, "findings.anonymised") == (refused.status_code, refused.json()["field"])
        done = http.post(
            approve,
            json={
                "findings": {"anonymised": True},
                "determination": {"note": "Finding checked against the evidence on file."},
            },
            headers=officer.headers,
        ).json()
        assert ("approved", "M4") == (done["state"], done["decision"]["rule_id"])

    def test_hong_kong_data_held_on_the_mainland_keeps_its_purposes(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """DPP3 follows data collected in Hong Kong to a Mainland exporter: a new purpose is prohibited."""
        provider = party("provider", "CN-SZ")
        doc = logistics(provider, "CN-SZ", provenance={"collected_in": "HK"})
        assert "gbadz.provenance.collection_purposes" == register(http, provider, doc).json()["field"]
        doc = logistics(provider, "CN-SZ", provenance={"collected_in": "HK", "collection_purposes": [TRADE]})
        dataset = publish(app, http, settings, tmp_path, provider, doc, 60)
        body = ask(http, party("consumer", "CN-GZ"), dataset, purpose="other").json()
        assert ("rejected", "H2") == (body["state"], body["decision"]["rule_id"])


class TestReplays:
    def test_a_replay_after_retirement_hands_out_nothing(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """Defect 8: an Idempotency-Key replay re-checks the dataset; after retirement it is 410."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        dataset = publish(app, http, settings, tmp_path, provider, logistics(provider, "CN-SZ"), 60)
        grant = ask(http, startup, dataset).json()["grant_id"]
        meet_preconditions(http, provider, grant)
        key = {"Idempotency-Key": secrets.token_hex(8)}
        url = f"/api/v1/grants/{grant}/deliveries"
        assert 201 == http.post(url, headers=startup.headers | key).status_code
        logged = count(app, LogEntry)
        replay = http.post(url, headers=startup.headers | key)
        assert replay.status_code in (200, 201)
        assert replay.json()["reused"] is True
        assert logged + 1 == count(app, LogEntry)  # every issuance of URLs is logged

        def copies() -> list[str]:
            listed = app.state.s3.list_objects(
                settings.s3.delivery_bucket, prefix=f"datasets/{dataset}/", recursive=True
            )
            return [o.object_name for o in listed]

        assert copies()
        retired = http.post(
            f"/api/v1/datasets/{dataset}/retire",
            json={"reason": "source system closed"},
            headers=provider.headers,
        )
        assert 200 == retired.status_code, retired.text
        assert [] == copies()  # the delivered copies are deleted from the real S3 server
        assert 410 == http.post(url, headers=startup.headers | key).status_code
        assert 1 == count(app, Grant, Grant.id == grant)  # the grant stays, for the record
