"""A small world for console tests: a Shenzhen provider with a published dataset (and a
rejected upload), a GBA-registered Hong Kong startup, the zone's compliance office, one person
per role, a filed GBA standard contract and a request waiting for the provider's review.

The contract is recorded by the compliance office's API client, not by a person who reviews:
whoever records evidence cannot approve with it (four eyes)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.config import Settings
from gbadz.contract import Contract
from gbadz.identity import people
from gbadz.identity.models import Organization
from gbadz.ingest import pipeline, samples
from tests.api import Client, bearer, fetch_token, make_client
from tests.conftest import REPO
from tests.datasets import YAML, file_mechanism, sign_off

PASSWORD = "correct horse battery staple"
GRANTED = ["delivery_id", "recipient_id", "recipient_phone", "district"]
# A small PDF, as a filing office might send back (the registry keeps it with its SHA-256).
FILING_PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


@dataclass
class Person:
    username: str
    password: str
    role: str
    org_id: str


@dataclass
class World:
    dataset: str
    people: dict[str, Person]
    pending_request: str
    provider_org: str
    startup_org: str
    mechanism: str = ""  # the filed GBA standard contract (recorded by the office's API client)
    officer_org: str = ""
    #: The parties' API clients (provider, consumer, compliance_officer), for adding to the world.
    clients: dict[str, Client] = field(default_factory=dict)


def build(app: FastAPI, settings: Settings, tmp_path: Path) -> World:
    http = TestClient(app)
    tag = secrets.token_hex(3)
    provider = make_client(app, "provider", "CN-SZ")
    startup = make_client(app, "consumer", "HK")
    officer = make_client(app, "compliance_officer", "CN-SZ")
    with app.state.sessionmaker.begin() as session:
        for org_id in (startup.org_id, provider.org_id):  # both parties, for the GBA standard contract
            org = session.get(Organization, org_id)
            assert org is not None
            org.gba_registered = True
        provider_name = session.get(Organization, provider.org_id).name  # type: ignore[union-attr]
    provider_token = fetch_token(http, provider)
    doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["id"] = f"sz-deliveries-{tag}"
    doc["name"] = f"Shenzhen last-mile deliveries {tag}"
    doc["gbadz"]["provider"]["organization"] = provider_name
    doc["gbadz"]["origin"] = "CN-SZ"
    registered = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=bearer(provider_token) | YAML
    )
    assert 201 == registered.status_code, registered.text
    ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    contract = Contract.model_validate(doc)
    good = tmp_path / "deliveries.csv"
    pacsv.write_csv(samples.generate("hk-logistics-deliveries", 300), good)
    assert pipeline.ingest(ctx, contract, "test", good).accepted
    sign_off(http, app, str(doc["id"]))
    bad = tmp_path / "deliveries-bad.csv"
    # The address column renamed: the upload is rejected, with the reason, and nothing is published.
    bad.write_text(good.read_text().replace('"address"', '"addr"', 1))
    assert not pipeline.ingest(ctx, contract, "test", bad).accepted

    officer_token = fetch_token(http, officer)
    effective = datetime.now(UTC).date() - timedelta(days=30)
    filed = http.post(
        "/api/v1/mechanisms",
        json={
            "exporter_org_id": provider.org_id,
            "recipient_org_id": startup.org_id,
            "kind": "GBA_SC",
            "reference": f"GBA-SC-440300-{tag}",
            "effective_date": effective.isoformat(),
            "filing_date": (effective + timedelta(days=3)).isoformat(),
        },
        headers=bearer(officer_token),
    )
    assert 201 == filed.status_code, filed.text
    document = http.put(
        f"/api/v1/mechanisms/{filed.json()['id']}/document",
        content=FILING_PDF,
        headers=bearer(officer_token) | {"Content-Type": "application/pdf"},
    )
    assert 200 == document.status_code, document.text  # a determination relies on the filed document
    waiting = http.post(
        f"/api/v1/datasets/{doc['id']}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Cold-chain route planning across the bay",
            "columns": GRANTED,
        },
        headers=bearer(fetch_token(http, startup)),
    )
    assert 201 == waiting.status_code, waiting.text
    assert "under_provider_review" == waiting.json()["state"], waiting.json()

    persons = {}
    with app.state.sessionmaker.begin() as session:
        for role, client in (("consumer", startup), ("provider", provider), ("compliance_officer", officer)):
            username = f"{role.split('_')[0]}-{tag}"
            people.create_user(
                session,
                actor="test",
                org_id=client.org_id,
                username=username,
                display_name=f"{role.title()} {tag}",
                role=role,
                password=PASSWORD,
            )
            persons[role] = Person(username, PASSWORD, role, client.org_id)
    return World(
        str(doc["id"]),
        persons,
        waiting.json()["id"],
        provider.org_id,
        startup.org_id,
        mechanism=filed.json()["id"],
        officer_org=officer.org_id,
        clients={"provider": provider, "consumer": startup, "compliance_officer": officer},
    )


@dataclass
class Analysis:
    """The startup's analysis grant on the provider's hospital visits (issue #18)."""

    dataset: str
    grant: str
    request: str


def add_analysis_grant(
    app: FastAPI,
    settings: Settings,
    world: World,
    tmp_path: Path,
    rows: int = 2000,
    budget: dict[str, float] | None = None,
) -> Analysis:
    """The demo's release, set up as the parties would: the world's provider publishes the
    Shenzhen hospital's outpatient visits (a ``dp`` compute block, health sector rule); the Hong
    Kong startup asks for an analysis; the provider approves; a compliance officer records the
    DP finding and approves with a determination naming the health regulator's approval on file
    (recorded by another officer: four eyes). ``budget`` replaces the contract's."""
    http = TestClient(app)
    provider, startup, officer = (world.clients[r] for r in ("provider", "consumer", "compliance_officer"))
    with app.state.sessionmaker() as session:
        provider_name = session.get(Organization, provider.org_id).name  # type: ignore[union-attr]
    doc = yaml.safe_load((REPO / "contracts" / "sz-hospital-outpatient-visits.yaml").read_text())
    suffix = secrets.token_hex(2)  # a world may hold more than one analysis grant
    doc["id"] = f"{world.dataset}-visits-{suffix}"
    doc["name"] = f"Shenzhen outpatient visits {world.dataset[-6:]}-{suffix}"
    doc["gbadz"]["provider"]["organization"] = provider_name
    if budget is not None:  # a smaller budget, so a test can exhaust it in two queries
        doc["gbadz"]["compute"]["budget"] = budget
    provider_headers = bearer(fetch_token(http, provider))
    registered = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider_headers | YAML
    )
    assert 201 == registered.status_code, registered.text
    source = tmp_path / "visits.csv"
    pacsv.write_csv(samples.generate("sz-hospital-outpatient-visits", rows), source)
    ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
    sign_off(http, app, str(doc["id"]))
    asked = http.post(
        f"/api/v1/datasets/{doc['id']}/access-requests",
        json={
            "kind": "analysis",
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Average fee per department and month, for pricing research",
        },
        headers=bearer(fetch_token(http, startup)),
    )
    assert 201 == asked.status_code, asked.text
    approve = f"/api/v1/access-requests/{asked.json()['id']}/approve"
    step = http.post(approve, json={"reason": "the hospital agrees to aggregates"}, headers=provider_headers)
    assert "under_compliance_review" == step.json()["state"], step.text
    sector = file_mechanism(
        http,
        app,
        provider.org_id,
        startup.org_id,
        "SECTOR",
        sector="health",
        authority_name="Guangdong Provincial Health Commission",
    )
    done = http.post(
        approve,
        json={
            "findings": {"dp_release": True, "dp_evaluation_ref": "DP-EVAL-2026-004"},
            "determination": {
                "note": "The contract's DP parameters were evaluated; releases are anonymised.",
                "sector_evidence_id": sector["id"],
            },
        },
        headers=bearer(fetch_token(http, officer)),
    )
    assert 200 == done.status_code, done.text
    assert ("approved", "MA3") == (done.json()["state"], done.json()["decision"]["rule_id"]), done.text
    return Analysis(str(doc["id"]), str(done.json()["grant_id"]), str(asked.json()["id"]))


def add_person(app: FastAPI, role: str, org_id: str, username: str) -> Person:
    """Another person (e.g. a second compliance officer, for four eyes)."""
    with app.state.sessionmaker.begin() as session:
        people.create_user(
            session,
            actor="test",
            org_id=org_id,
            username=username,
            display_name=username.title(),
            role=role,
            password=PASSWORD,
        )
    return Person(username, PASSWORD, role, org_id)


def determination_form(world: World, evidence_id: str | None = None) -> dict[str, str]:
    """A complete determination, as the officer fills in the review card."""
    return {
        "evidence_id": evidence_id or world.mechanism,
        "pipia_reference": "PIPIA-SZ-2026-042",
        "pipia_date": (datetime.now(UTC).date() - timedelta(days=7)).isoformat(),
        "consent_reference": "Notice v2 (Art.39) and separate-consent records, batch 2026-11",
        "note": "GBA standard contract filed on time; PIPIA reviewed; notice and consent on record.",
    }


def form_fields(html: str) -> dict[str, Any]:
    return dict(re.findall(r'name="(csrf|signin_token)" value="([^"]+)"', html))
