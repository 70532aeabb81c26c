"""Compute-to-data through the HTTP API on both databases (issue #18): the startup's whole path,
the budget ledger under concurrent clients, refunds, who may ask, hostile SQL, and the release
in the transfer log verified offline. Real S3, real databases, the real sandbox."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from gbadz import storage
from gbadz.access.models import Grant
from gbadz.analysis.models import Analysis, AnalysisBudget
from gbadz.app import create_app
from gbadz.audit import AuditEvent
from gbadz.catalog.models import DatasetVersion
from gbadz.config import ComputeSettings, Settings
from gbadz.ingest import samples
from gbadz.translog.log import export, verify_export
from gbadz.translog.models import Checkpoint, LogEntry, LogHead
from tests.access.test_analysis_grants import analysis_determination, dp_finding
from tests.access.test_bound_facts import ask, flag_gba, hospital
from tests.access.test_bound_facts import publish as publish_rows
from tests.analysis.test_query import HOSTILE
from tests.api import basic, bearer, fetch_token, make_client
from tests.conftest import wrong_secret
from tests.datasets import Party, file_mechanism, org_name

MakeParty = Callable[..., Party]
ROWS = 2_000
FEE_BY_DEPARTMENT = "SELECT department, COUNT(*) AS visits, AVG(fee_cny) AS mean_fee FROM outpatient_visits GROUP BY department"
FEE_BY_MONTH = (
    "SELECT department, date_trunc('month', visit_date) AS month, AVG(fee_cny) AS mean_fee "
    "FROM outpatient_visits GROUP BY department, date_trunc('month', visit_date)"
)


def analysis_grant(
    app: FastAPI, http: TestClient, startup: Party, provider: Party, dataset: str
) -> tuple[str, dict[str, Any]]:
    """The real workflow: the startup asks for an analysis of the hospital's visits (MA2 awaits the
    DP finding), the hospital agrees, an independent compliance officer records the DP finding and
    determines the release (MA3 with the health sector's approval on file); the grant is returned."""
    asked = ask(http, startup, dataset, kind="analysis", purpose_text="Average fee per department and month")
    assert 201 == asked.status_code, asked.text
    approve = f"/api/v1/access-requests/{asked.json()['id']}/approve"
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
    officer = _officer(app, http)
    done = http.post(
        approve,
        json={"findings": dp_finding(), "determination": analysis_determination(sector["id"])},
        headers=officer.headers,
    )
    assert 200 == done.status_code, done.text
    assert ("approved", "MA3") == (done.json()["state"], done.json()["decision"]["rule_id"]), done.text
    return str(done.json()["grant_id"]), sector


def _officer(app: FastAPI, http: TestClient) -> Party:
    """An independent compliance officer (of neither party)."""
    client = make_client(app, "compliance_officer", "CN-SZ")
    return Party(client, fetch_token(http, client), org_name(app, client.org_id))


@pytest.fixture
def visits(
    app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
) -> dict[str, Any]:
    """The demo's journey: the Shenzhen hospital's visits (2,000 rows) and a GBA-registered Hong
    Kong startup holding an analysis grant on them."""
    provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
    flag_gba(app, provider, startup)
    dataset = publish_rows(app, http, settings, tmp_path, provider, hospital(provider), ROWS)
    grant, sector = analysis_grant(app, http, startup, provider, dataset)
    return {"provider": provider, "startup": startup, "dataset": dataset, "grant": grant, "sector": sector}


def _post(http: TestClient, grant: str, who: Party, sql: str, **extra: Any) -> httpx.Response:
    headers = who.headers | extra.pop("headers", {})
    return http.post(f"/api/v1/grants/{grant}/analyses", json={"sql": sql} | extra, headers=headers)


def _budget(app: FastAPI, grant: str) -> tuple[float, float]:
    with app.state.sessionmaker() as session:
        row = session.get(AnalysisBudget, grant)
        return (row.epsilon_spent, row.epsilon_total) if row is not None else (0.0, 0.0)


def _log_entries(app: FastAPI, grant: str) -> list[dict[str, Any]]:
    with app.state.sessionmaker() as session:
        texts = session.scalars(
            sa.select(LogEntry.entry).where(LogEntry.grant_id == grant).order_by(LogEntry.index)
        ).all()
    return [json.loads(t) for t in texts]


class TestTheStartupsPath:
    def test_estimate_release_list_meter_and_exhaustion(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any]
    ) -> None:
        """Estimate spends nothing; each release spends its ε; the budget runs out with a 409 saying what is left."""
        startup, grant = visits["startup"], visits["grant"]
        spec = http.get(f"/api/v1/grants/{grant}/analysis", headers=startup.headers)
        assert 200 == spec.status_code, spec.text
        body = spec.json()
        assert "patient_id" == body["spec"]["privacy_unit"]
        assert {"department", "clinic_city", "gender", "visit_date", "insured"} == {
            d["name"] for d in body["spec"]["dimensions"]
        }
        assert (3.0, 0.0, 3.0) == (
            body["budget"]["epsilon_total"],
            body["budget"]["epsilon_spent"],
            body["budget"]["epsilon_left"],
        )

        estimate = http.post(
            f"/api/v1/grants/{grant}/analyses/estimate",
            json={"sql": FEE_BY_DEPARTMENT, "epsilon": 1.0},
            headers=startup.headers,
        )
        assert 200 == estimate.status_code, estimate.text
        assert (1.0, 2.0, True) == (
            estimate.json()["epsilon"],
            estimate.json()["budget_after"]["epsilon_left"],
            estimate.json()["fits"],
        )
        assert estimate.json()["accuracy"]
        assert (0.0, 0.0) == _budget(app, grant)  # an estimate spends nothing

        first = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=1.0)
        assert 201 == first.status_code, first.text
        released = first.json()
        assert ("released", 1.0, 2.0) == (
            released["state"],
            released["epsilon"],
            released["budget"]["epsilon_left"],
        )
        assert ["department", "visits", "mean_fee"] == released["columns"]
        assert released["rows"]
        assert released["result_sha256"]
        assert released["log_index"] is not None

        second = _post(http, grant, startup, FEE_BY_MONTH, epsilon=1.0)
        assert 201 == second.status_code, second.text
        third = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.8)
        assert 201 == third.status_code, third.text
        assert pytest.approx(0.2) == third.json()["budget"]["epsilon_left"]

        listed = http.get(f"/api/v1/grants/{grant}/analyses", headers=startup.headers)
        assert [third.json()["id"], second.json()["id"], released["id"]] == [a["id"] for a in listed.json()]
        one = http.get(f"/api/v1/grants/{grant}/analyses/{released['id']}", headers=startup.headers)
        assert (released["rows"], released["result_sha256"]) == (
            one.json()["rows"],
            one.json()["result_sha256"],
        )

        too_much = http.post(
            f"/api/v1/grants/{grant}/analyses/estimate",
            json={"sql": FEE_BY_DEPARTMENT, "epsilon": 0.5},
            headers=startup.headers,
        )
        assert (200, False) == (too_much.status_code, too_much.json()["fits"])
        size = len(_log_entries(app, grant))
        exhausted = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5)
        assert 409 == exhausted.status_code, exhausted.text
        assert "BudgetExhausted" == exhausted.json()["error"]
        assert "epsilon: 0.5 asked, 0.2 left of 3" in exhausted.json()["detail"]
        assert size == len(_log_entries(app, grant))  # nothing released, nothing logged
        assert pytest.approx(2.8) == _budget(app, grant)[0]

    def test_a_retry_with_the_same_key_is_the_same_release(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any]
    ) -> None:
        """Idempotency-Key: the same release again, no second charge, no second log entry."""
        startup, grant = visits["startup"], visits["grant"]
        key = {"Idempotency-Key": "fee-by-department-1"}
        first = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5, headers=key)
        assert 201 == first.status_code, first.text
        again = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5, headers=key)
        assert 201 == again.status_code, again.text
        assert (first.json()["id"], first.json()["rows"], True) == (
            again.json()["id"],
            again.json()["rows"],
            again.json()["reused"],
        )
        assert pytest.approx(0.5) == _budget(app, grant)[0]
        assert 1 == len([e for e in _log_entries(app, grant) if e.get("transfer_mode") == "release"])

    def test_epsilon_out_of_bounds_and_oversized_versions_are_refused_before_any_charge(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any], settings: Settings
    ) -> None:
        """ε above the per-query limit or not positive: 422 naming epsilon; too many rows: 413; nothing spent."""
        startup, grant = visits["startup"], visits["grant"]
        for epsilon in (1.5, 0, -1):
            refused = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=epsilon)
            assert (422, "epsilon") == (refused.status_code, refused.json().get("field")), refused.text
        small = create_app(settings.model_copy(update={"compute": ComputeSettings(rows_sync_max=100)}))
        with TestClient(small) as other:
            large = other.post(
                f"/api/v1/grants/{grant}/analyses", json={"sql": FEE_BY_DEPARTMENT}, headers=startup.headers
            )
        assert 413 == large.status_code, large.text
        assert "too large for a synchronous analysis" in large.json()["detail"]
        assert (0.0, 3.0) == _budget(app, grant) or (0.0, 0.0) == _budget(app, grant)
        with app.state.sessionmaker() as session:
            assert 0 == session.scalar(
                sa.select(sa.func.count()).select_from(Analysis).where(Analysis.grant_id == grant)
            )


