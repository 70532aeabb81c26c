"""Dataset fixtures shared by API tests: contracts built on the fly, registered by real providers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.identity.models import Organization
from tests.api import Client, bearer, fetch_token, make_client

YAML = {"Content-Type": "application/yaml"}


def contract(
    dataset_id: str,
    org_name: str,
    *,
    name: str | None = None,
    origin: str = "HK",
    category: str = "general",
    status: str = "active",
    version: str = "1.0.0",
    tags: tuple[str, ...] = (),
    purpose_text: str = "Operational statistics for planning.",
    extra_columns: tuple[str, ...] = (),
    purposes: tuple[str, ...] = ("trade_transport_academic_mfg_marketing", "other"),
    visible_to: tuple[str, ...] = (),
    with_pi: bool = True,
) -> dict[str, Any]:
    properties: list[dict[str, Any]] = [
        {"name": "record_id", "logicalType": "string", "required": True, "unique": True, "examples": ["R-1"]},
        {"name": "district", "logicalType": "string", "examples": ["Kowloon"], "tags": ["geography"]},
        {"name": "trips", "logicalType": "integer", "examples": [3]},
    ]
    columns: dict[str, Any] = {}
    if with_pi:
        properties.append({"name": "phone", "logicalType": "string", "examples": ["+852 5555 0000"]})
        properties.append(
            {"name": "customer_id", "logicalType": "string", "required": True, "examples": ["C-1"]}
        )
        columns = {
            "phone": {"pi": True, "protection": "mask_last4"},
            "customer_id": {"pi": True, "subject_identifier": True, "protection": "pseudonymise"},
        }
    properties += [{"name": c, "logicalType": "string"} for c in extra_columns]
    # Every column classified (issue #15): the non-personal ones say so.
    for prop in properties:
        columns.setdefault(prop["name"], {"pi": False})
    gbadz_block: dict[str, Any] = {}
    if with_pi and origin == "HK":
        gbadz_block["provenance"] = {"collection_purposes": list(purposes)}
    return {
        "apiVersion": "v3.0.2",
        "kind": "DataContract",
        "id": dataset_id,
        "name": name or f"Dataset {dataset_id}",
        "version": version,
        "status": status,
        "description": {"purpose": purpose_text, "usage": "Aggregate analysis."},
        "tags": list(tags),
        "schema": [{"name": "records", "properties": properties}],
        "gbadz": {
            "provider": {"organization": org_name},
            "origin": origin,
            "category": category,
            "visible_to": list(visible_to),
            "columns": columns,
            **gbadz_block,
            "licence": {"permitted_purposes": list(purposes), "max_grant_duration": "P1Y"},
        },
    }


def as_yaml(doc: dict[str, Any]) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False).encode()


@dataclass
class Party:
    client: Client
    token: str
    org_name: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def org_name(app: FastAPI, org_id: str) -> str:
    with app.state.sessionmaker() as session:
        org = session.get(Organization, org_id)
        assert org is not None
        return org.name


@pytest.fixture
def party(app: FastAPI, http: TestClient) -> Callable[..., Party]:
    def make(role: str, jurisdiction: str = "HK") -> Party:
        client = make_client(app, role, jurisdiction)
        return Party(client, fetch_token(http, client), org_name(app, client.org_id))

    return make


@pytest.fixture
def publish(app: FastAPI, http: TestClient) -> Callable[..., dict[str, Any]]:
    """Register a contract as a provider and have its classification signed off (``listed=False``:
    left waiting for the listing review); returns the API's answer (asserting 201)."""

    def register(provider: Party, *, listed: bool = True, **kwargs: Any) -> dict[str, Any]:
        dataset_id = kwargs.pop("dataset_id", None) or f"t-{secrets.token_hex(5)}"
        doc = contract(dataset_id, provider.org_name, **kwargs)
        response = http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML)
        assert 201 == response.status_code, response.text
        body: dict[str, Any] = response.json()
        if listed:
            sign_off(http, app, dataset_id)
        return body

    return register


def sign_off(http: TestClient, app: FastAPI, dataset_id: str) -> None:
    """A compliance officer signs off the dataset's classification: others may now see it."""
    officer = bearer(fetch_token(http, make_client(app, "compliance_officer", "CN-SZ")))
    [item] = http.get(f"/api/v1/classification-reviews?dataset={dataset_id}", headers=officer).json()
    response = http.post(
        f"/api/v1/datasets/{dataset_id}/classification-review",
        json={
            "approve": True,
            "note": "every column classified as the data shows",
            "contract_sha256": item["contract_sha256"],
        },
        headers=officer,
    )
    assert 200 == response.status_code, response.text


def token() -> str:
    """A word no other test uses, to make search results independent of the shared database."""
    return "zq" + secrets.token_hex(4)


def file_mechanism(
    http: TestClient,
    app: FastAPI,
    exporter: str,
    recipient: str,
    kind: str = "GBA_SC",
    *,
    document: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """An evidence item on file, recorded by a compliance officer who takes no review step."""
    recorder = bearer(fetch_token(http, make_client(app, "compliance_officer", "CN-SZ")))
    today = datetime.now(UTC).date()
    body: dict[str, Any] = {
        "exporter_org_id": exporter,
        "recipient_org_id": recipient,
        "kind": kind,
        "reference": f"{kind}-{secrets.token_hex(4)}",
    }
    if kind in ("GBA_SC", "SCC"):
        body |= {
            "effective_date": (today - timedelta(days=20)).isoformat(),
            "filing_date": (today - timedelta(days=17)).isoformat(),
        }
    else:
        body |= {"issued": (today - timedelta(days=30)).isoformat()}
    if kind in ("CERT", "SECTOR"):
        body["authority_name"] = "Competent authority"
    response = http.post("/api/v1/mechanisms", json=body | fields, headers=recorder)
    assert 201 == response.status_code, response.text
    filed: dict[str, Any] = response.json()
    if document:  # the filed document itself, as a determination requires
        pdf = b"%PDF-1.4\n% " + filed["reference"].encode() + b"\n%%EOF\n"
        stored = http.put(
            f"/api/v1/mechanisms/{filed['id']}/document",
            content=pdf,
            headers=recorder | {"Content-Type": "application/pdf"},
        )
        assert 200 == stored.status_code, stored.text
        filed = stored.json()
    return filed


def determination(evidence_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A complete compliance determination (PIPIA and consent named, a note, the evidence)."""
    body: dict[str, Any] = {
        "note": "Mechanism on file and valid; PIPIA reviewed; notice and consent recorded.",
        "pipia_reference": f"PIPIA-{secrets.token_hex(3)}",
        "pipia_date": (datetime.now(UTC).date() - timedelta(days=5)).isoformat(),
        "consent_reference": f"CONSENT-{secrets.token_hex(3)}",
    }
    if evidence_id is not None:
        body["evidence_id"] = evidence_id
    return body | fields


def meet_preconditions(http: TestClient, provider: Party, grant_id: str) -> None:
    """The exporter records its PIPIA (with its date) and notice/consent for a grant (no data leaves before)."""
    done = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    for duty in http.get("/api/v1/obligations?state=open", headers=provider.headers).json():
        if duty["grant_id"] == grant_id and duty["precondition"]:
            met = http.post(
                f"/api/v1/obligations/{duty['id']}/met",
                json={"reference": f"REC-{duty['kind']}-{secrets.token_hex(3)}", "date": done},
                headers=provider.headers,
            )
            assert 200 == met.status_code, met.text
