"""The provider's publishing pages (issue #19) over HTTP: register from a contract with each lint
problem beside its field, the officer's listing review, an upload streamed on to the API and its
run page, the consequences of deprecating and retiring, and each page refused to other roles."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Callable
from typing import Any

import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.audit import AuditEvent
from gbadz.identity.models import Organization
from gbadz.ingest import pipeline, samples, worker
from gbadz.ingest.runner import default_dags_folder
from tests.conftest import REPO
from tests.console.world import World

SignedIn = Callable[[str], TestClient]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _provider_name(app: FastAPI, world: World) -> str:
    with app.state.sessionmaker() as session:
        org = session.get(Organization, world.provider_org)
        assert org is not None
        return org.name


def contract_yaml(
    app: FastAPI, world: World, base: str = "mo-tourism-visitor-arrivals", **changes: Any
) -> str:
    """A sample contract (the Macao arrivals) as the world's Shenzhen provider would register it."""
    doc = yaml.safe_load((REPO / "contracts" / f"{base}.yaml").read_text())
    doc["id"] = f"arrivals-{secrets.token_hex(4)}"
    doc["name"] = f"Visitor arrivals {doc['id'][-8:]}"
    doc["gbadz"]["provider"]["organization"] = _provider_name(app, world)
    doc["gbadz"]["origin"] = "CN-SZ"
    doc.update(changes)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _register(client: TestClient, text: str) -> Any:
    csrf = _csrf(client.get("/console/provider/datasets/new").text)
    return client.post(
        f"/console/provider/datasets?csrf={csrf}",
        data={"csrf": csrf, "contract_text": text},
        files={"contract_file": ("", b"", "application/octet-stream")},
    )


def _sign_off(officer: TestClient, dataset_id: str) -> None:
    page = officer.get("/console/compliance/classifications")
    assert 200 == page.status_code
    found = re.search(
        rf'action="/console/compliance/classifications/{dataset_id}".*?name="contract_sha256" value="([0-9a-f]+)"',
        page.text,
        re.DOTALL,
    )
    assert found is not None, "the dataset is not in the officer's listing reviews"
    done = officer.post(
        f"/console/compliance/classifications/{dataset_id}",
        data={
            "csrf": _csrf(page.text),
            "decision": "approve",
            "note": "every column classified as the data shows",
            "contract_sha256": found.group(1),
        },
    )
    assert 303 == done.status_code, done.text


def _csv(rows: int, corrupt: bool = False) -> bytes:
    table = samples.generate("mo-tourism-visitor-arrivals", rows)
    if corrupt:
        table = samples.corrupt(table, "mo-tourism-visitor-arrivals")
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def _upload(client: TestClient, dataset_id: str, data: bytes, name: str = "arrivals.csv") -> Any:
    csrf = _csrf(client.get(f"/console/provider/datasets/{dataset_id}").text)
    return client.post(
        f"/console/provider/datasets/{dataset_id}/uploads?csrf={csrf}",
        data={"csrf": csrf},
        files={"file": (name, data, "text/csv")},
    )


def _drain(app: FastAPI) -> int:
    settings = app.state.settings
    ctx = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    return worker.IngestWorker(settings, app.state.sessionmaker, default_dags_folder(), ctx).drain()