class TestInsideTheZone:
    def test_an_encrypted_measure_is_decrypted_only_for_the_zone_computation(
        self, app: FastAPI, http: TestClient, party: MakeParty, settings: Settings, tmp_path: Path
    ) -> None:
        """A fee column encrypted at rest: the curated file does not open without its key, the analysis
        decrypts it under the zone-compute principal (exactly the query's columns) and releases the mean."""
        provider, startup = party("provider", "CN-SZ"), party("consumer", "HK")
        flag_gba(app, provider, startup)
        doc = hospital(provider)
        doc["gbadz"]["columns"]["fee_cny"]["protection"] = "encrypt"
        dataset = publish_rows(app, http, settings, tmp_path, provider, doc, ROWS)
        grant, _ = analysis_grant(app, http, startup, provider, dataset)
        with app.state.sessionmaker() as session:
            version = session.scalars(
                sa.select(DatasetVersion).where(DatasetVersion.dataset_id == dataset)
            ).one()
            manifest = json.loads(
                storage.ObjectStore(app.state.s3, settings.s3).get_bytes(
                    settings.s3.curated_bucket, version.manifest_key
                )
            )
        stored = storage.ObjectStore(app.state.s3, settings.s3).get_bytes(
            settings.s3.curated_bucket, manifest["files"][0]["key"]
        )
        with pytest.raises(OSError, match=r"[Ee]ncrypt|[Dd]ecrypt|key"):
            pq.read_table(pa.BufferReader(stored), columns=["fee_cny"])
        released = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=1.0)
        assert 201 == released.status_code, released.text
        means = [row[2] for row in released.json()["rows"]]
        assert means
        assert all(isinstance(m, int | float) and -1000 < m < 6000 for m in means)


