"""The officer's filters read what log verification covers (issue #20): an altered column hides nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.translog.models import LogEntry
from tests.datasets import Party
from tests.delivery.test_delivery import _grant, published  # noqa: F401 - the shared fixture


class TestFiltersReadTheHashedEntry:
    def test_columns_altered_in_the_database_neither_hide_nor_misattribute_a_transfer(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
    ) -> None:
        """Someone with database access rewrites a transfer's copied columns (route, parties, kind,
        time); the officer's list, CSV, parties and route counts still follow the signed entry."""
        provider, dataset = published
        consumer, officer = party("consumer", "HK"), party("compliance_officer", "CN-SZ")
        grant = _grant(http, consumer, dataset)
        delivered = http.post(f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers)
        assert 201 == delivered.status_code, delivered.text
        index, transfer = delivered.json()["log_index"], delivered.json()["transfer_id"]
        exporter, recipient = provider.client.org_id, consumer.client.org_id
        decoy = party("consumer", "MO").client.org_id

        with app.state.sessionmaker.begin() as session:
            session.execute(
                sa.update(LogEntry)
                .where(LogEntry.index == index)
                .values(
                    kind="determination",
                    origin="MO",
                    destination="CN-GZ",
                    exporter_org_id=decoy,
                    recipient_org_id=decoy,
                    dataset_id="someone-else",
                    outcome="PROHIBITED",
                    mechanism="CERT",
                    logged_at=datetime(2001, 1, 1, tzinfo=UTC),
                )
            )

        def listed(**params: str) -> list[str]:
            answer = http.get("/api/v1/transfers", params=params, headers=officer.headers)
            assert 200 == answer.status_code, answer.text
            return [r["entry"]["transfer_id"] for r in answer.json()]

        today = datetime.now(UTC).date().isoformat()
        following = {
            "exporter": exporter,
            "recipient": recipient,
            "origin": "HK",
            "destination": "HK",
            "dataset": dataset,
            "since": f"{today}T00:00:00+00:00",
        }
        for name, value in following.items():
            assert transfer in listed(**{name: value}), name
        assert transfer in listed(**following)
        assert [transfer] == listed(dataset=dataset)  # still a transfer, not a determination
        for name, value in {
            "exporter": decoy,
            "recipient": decoy,
            "origin": "MO",
            "destination": "CN-GZ",
            "dataset": "someone-else",
            "outcome": "PROHIBITED",
            "mechanism": "CERT",
            "until": "2001-01-02T00:00:00+00:00",
        }.items():
            assert transfer not in listed(**{name: value}), name
        determinations = http.get(
            "/api/v1/determinations", params={"dataset": dataset}, headers=officer.headers
        ).json()
        assert transfer not in [r["entry"].get("transfer_id") for r in determinations]
        [row] = http.get("/api/v1/transfers", params={"dataset": dataset}, headers=officer.headers).json()
        assert ("download", today) == (row["kind"], row["logged_at"][:10])
        csv = http.get(
            "/api/v1/transfers", params={"dataset": dataset, "format": "csv"}, headers=officer.headers
        )
        assert transfer in csv.text

        parties = http.get("/api/v1/compliance/parties", headers=officer.headers).json()
        assert exporter in [p["org_id"] for p in parties["exporters"]]
        assert decoy not in [p["org_id"] for p in parties["exporters"] + parties["recipients"]]
        routes = http.get("/api/v1/compliance/transfers-by-route", headers=officer.headers).json()
        assert any(r["day"] == today and (r["origin"], r["destination"]) == ("HK", "HK") for r in routes)
        assert not any((r["origin"], r["destination"]) == ("MO", "CN-GZ") for r in routes)
