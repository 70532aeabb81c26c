"""Deliveries against the real S3 server on both databases: scope, protection, logging, failures."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.compliance.models import CounterTotal
from gbadz.config import Settings
from gbadz.contract import Contract
from gbadz.ingest import pipeline, samples
from gbadz.translog.merkle import leaf_hash, verify_inclusion
from gbadz.translog.models import LogEntry
from tests.conftest import REPO, wrong_secret
from tests.datasets import YAML, Party, determination, file_mechanism, sign_off

GRANTED = ["delivery_id", "recipient_id", "recipient_phone", "address", "district"]


@pytest.fixture
def published(
    app: FastAPI,
    http: TestClient,
    party: Callable[..., Party],
    settings: Settings,
    key_prefix: str,
    tmp_path: Path,
) -> tuple[Party, str]:
    """A Hong Kong provider's logistics dataset: registered by API, version 1 published by the pipeline."""
    provider = party("provider", "HK")
    doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["id"] = f"{key_prefix.strip('/')}-deliveries"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    raw = yaml.safe_dump(doc).encode()
    assert 201 == http.post("/api/v1/datasets", content=raw, headers=provider.headers | YAML).status_code
    source = tmp_path / "deliveries.csv"
    pacsv.write_csv(samples.generate("hk-logistics-deliveries", 2_000), source)
    ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    result = pipeline.ingest(ctx, Contract.model_validate(doc), "test", source)
    assert result.accepted
    sign_off(http, app, str(doc["id"]))
    return provider, str(doc["id"])


def _grant(http: TestClient, consumer: Party, dataset: str) -> str:
    response = http.post(
        f"/api/v1/datasets/{dataset}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Last-mile route optimisation",
            "columns": GRANTED,
        },
        headers=consumer.headers,
    )
    assert 201 == response.status_code, response.text
    body = response.json()
    assert "approved" == body["state"], body
    return str(body["grant_id"])


def _log_size(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(LogEntry)) or 0)