class TestTheLedger:
    def test_two_replicas_never_spend_more_than_the_budget(
        self,
        app: FastAPI,
        http: TestClient,
        visits: dict[str, Any],
        live_server: tuple[str, FastAPI],
    ) -> None:
        """Two clients on two API replicas spend one grant's budget at once: spent never passes the
        total, and the successful ε add up to what was spent."""
        startup, grant = visits["startup"], visits["grant"]
        base, _ = live_server
        outcomes: list[tuple[int, float]] = []
        lock = threading.Lock()

        def client(post: Callable[[], httpx.Response]) -> None:
            for _ in range(12):
                answer = post()
                with lock:
                    outcomes.append((answer.status_code, answer.json().get("epsilon", 0.0)))
                if answer.status_code == 409:
                    return

        body = {"sql": FEE_BY_DEPARTMENT, "epsilon": 0.6}
        url = f"/api/v1/grants/{grant}/analyses"
        with httpx.Client(base_url=base, timeout=60) as remote:
            # The other replica is its own issuer: the startup signs in there too.
            issued = remote.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(startup.client)
            )
            assert 200 == issued.status_code, issued.text
            there = bearer(issued.json()["access_token"])
            threads = [
                threading.Thread(
                    target=client, args=(lambda: http.post(url, json=body, headers=startup.headers),)
                ),
                threading.Thread(target=client, args=(lambda: remote.post(url, json=body, headers=there),)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
        statuses = {s for s, _ in outcomes}
        assert statuses <= {201, 409}, outcomes
        spent, total = _budget(app, grant)
        released = [e for s, e in outcomes if s == 201]
        assert 5 == len(released)  # 5 x 0.6 = 3.0 (to the last float); a sixth would pass the total
        assert spent <= total
        assert pytest.approx(sum(released)) == spent
        assert 5 == len([e for e in _log_entries(app, grant) if e.get("transfer_mode") == "release"])

    def test_a_failure_before_the_rows_refunds_and_one_after_them_keeps_the_charge(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any], settings: Settings
    ) -> None:
        """A storage failure (no row read) refunds the charge; a sandbox timeout (the rows reached
        the child) keeps it: refunding a failure that may depend on the data would leak it. Both
        audited, neither logged as a release."""
        startup, grant = visits["startup"], visits["grant"]
        broken = create_app(settings.model_copy(update={"s3": wrong_secret(settings.s3)}))
        with TestClient(broken) as other, capture_logs() as logs:
            failed = other.post(
                f"/api/v1/grants/{grant}/analyses", json={"sql": FEE_BY_DEPARTMENT}, headers=startup.headers
            )
        assert 503 == failed.status_code, failed.text
        assert 0.0 == _budget(app, grant)[0]
        slow = create_app(settings.model_copy(update={"compute": ComputeSettings(timeout_s=0.01)}))
        with TestClient(slow) as other:
            timed_out = other.post(
                f"/api/v1/grants/{grant}/analyses",
                json={"sql": FEE_BY_DEPARTMENT, "epsilon": 0.5},
                headers=startup.headers,
            )
        assert (503, "AnalysisStopped") == (timed_out.status_code, timed_out.json()["error"]), timed_out.text
        assert "stays spent" in timed_out.json()["detail"]
        assert 0.5 == pytest.approx(_budget(app, grant)[0])
        listed = http.get(f"/api/v1/grants/{grant}/analyses", headers=startup.headers).json()
        assert ["failed", "refunded"] == [a["state"] for a in listed]
        assert all(a["error"] for a in listed)
        assert [] == [e for e in _log_entries(app, grant) if e.get("transfer_mode") == "release"]
        with app.state.sessionmaker() as session:
            actions = session.scalars(
                sa.select(AuditEvent.action).where(
                    AuditEvent.subject_id == grant,
                    AuditEvent.action.in_(["analysis.refunded", "analysis.failed"]),
                )
            ).all()
        assert ["analysis.failed", "analysis.refunded"] == sorted(actions)
        assert all("secret" not in json.dumps(line) for line in logs)

    def test_a_published_part_altered_in_the_bucket_is_refused_and_refunded(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any], settings: Settings
    ) -> None:
        """Rows swapped under the version (with the gateway's credentials) never reach the
        measurement: 409 before the rows are read, the charge refunded, no release logged."""
        provider, startup, grant = visits["provider"], visits["startup"], visits["grant"]
        manifest = http.get(f"/api/v1/datasets/{visits['dataset']}/versions/1", headers=provider.headers)
        [part] = manifest.json()["manifest"]["files"]
        bucket = settings.s3.curated_bucket
        original = app.state.s3.get_object(bucket, part["key"]).read()
        flipped = bytearray(original)
        flipped[len(original) // 2] ^= 0x01
        app.state.s3.put_object(bucket, part["key"], io.BytesIO(bytes(flipped)), len(flipped))
        try:
            refused = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5)
        finally:
            app.state.s3.put_object(bucket, part["key"], io.BytesIO(original), len(original))
        assert (409, "PublishedVersionAltered") == (refused.status_code, refused.json()["error"]), (
            refused.text
        )
        assert 0.0 == _budget(app, grant)[0]
        [listed] = http.get(f"/api/v1/grants/{grant}/analyses", headers=startup.headers).json()
        assert "refunded" == listed["state"]
        assert [] == [e for e in _log_entries(app, grant) if e.get("transfer_mode") == "release"]
        assert 201 == _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5).status_code

    def test_an_idempotency_key_names_one_query(self, http: TestClient, visits: dict[str, Any]) -> None:
        """The same key with another query or ε is 422 (no silent old answer), nothing charged."""
        startup, grant = visits["startup"], visits["grant"]
        headers = startup.headers | {"Idempotency-Key": "one-query"}
        first = http.post(
            f"/api/v1/grants/{grant}/analyses",
            json={"sql": FEE_BY_DEPARTMENT, "epsilon": 0.5},
            headers=headers,
        )
        assert 201 == first.status_code, first.text
        for body in (
            {"sql": FEE_BY_DEPARTMENT + " LIMIT 3", "epsilon": 0.5},
            {"sql": FEE_BY_DEPARTMENT, "epsilon": 0.25},
        ):
            again = http.post(f"/api/v1/grants/{grant}/analyses", json=body, headers=headers)
            assert (422, "Idempotency-Key") == (again.status_code, again.json().get("field")), again.text
        same = http.post(
            f"/api/v1/grants/{grant}/analyses",
            json={"sql": FEE_BY_DEPARTMENT, "epsilon": 0.5},
            headers=headers,
        )
        assert (201, True, first.json()["id"]) == (same.status_code, same.json()["reused"], same.json()["id"])