class TestRegister:
    def test_lint_problems_are_listed_with_their_fields_and_nothing_is_registered(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """A contract with two problems is refused with both, each naming its field path."""
        provider = signed_in("provider")
        doc = yaml.safe_load(contract_yaml(app, world))
        doc["gbadz"]["category"] = "secret"
        doc["schema"][0]["properties"][0]["logicalType"] = "когда"
        page = _register(provider, yaml.safe_dump(doc, allow_unicode=True))
        assert 400 == page.status_code
        assert 'aria-describedby="contract_text-error"' in page.text
        assert "<code>gbadz.category</code>" in page.text
        assert "<code>schema[0].properties[0].logicalType</code>" in page.text
        assert doc["id"] in page.text  # the text is kept for fixing
        api = provider.get(f"/console/provider/datasets/{doc['id']}")
        assert 404 == api.status_code

    def test_the_api_lists_each_problem_with_its_field(
        self, app: FastAPI, world: World, http_for: Callable[[str], dict[str, str]]
    ) -> None:
        """The API keeps detail and field, and adds problems: one entry per field path."""
        doc = yaml.safe_load(contract_yaml(app, world))
        doc["gbadz"]["category"] = "secret"
        doc["schema"][0]["properties"][0]["logicalType"] = "nothing"
        with TestClient(app) as http:
            response = http.post(
                "/api/v1/datasets",
                content=yaml.safe_dump(doc).encode(),
                headers=http_for("provider") | {"Content-Type": "application/yaml"},
            )
        body = response.json()
        assert 400 == response.status_code
        fields = [p["field"] for p in body["problems"]]
        assert {"gbadz.category", "schema[0].properties[0].logicalType"} <= set(fields)
        assert "field" not in body  # more than one field: none is named alone
        assert all(f"{p['field']}: {p['message']}" in body["detail"] for p in body["problems"])

    def test_a_registered_dataset_is_signed_off_by_an_officer_then_listed(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Registered from the form, the dataset waits for the officer's page; once signed off,
        a consumer finds it. The officer's page is not the provider's, nor the consumer's."""
        provider, officer, consumer = (
            signed_in("provider"),
            signed_in("compliance_officer"),
            signed_in("consumer"),
        )
        text = contract_yaml(app, world)
        dataset_id = yaml.safe_load(text)["id"]
        created = _register(provider, text)
        assert 303 == created.status_code, created.text
        assert f"/console/provider/datasets/{dataset_id}?registered=1" == created.headers["location"]
        page = provider.get(created.headers["location"])
        assert "waiting for a compliance officer" in page.text
        assert 404 == consumer.get(f"/console/datasets/{dataset_id}").status_code
        for other in (provider, consumer):
            assert 404 == other.get("/console/compliance/classifications").status_code
        _sign_off(officer, dataset_id)
        assert 200 == consumer.get(f"/console/datasets/{dataset_id}").status_code
        assert "signed off: listed" in provider.get(f"/console/provider/datasets/{dataset_id}").text

    def test_a_change_must_raise_the_version_and_needs_the_contract_read(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The edit page is prefilled with the contract; the same version is refused beside the
        text, a higher one is saved. Another role cannot open the edit page."""
        provider = signed_in("provider")
        text = contract_yaml(app, world)
        dataset_id = yaml.safe_load(text)["id"]
        assert 303 == _register(provider, text).status_code
        page = provider.get(f"/console/provider/datasets/{dataset_id}/contract")
        assert 200 == page.status_code
        assert f"id: {dataset_id}" in page.text
        action = re.search(r'action="(/console/provider/datasets/[^"]+/contract\?[^"]+)"', page.text)
        assert action is not None
        url = action.group(1).replace("&amp;", "&")
        doc = yaml.safe_load(text)
        doc["description"]["purpose"] = "Daily arrivals, now with a longer description."
        empty = {"contract_file": ("", b"", "application/octet-stream")}  # a browser sends it empty
        same = provider.post(
            url, data={"csrf": _csrf(page.text), "contract_text": yaml.safe_dump(doc)}, files=empty
        )
        assert same.status_code in (400, 409), same.text
        assert "<code>version</code>" in same.text
        doc["version"] = "1.1.0"
        saved = provider.post(
            url, data={"csrf": _csrf(page.text), "contract_text": yaml.safe_dump(doc)}, files=empty
        )
        assert 303 == saved.status_code, saved.text
        assert "1.1.0" in provider.get(f"/console/provider/datasets/{dataset_id}").text
        assert (
            404 == signed_in("consumer").get(f"/console/provider/datasets/{dataset_id}/contract").status_code
        )


class TestUpload:
    def test_an_upload_is_streamed_queued_and_its_run_page_shows_the_outcome(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The file form lands the upload (the size is shown), the run page refreshes itself while
        queued, and after the worker shows version 1, or the failed checks of a bad file."""
        provider, officer = signed_in("provider"), signed_in("compliance_officer")
        text = contract_yaml(app, world)
        dataset_id = yaml.safe_load(text)["id"]
        assert 303 == _register(provider, text).status_code
        _sign_off(officer, dataset_id)
        good = _csv(200)
        sent = _upload(provider, dataset_id, good)
        assert 303 == sent.status_code, sent.text
        run_url = sent.headers["location"].split("?")[0]
        queued = provider.get(run_url)
        assert "3" == queued.headers.get("refresh")
        assert "Queued" in queued.text
        assert f"{len(good):,}" in queued.text
        bad = _upload(provider, dataset_id, _csv(200, corrupt=True))
        assert 303 == bad.status_code
        assert 2 == _drain(app)
        published = provider.get(run_url)
        assert "refresh" not in published.headers
        assert "Published as version 1." in published.text
        rejected = provider.get(bad.headers["location"].split("?")[0])
        assert "Rejected: nothing was published." in rejected.text
        assert "Failed checks" in rejected.text
        assert "arrivals" in rejected.text
        # In a Chinese script, the same page.
        hant = provider.get(run_url, headers={"Accept-Language": "zh-HK"})
        assert "已發佈為第 1 版。" in hant.text

    def test_the_run_page_shows_the_airflow_run_and_why_it_waits(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Under Airflow (ADR 0026) the run page names the Airflow run and its state, and while the
        trigger waits, the reason and the next try (no address, no secret)."""
        from datetime import UTC, datetime, timedelta

        from gbadz.catalog.models import IngestionRun

        provider, officer = signed_in("provider"), signed_in("compliance_officer")
        text = contract_yaml(app, world)
        dataset_id = yaml.safe_load(text)["id"]
        assert 303 == _register(provider, text).status_code
        _sign_off(officer, dataset_id)
        sent = _upload(provider, dataset_id, _csv(50))
        run_url = sent.headers["location"].split("?")[0]
        run_id = int(run_url.rsplit("/", 1)[1])
        with app.state.sessionmaker.begin() as session:
            run = session.get(IngestionRun, run_id)
            run.airflow_run_id, run.airflow_state = f"gbadz-upload-{run_id}-0123456789abcdef", None
            run.trigger_error = "Airflow is unreachable (ConnectError)"
            run.next_trigger_at = datetime.now(UTC) + timedelta(seconds=30)
        waiting = provider.get(run_url)
        assert "Waiting for Airflow" in waiting.text
        assert "Airflow is unreachable (ConnectError)" in waiting.text
        assert f"gbadz-upload-{run_id}-0123456789abcdef" in waiting.text
        assert "等待 Airflow" in provider.get(run_url, headers={"Accept-Language": "zh-CN"}).text
        with app.state.sessionmaker.begin() as session:
            run = session.get(IngestionRun, run_id)
            run.status, run.airflow_state = "running", "running"
            run.task_states = {"land": "success", "validate": "up_for_retry"}
        running = provider.get(run_url)
        assert "Waiting for Airflow" not in running.text
        assert "up_for_retry" in running.text
        assert "(running)" in running.text

    def test_uploads_are_refused_to_others_and_without_the_form_token(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Another role cannot upload or read the run; a forged form (no token) is refused before
        its body is read; a wrong file type is named beside the field; nothing is queued."""
        provider, consumer = signed_in("provider"), signed_in("consumer")
        csrf = _csrf(provider.get(f"/console/provider/datasets/{world.dataset}").text)
        files = {"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}
        forged = provider.post(
            f"/console/provider/datasets/{world.dataset}/uploads", data={"csrf": csrf}, files=files
        )
        assert 403 == forged.status_code
        wrong = provider.post(
            f"/console/provider/datasets/{world.dataset}/uploads?csrf={csrf}",
            data={"csrf": csrf},
            files={"file": ("x.txt", b"a,b\n", "text/plain")},
        )
        assert 422 == wrong.status_code
        assert 'id="file-error"' in wrong.text
        theirs = _csrf(consumer.get("/console/catalog").text)
        refused = consumer.post(
            f"/console/provider/datasets/{world.dataset}/uploads?csrf={theirs}",
            data={"csrf": theirs},
            files=files,
        )
        assert 404 == refused.status_code
        assert 404 == consumer.get(f"/console/provider/datasets/{world.dataset}").status_code
        runs = provider.get(f"/api/v1/datasets/{world.dataset}/ingestion-runs")  # a page, not the API
        assert runs.status_code in (401, 403, 404)
        with app.state.sessionmaker() as session:
            queued = session.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "ingestion.queued", AuditEvent.subject_id == world.dataset)
            )
        assert 0 == queued


@pytest.fixture
def http_for(app: FastAPI, world: World) -> Callable[[str], dict[str, str]]:
    """Bearer headers of the world's API clients, by role."""
    from tests.api import bearer, fetch_token

    def make(role: str) -> dict[str, str]:
        with TestClient(app) as http:
            return bearer(fetch_token(http, world.clients[role]))

    return make


def _granted_dataset(
    app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
) -> str:
    """A listed arrivals dataset of the world's provider on which the world's startup holds a grant."""
    provider, officer = signed_in("provider"), signed_in("compliance_officer")
    text = contract_yaml(app, world)
    dataset_id = yaml.safe_load(text)["id"]
    assert 303 == _register(provider, text).status_code
    _sign_off(officer, dataset_id)
    with TestClient(app) as http:
        asked = http.post(
            f"/api/v1/datasets/{dataset_id}/access-requests",
            json={
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Planning tours across the bay",
                "columns": ["arrival_date", "source_market", "arrivals"],
            },
            headers=http_for("consumer"),
        )
        assert 201 == asked.status_code, asked.text
        if asked.json()["state"] == "under_provider_review":
            approved = http.post(
                f"/api/v1/access-requests/{asked.json()['id']}/approve", json={}, headers=http_for("provider")
            )
            assert 200 == approved.status_code, approved.text
            assert "approved" == approved.json()["state"], approved.json()
    return str(dataset_id)


class TestGrantsAndEndings:
    def test_the_provider_sees_who_holds_grants_and_others_see_none_of_it(
        self, app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
    ) -> None:
        """The dataset page lists the grantee by name and jurisdiction with purpose, columns and
        expiry; the grants filter gives another provider nothing; the preview is 404 to others."""
        dataset_id = _granted_dataset(app, world, signed_in, http_for)
        page = signed_in("provider").get(f"/console/provider/datasets/{dataset_id}")
        with app.state.sessionmaker() as session:
            startup = session.get(Organization, world.startup_org)
            assert startup is not None
        assert startup.name in page.text
        assert "arrival_date, source_market, arrivals" in page.text
        with TestClient(app) as http:
            mine = http.get(f"/api/v1/grants?dataset_id={dataset_id}", headers=http_for("provider")).json()
            assert [(startup.name, "HK")] == [(g["grantee_name"], g["grantee_jurisdiction"]) for g in mine]
            from tests.api import bearer, fetch_token, make_client

            stranger = bearer(fetch_token(http, make_client(app, "provider", "CN-SZ")))
            assert [] == http.get(f"/api/v1/grants?dataset_id={dataset_id}", headers=stranger).json()
            for headers in (stranger, http_for("consumer")):
                preview = http.get(f"/api/v1/datasets/{dataset_id}/retirement-preview", headers=headers)
                assert 404 == preview.status_code, preview.text
            preview = http.get(
                f"/api/v1/datasets/{dataset_id}/retirement-preview", headers=http_for("provider")
            )
            assert (1, [startup.name]) == (preview.json()["live_grants"], preview.json()["grantees"])

    def test_deprecate_and_retire_state_their_consequences_first(
        self, app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
    ) -> None:
        """Each confirmation page counts the live grants; retiring needs the box ticked; both are
        audited; the consumer cannot open either page."""
        dataset_id = _granted_dataset(app, world, signed_in, http_for)
        provider = signed_in("provider")
        assert 404 == signed_in("consumer").get(f"/console/provider/datasets/{dataset_id}/retire").status_code
        page = provider.get(f"/console/provider/datasets/{dataset_id}/deprecate")
        assert "1 live grants keep working" in page.text
        done = provider.post(
            f"/console/provider/datasets/{dataset_id}/deprecate",
            data={"csrf": _csrf(page.text), "reason": "superseded by a daily feed"},
        )
        assert 303 == done.status_code, done.text
        page = provider.get(f"/console/provider/datasets/{dataset_id}/retire")
        assert "1 live grants can no longer deliver anything." in page.text
        unticked = provider.post(
            f"/console/provider/datasets/{dataset_id}/retire",
            data={"csrf": _csrf(page.text), "reason": "collection ended"},
        )
        assert 422 == unticked.status_code
        assert 'id="confirm-error"' in unticked.text
        short = provider.post(
            f"/console/provider/datasets/{dataset_id}/retire",
            data={"csrf": _csrf(page.text), "reason": "x", "confirm": "on"},
        )
        assert 422 == short.status_code
        assert 'id="reason-error"' in short.text
        retired = provider.post(
            f"/console/provider/datasets/{dataset_id}/retire",
            data={"csrf": _csrf(page.text), "reason": "collection ended", "confirm": "on"},
        )
        assert 303 == retired.status_code, retired.text
        assert "Upload a new version" not in provider.get(f"/console/provider/datasets/{dataset_id}").text
        with app.state.sessionmaker() as session:
            actions = session.scalars(
                sa.select(AuditEvent.action)
                .where(AuditEvent.subject_id == dataset_id)
                .order_by(AuditEvent.id)
            ).all()
        assert {"dataset.deprecated", "dataset.retired"} <= set(actions), actions


def _asked(
    app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
) -> tuple[str, str]:
    """A listed deliveries dataset (personal information) and the startup's request for three of
    its columns, waiting for the provider's review."""
    provider, officer = signed_in("provider"), signed_in("compliance_officer")
    text = contract_yaml(app, world, "hk-logistics-deliveries")
    dataset_id = yaml.safe_load(text)["id"]
    assert 303 == _register(provider, text).status_code
    _sign_off(officer, dataset_id)
    with TestClient(app) as http:
        asked = http.post(
            f"/api/v1/datasets/{dataset_id}/access-requests",
            json={
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Cold-chain route planning across the bay",
                "columns": ["delivery_id", "district", "recipient_phone"],
            },
            headers=http_for("consumer"),
        )
    assert 201 == asked.status_code, asked.text
    if asked.json()["state"] != "under_provider_review":
        pytest.skip(f"the engine decided {asked.json()['state']} without the provider's review")
    return str(dataset_id), str(asked.json()["id"])


class TestReviewCards:
    def test_approval_can_narrow_the_columns_but_never_widen_them(
        self, app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
    ) -> None:
        """A wider set is refused naming columns and nothing changes; another provider cannot act;
        a subset is approved, audited, and is what the grant carries."""
        dataset_id, request_id = _asked(app, world, signed_in, http_for)
        url = f"/api/v1/access-requests/{request_id}/approve"
        with TestClient(app) as http:
            wider = http.post(
                url, json={"columns": ["delivery_id", "recipient_name"]}, headers=http_for("provider")
            )
            assert 422 == wider.status_code, wider.text
            assert ("ColumnsNotNarrower", "columns") == (wider.json()["error"], wider.json()["field"])
            empty = http.post(url, json={"columns": []}, headers=http_for("provider"))
            assert 422 == empty.status_code
            from tests.api import bearer, fetch_token, make_client

            stranger = bearer(fetch_token(http, make_client(app, "provider", "CN-SZ")))
            assert 404 == http.post(url, json={"columns": ["district"]}, headers=stranger).status_code
            assert 404 == http.get(f"/api/v1/access-requests/{request_id}", headers=stranger).status_code
            still = http.get(f"/api/v1/access-requests/{request_id}", headers=http_for("provider")).json()
            assert ("under_provider_review", ["delivery_id", "district", "recipient_phone"]) == (
                still["state"],
                still["columns"],
            )
            with app.state.sessionmaker() as session:
                startup = session.get(Organization, world.startup_org)
                assert startup is not None
            assert startup.name == still["requester_name"]

        # The provider's card names the requester and narrows from the browser form.
        provider = signed_in("provider")
        queue = provider.get("/console/requests")
        assert f"{startup.name} (" in queue.text
        done = provider.post(
            f"/console/requests/{request_id}/approve",
            data={"csrf": _csrf(queue.text), "columns_listed": "1", "columns": ["delivery_id", "district"]},
        )
        assert 303 == done.status_code, done.text
        with TestClient(app) as http:
            after = http.get(f"/api/v1/access-requests/{request_id}", headers=http_for("provider")).json()
            assert ["delivery_id", "district"] == after["columns"]
            assert ["delivery_id", "district"] == after["reviews"][-1]["columns"]
            grants = http.get(f"/api/v1/grants?dataset_id={dataset_id}", headers=http_for("consumer")).json()
            if after["state"] == "approved":
                assert [["delivery_id", "district"]] == [g["columns"] for g in grants]
        with app.state.sessionmaker() as session:
            narrowed = session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.action == "access_request.columns_narrowed",
                    AuditEvent.subject_id == request_id,
                )
            ).all()
        assert [["delivery_id", "district"]] == [e.details["approved"] for e in narrowed]

    def test_unticking_every_column_is_refused_beside_the_columns(
        self, app: FastAPI, world: World, signed_in: SignedIn, http_for: Callable[[str], dict[str, str]]
    ) -> None:
        """Approving with no column ticked says so next to the columns; the request still waits."""
        _, request_id = _asked(app, world, signed_in, http_for)
        provider = signed_in("provider")
        queue = provider.get("/console/requests")
        refused = provider.post(
            f"/console/requests/{request_id}/approve", data={"csrf": _csrf(queue.text), "columns_listed": "1"}
        )
        assert 422 == refused.status_code
        assert f'id="columns-{request_id}-error"' in refused.text


class TestOtherProviders:
    def test_another_provider_cannot_reach_any_page_or_form_of_the_dataset(
        self, app: FastAPI, world: World, signed_in: SignedIn, browser_client: Callable[[], TestClient]
    ) -> None:
        """A provider of another organisation gets 404 for every page and form of the dataset
        (even though it is listed), and cannot sign off a listing review; nothing changes."""
        from tests.api import make_client
        from tests.console.conftest import sign_in
        from tests.console.world import add_person

        org = make_client(app, "provider", "CN-SZ").org_id
        other = sign_in(browser_client(), add_person(app, "provider", org, f"rival-{secrets.token_hex(3)}"))
        csrf = _csrf(other.get("/console/provider").text)
        base = f"/console/provider/datasets/{world.dataset}"
        for path in (base, f"{base}/contract", f"{base}/deprecate", f"{base}/retire", f"{base}/runs/1"):
            assert 404 == other.get(path).status_code, path
        files = {"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}
        assert 404 == other.post(f"{base}/uploads?csrf={csrf}", data={"csrf": csrf}, files=files).status_code
        changed = other.post(
            f"{base}/contract?csrf={csrf}",
            data={"csrf": csrf, "contract_text": "id: x\n"},
            files={"contract_file": ("", b"", "application/octet-stream")},
        )
        assert 404 == changed.status_code
        for action in ("deprecate", "retire"):
            ended = other.post(
                f"{base}/{action}", data={"csrf": csrf, "reason": "taking it over", "confirm": "on"}
            )
            assert 404 == ended.status_code, action
        review = other.post(
            f"/console/compliance/classifications/{world.dataset}",
            data={"csrf": csrf, "decision": "return", "note": "not theirs to review", "contract_sha256": "x"},
        )
        assert 404 == review.status_code
        owner = signed_in("provider").get(base)
        assert 200 == owner.status_code
        assert "Upload a new version" in owner.text  # still active, not retired

    def test_a_contract_file_registers_like_the_text(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """A YAML file chosen in the form is registered (the text box is ignored when a file is chosen)."""
        provider = signed_in("provider")
        text = contract_yaml(app, world)
        csrf = _csrf(provider.get("/console/provider/datasets/new").text)
        created = provider.post(
            f"/console/provider/datasets?csrf={csrf}",
            data={"csrf": csrf, "contract_text": "not: a contract"},
            files={"contract_file": ("arrivals.yaml", text.encode(), "application/yaml")},
        )
        assert 303 == created.status_code, created.text
        assert yaml.safe_load(text)["id"] in created.headers["location"]