class TestDelivery:
    def test_granted_columns_protected_as_decided_and_logged_before_urls(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], published: tuple[Party, str]
    ) -> None:
        """A delivery has just the granted columns, protected as decided, logged with an inclusion proof."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        response = http.post(
            f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": "first-try"}
        )
        assert 201 == response.status_code, response.text
        delivery = response.json()
        assert GRANTED == delivery["columns"]
        [link] = delivery["files"]
        downloaded = http.get(link["url"])
        assert 200 == downloaded.status_code
        assert link["sha256"] == hashlib.sha256(downloaded.content).hexdigest()
        table = pq.read_table(io.BytesIO(downloaded.content))
        assert GRANTED == table.column_names
        assert 2_000 == table.num_rows
        rows = table.to_pylist()
        assert all(r["recipient_phone"].startswith("****") for r in rows)  # masked, last four kept
        assert all(r["recipient_id"].startswith("p") for r in rows)  # pseudonymised at publication
        assert all(r["address"] and "*" not in r["address"] for r in rows)  # decrypted under the grant
        assert "recipient_name" not in table.column_names  # not granted

        # The transfer is in the log, with an inclusion proof in a signed checkpoint.
        officer = party("compliance_officer")
        entry = http.get(f"/api/v1/transfer-log/entries/{delivery['log_index']}", headers=officer.headers)
        assert 200 == entry.status_code, entry.text
        body = entry.json()
        assert delivery["transfer_id"] == body["entry"]["transfer_id"]
        [held] = [g for g in http.get("/api/v1/grants", headers=consumer.headers).json() if g["id"] == grant]
        assert (held["outcome"], held["legal_basis"]) == (
            body["entry"]["decision_outcome"],
            body["entry"]["legal_basis"],
        )
        assert GRANTED == body["entry"]["columns"]
        with app.state.sessionmaker() as session:
            stored = session.get(LogEntry, delivery["log_index"])
            assert stored is not None
            leaf = leaf_hash(stored.entry.encode())
        path = [base64.b64decode(p) for p in body["inclusion_proof"]]
        assert verify_inclusion(
            leaf, body["index"], body["tree_size"], path, bytes.fromhex(body["root_hash"])
        )
        checkpoint = http.get("/api/v1/transfer-log/checkpoint", headers=officer.headers).json()
        assert checkpoint["tree_size"] >= body["index"] + 1
        assert checkpoint["public_keys"]

        # A retry with the same key is the same transfer; its new URLs are logged as a reissue.
        size = _log_size(app)
        again = http.post(
            f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": "first-try"}
        )
        assert 201 == again.status_code
        assert (delivery["transfer_id"], True) == (again.json()["transfer_id"], again.json()["reused"])
        assert size + 1 == _log_size(app)
        with app.state.sessionmaker() as session:
            last = session.scalars(sa.select(LogEntry).order_by(LogEntry.index.desc()).limit(1)).one()
        assert ("reissue", delivery["log_index"]) == (last.kind, json.loads(last.entry)["reissue_of"])
        # Consumers cannot read the log; strangers cannot use the grant.
        assert 403 == http.get("/api/v1/transfer-log/checkpoint", headers=consumer.headers).status_code
        stranger = party("consumer", "HK")
        assert 404 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=stranger.headers).status_code

    def test_a_disabled_organisations_delivery_urls_stop_at_once(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], published: tuple[Party, str]
    ) -> None:
        """Delivery URLs an organisation already holds stop working when it is disabled (ADR 0023):
        404, as a file that does not exist; the grant itself is left as it is."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        response = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
        assert 201 == response.status_code, response.text
        [link] = response.json()["files"]
        assert 200 == http.get(link["url"]).status_code
        admin = party("admin")
        disabled = http.post(f"/api/v1/organizations/{consumer.client.org_id}/disable", headers=admin.headers)
        assert 200 == disabled.status_code, disabled.text
        assert 404 == http.get(link["url"]).status_code
        assert 404 == http.head(link["url"]).status_code

    def test_a_revoked_grant_gets_no_new_urls(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], published: tuple[Party, str]
    ) -> None:
        """A revoked grant's delivery is refused with 410 and adds nothing to the transfer log."""
        provider, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        revoked = http.post(
            f"/api/v1/grants/{grant}/revoke", json={"reason": "contract ended"}, headers=provider.headers
        )
        assert 200 == revoked.status_code
        size = _log_size(app)
        response = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
        assert 410 == response.status_code
        assert "revoked" in response.json()["detail"]
        assert size == _log_size(app)

    def test_s3_down_means_no_urls_and_no_log_entry(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],
        settings: Settings,
    ) -> None:
        """With S3 unreachable a delivery fails with 503 and logs nothing; once S3 is back it works."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        size = _log_size(app)
        broken = create_app(settings.model_copy(update={"s3": wrong_secret(settings.s3)}))
        with TestClient(broken) as other:
            response = other.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
        assert 503 == response.status_code, response.text
        assert size == _log_size(app)
        # The grant is untouched: with S3 back, the delivery works.
        assert 201 == http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers).status_code
        assert size + 1 == _log_size(app)


class TestComplianceView:
    def test_counted_transfer_shows_in_transfers_csv_and_counters(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        settings: Settings,
        key_prefix: str,
        tmp_path: Path,
    ) -> None:
        """Shenzhen health data (sector rule: review) approved by provider and compliance, delivered, counted."""
        hospital = party("provider", "CN-SZ")
        doc = yaml.safe_load((REPO / "contracts" / "sz-hospital-outpatient-visits.yaml").read_text())
        doc["id"] = f"{key_prefix.strip('/')}-visits"
        doc["gbadz"]["provider"]["organization"] = hospital.org_name
        assert (
            201
            == http.post(
                "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=hospital.headers | YAML
            ).status_code
        )
        source = tmp_path / "visits.csv"
        table = samples.generate("sz-hospital-outpatient-visits", 1_500)
        pacsv.write_csv(table, source)
        ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
        assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
        sign_off(http, app, doc["id"])

        startup, officer = party("consumer", "HK"), party("compliance_officer", "CN-SZ")
        columns = ["visit_id", "patient_id", "visit_date", "department"]
        asked = http.post(
            f"/api/v1/datasets/{doc['id']}/access-requests",
            json={
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Clinic demand model",
                "columns": columns,
            },
            headers=startup.headers,
        ).json()
        assert ("under_provider_review", "HUMAN_REVIEW") == (asked["state"], asked["decision"]["outcome"]), (
            asked
        )
        # The sector rule adds to the general regime: sensitive PI to Hong Kong needs an SCC filing too.
        assert ["SCC", "CERT"] == asked["decision"]["evidence_required"]
        http.post(f"/api/v1/access-requests/{asked['id']}/approve", json={}, headers=hospital.headers)
        approve = f"/api/v1/access-requests/{asked['id']}/approve"
        assert 422 == http.post(approve, json={"reason": "reviewed"}, headers=officer.headers).status_code
        scc = file_mechanism(http, app, hospital.client.org_id, startup.client.org_id, "SCC")
        sector = file_mechanism(
            http, app, hospital.client.org_id, startup.client.org_id, "SECTOR", sector="health"
        )
        approved = http.post(
            approve,
            json={
                "reason": "reviewed",
                "determination": determination(scc["id"], sector_evidence_id=sector["id"]),
            },
            headers=officer.headers,
        )
        assert "approved" == approved.json()["state"], approved.text
        delivered = http.post(
            f"/api/v1/grants/{approved.json()['grant_id']}/deliveries", headers=startup.headers
        )
        assert 201 == delivered.status_code, delivered.text

        patients = len(set(table.column("patient_id").to_pylist()))
        counts = http.get("/api/v1/compliance/counters", headers=officer.headers).json()
        [mine] = [c for c in counts if c["exporter_org_id"] == hospital.client.org_id]
        assert patients == mine["pi_individuals"]
        assert 100_000 == mine["next_threshold"]["pi"]
        # Someone with database access lowers the live counter: the officer's report reads the
        # signed entries, which log verification covers (issue #20), and does not move.
        with app.state.sessionmaker.begin() as session:
            session.execute(
                sa.update(CounterTotal)
                .where(CounterTotal.exporter_id == hospital.client.org_id)
                .values(individuals=1)
            )
        again = http.get("/api/v1/compliance/counters", headers=officer.headers).json()
        assert [mine] == [c for c in again if c["exporter_org_id"] == hospital.client.org_id]

        rows = http.get(
            "/api/v1/transfers", params={"dataset": doc["id"], "format": "csv"}, headers=officer.headers
        )
        assert "text/csv" in rows.headers["content-type"]
        lines = rows.text.strip().splitlines()
        assert 2 == len(lines)
        # The determination's basis, not the engine's routing note: M15 plus the sector approval.
        assert "HUMAN_REVIEW" not in lines[1]
        assert "M15" in lines[1]
        assert sector["reference"] in lines[1]
        assert scc["reference"] in lines[1]
        listed = http.get(
            "/api/v1/transfers",
            params={"exporter": hospital.client.org_id, "origin": "CN-SZ", "destination": "HK"},
            headers=officer.headers,
        ).json()
        assert [delivered.json()["transfer_id"]] == [r["entry"]["transfer_id"] for r in listed]
        assert patients == listed[0]["entry"]["n_individuals"]
        assert 0 == listed[0]["entry"]["pi_ytd_before"]
        assert patients == listed[0]["entry"]["pi_ytd_after"]
        assert (
            422
            == http.get("/api/v1/transfers", params={"outcome": "MAYBE"}, headers=officer.headers).status_code
        )
        assert (
            400
            == http.get(
                "/api/v1/transfers", params={"since": "2026-01-01T00:00:00"}, headers=officer.headers
            ).status_code
        )
        assert 403 == http.get("/api/v1/transfers", headers=startup.headers).status_code


class TestCrashRecovery:
    def test_a_crash_after_the_log_commit_is_recovered_by_the_retry(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], published: tuple[Party, str]
    ) -> None:
        """The transfer committed (log entry and all) but the process died before answering."""
        from gbadz.delivery import service

        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        with app.state.sessionmaker.begin() as session:  # what the route does, up to the commit
            crashed = service.deliver(
                session,
                client=app.state.s3,
                settings=app.state.settings,
                keys=app.state.keys,
                log=app.state.transfer_log,
                grant_id=grant,
                org_id=consumer.client.org_id,
                actor="test",
                idempotency_key="retry-me",
            )
        size = _log_size(app)
        retry = http.post(
            f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": "retry-me"}
        )
        assert 201 == retry.status_code, retry.text
        body = retry.json()
        assert (crashed.transfer_id, crashed.log_index, True) == (
            body["transfer_id"],
            body["log_index"],
            body["reused"],
        )
        assert size + 1 == _log_size(app)  # the reissue of its URLs, not a second transfer
        assert 200 == http.get(body["files"][0]["url"]).status_code