class TestWhoMayAsk:
    def test_someone_elses_grant_is_missing_a_copy_grant_has_none_a_revoked_one_ends(
        self,
        publish: Callable[..., dict[str, Any]],
        app: FastAPI,
        http: TestClient,
        party: MakeParty,
        visits: dict[str, Any],
    ) -> None:
        """Another organisation gets 404 on every route; a copy grant 409; a revoked grant 410."""
        grant, provider = visits["grant"], visits["provider"]
        stranger = party("consumer", "HK")
        for method, path, body in (
            ("GET", f"/api/v1/grants/{grant}/analysis", None),
            ("POST", f"/api/v1/grants/{grant}/analyses/estimate", {"sql": FEE_BY_DEPARTMENT}),
            ("POST", f"/api/v1/grants/{grant}/analyses", {"sql": FEE_BY_DEPARTMENT}),
            ("GET", f"/api/v1/grants/{grant}/analyses", None),
        ):
            answer = http.request(method, path, json=body, headers=stranger.headers)
            assert 404 == answer.status_code, (path, answer.text)

        # A copy grant (a Hong Kong dataset with no personal information, to a Hong Kong startup).
        copy_dataset = publish(party("provider", "HK"), with_pi=False)["id"]
        copy = ask(http, visits["startup"], copy_dataset).json()
        assert ("approved", "copy") == (copy["state"], copy["kind"]), copy
        for method, path, body in (
            ("GET", f"/api/v1/grants/{copy['grant_id']}/analysis", None),
            ("POST", f"/api/v1/grants/{copy['grant_id']}/analyses/estimate", {"sql": FEE_BY_DEPARTMENT}),
            ("POST", f"/api/v1/grants/{copy['grant_id']}/analyses", {"sql": FEE_BY_DEPARTMENT}),
        ):
            refused = http.request(method, path, json=body, headers=visits["startup"].headers)
            assert (409, "WrongGrantKind", "grant: a copy grant has no analyses") == (
                refused.status_code,
                refused.json()["error"],
                refused.json()["detail"],
            )

        revoked = http.post(
            f"/api/v1/grants/{grant}/revoke", json={"reason": "study ended"}, headers=provider.headers
        )
        assert 200 == revoked.status_code, revoked.text
        ended = _post(http, grant, visits["startup"], FEE_BY_DEPARTMENT)
        assert (410, "GrantInactive") == (ended.status_code, ended.json()["error"])
        assert 0.0 == _budget(app, grant)[0]

    def test_a_release_decided_stricter_suspends_the_grant_and_spends_nothing(
        self, app: FastAPI, http: TestClient, party: MakeParty, visits: dict[str, Any]
    ) -> None:
        """The health sector's approval withdrawn: the next analysis is decided again, stricter, so the
        grant is suspended (410), nothing is charged and nothing is logged (invariant 7)."""
        startup, grant = visits["startup"], visits["grant"]
        withdrawn = http.post(
            f"/api/v1/mechanisms/{visits['sector']['id']}/withdraw",
            json={"reason": "the health commission withdrew its approval"},
            headers=party("compliance_officer", "CN-SZ").headers,
        )
        assert 200 == withdrawn.status_code, withdrawn.text
        stopped = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5)
        assert (410, "GrantSuspended") == (stopped.status_code, stopped.json()["error"]), stopped.text
        again = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5)
        assert (410, "GrantSuspended") == (again.status_code, again.json()["error"]), again.text
        assert 0.0 == _budget(app, grant)[0]
        assert [] == [e for e in _log_entries(app, grant) if e.get("transfer_mode") == "release"]
        with app.state.sessionmaker() as session:
            held = session.get(Grant, grant)
            assert held is not None
            assert held.suspended_at is not None

    def test_analyses_per_grant_are_limited(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any], settings: Settings
    ) -> None:
        """Past GBADZ_COMPUTE__LIMIT analyses in the window: 429 with Retry-After, before any charge."""
        startup, grant = visits["startup"], visits["grant"]
        limited = create_app(settings.model_copy(update={"compute": ComputeSettings(limit=1)}))
        with TestClient(limited) as other:
            url, body = f"/api/v1/grants/{grant}/analyses", {"sql": FEE_BY_DEPARTMENT, "epsilon": 0.5}
            assert 201 == other.post(url, json=body, headers=startup.headers).status_code
            refused = other.post(url, json=body, headers=startup.headers)
        assert (429, "grant") == (refused.status_code, refused.json()["field"]), refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert pytest.approx(0.5) == _budget(app, grant)[0]

    def test_hostile_sql_is_refused_naming_the_rule(
        self, app: FastAPI, http: TestClient, visits: dict[str, Any]
    ) -> None:
        """Every hostile query of the allow-list's tests (raw columns, *, joins, subqueries, file and
        network functions, stacked statements, CASE on the subject id…) is a 400 naming its rule,
        on both the estimate and the analysis routes, before any charge."""
        assert len(HOSTILE) >= 15
        wrong = []
        for sql, rule in HOSTILE:
            for route in ("analyses/estimate", "analyses"):
                refused = http.post(
                    f"/api/v1/grants/{visits['grant']}/{route}",
                    json={"sql": sql},
                    headers=visits["startup"].headers,
                )
                body = refused.json()
                if (refused.status_code, body.get("error"), body.get("field")) != (
                    400,
                    "QueryRefused",
                    "sql",
                ) or (f"rule {rule}:" not in body.get("detail", "")):
                    wrong.append((route, sql, rule, refused.status_code, body.get("detail")))
                # The refusal names the rule, never a value the query held (invariant 9).
                echoed = [v for v in re.findall(r"'([^']{3,})'", sql) if v in refused.text]
                if echoed:
                    wrong.append((route, sql, rule, "echoes", echoed))
        assert [] == wrong
        assert 0.0 == _budget(app, visits["grant"])[0]
        with app.state.sessionmaker() as session:
            assert 0 == session.scalar(
                sa.select(sa.func.count()).select_from(Analysis).where(Analysis.grant_id == visits["grant"])
            )


class TestTheRecord:
    def test_the_release_is_logged_verifies_offline_and_shows_beside_copies(
        self, app: FastAPI, http: TestClient, party: MakeParty, visits: dict[str, Any], tmp_path: Path
    ) -> None:
        """The release's entry carries the decision, query and result hashes, ε; the log verifies offline;
        the officer filters releases and sees them counted per exporter."""
        with app.state.sessionmaker.begin() as session:  # this test's log is this app's alone
            session.execute(sa.delete(Checkpoint))
            session.execute(sa.delete(LogEntry))
            session.execute(sa.update(LogHead).values(size=0))
        startup, grant = visits["startup"], visits["grant"]
        with capture_logs() as logs:
            released = _post(http, grant, startup, FEE_BY_DEPARTMENT, epsilon=0.5)
        assert 201 == released.status_code, released.text
        body = released.json()
        officer = party("compliance_officer", "CN-SZ")
        entry = http.get(f"/api/v1/transfer-log/entries/{body['log_index']}", headers=officer.headers)
        assert 200 == entry.status_code, entry.text
        logged = entry.json()["entry"]
        assert ("release", body["result_sha256"], body["result_sha256"]) == (
            logged["transfer_mode"],
            logged["result_sha256"],
            logged["content_hash"],
        )
        assert (body["query_sha256"], 0.5, "patient_id", 5, 20) == (
            logged["release"]["query_sha256"],
            logged["release"]["epsilon"],
            logged["release"]["privacy_unit"],
            logged["release"]["max_rows_per_person"],
            logged["release"]["min_group_size"],
        )
        assert {"fee_cny": [0.0, 5000.0]} == logged["release"]["bounds"]
        assert logged["release"]["mechanism"].startswith("OpenDP ")
        assert (0, "none", "anonymised", "MA3") == (
            logged["n_individuals"],
            logged["counter_basis"],
            logged["deid_status"],
            logged["rule_id"],
        )
        assert logged["rule_id"]
        assert logged["legal_basis"]
        assert logged["rules_hash"]
        assert (visits["dataset"], "CN-SZ", "HK") == (
            logged["dataset_id"],
            logged["origin"],
            logged["destination"],
        )
        assert body["columns"] == logged["columns"]

        with app.state.sessionmaker.begin() as session:
            app.state.transfer_log.checkpoint(session)
        target = tmp_path / "log.jsonl"
        with app.state.sessionmaker() as session:
            export(session, app.state.transfer_log, target)
        verdict = verify_export(target)
        assert verdict.ok, verdict.problem

        releases = http.get("/api/v1/transfers?transfer_mode=release", headers=officer.headers)
        assert [body["log_index"]] == [r["index"] for r in releases.json()]
        assert [] == http.get("/api/v1/transfers?transfer_mode=download", headers=officer.headers).json()
        csv = http.get("/api/v1/transfers?transfer_mode=release&format=csv", headers=officer.headers).text
        assert body["result_sha256"] in csv
        counters = http.get("/api/v1/compliance/counters", headers=officer.headers).json()
        [mine] = [c for c in counters if c["exporter_org_id"] == visits["provider"].client.org_id]
        assert ("none", 1, 0.5, 0) == (
            mine["basis"],
            mine["releases"],
            mine["epsilon_spent"],
            mine["pi_individuals"],
        )

        # No personal value of the source rows in any answer or log line.
        source = samples.generate("sz-hospital-outpatient-visits", ROWS)
        personal = {
            str(v)
            for name in ("patient_id", "patient_name", "phone")
            for v in source.column(name).to_pylist()
            if v
        }
        said = json.dumps(body) + entry.text + json.dumps(logs, default=str) + csv
        assert [] == [v for v in personal if v in said]
