"""The catalog API on both databases: search, filters, pagination, visibility, reads, provider actions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.audit import AuditRepository
from gbadz.crypto.keys import KeyContext
from tests.catalog.conftest import YAML, Party, as_yaml, contract, token

Publish = Callable[..., dict[str, Any]]
MakeParty = Callable[..., Party]


def search(http: TestClient, who: Party, **params: Any) -> dict[str, Any]:
    response = http.get("/api/v1/datasets", params=params, headers=who.headers)
    assert 200 == response.status_code, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert status == response.status_code, response.text
    body: dict[str, Any] = response.json()
    assert {"error", "detail", "request_id"} <= set(body)
    if field is not None:
        assert field in str(body["detail"])
    return body


@pytest.mark.both_read_paths
class TestSearch:
    def test_a_column_name_finds_its_dataset(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A word found only in a column name finds that dataset, including snake_case parts and prefixes."""
        provider, consumer = party("provider"), party("consumer")
        word = token()
        found = publish(provider, extra_columns=(f"berth_{word}",))
        publish(provider)  # a dataset without the column
        page = search(http, consumer, q=word)
        assert [found["id"]] == ids(page)
        assert 1 == page["total"]
        # Words inside snake_case column names match too, and prefixes of words.
        assert found["id"] in ids(search(http, consumer, q=f"berth {word[:5]}"))

    def test_name_matches_rank_above_column_and_description_matches(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Search ranks name matches above tag, column and description matches, in descending score."""
        provider, consumer = party("provider"), party("consumer")
        word = token()
        in_description = publish(provider, purpose_text=f"Counts of {word} events.")
        in_column = publish(provider, extra_columns=(f"{word}_count",))
        in_name = publish(provider, name=f"Harbour {word} arrivals")
        in_tag = publish(provider, tags=(word,))
        page = search(http, consumer, q=word)
        assert [in_name["id"], in_tag["id"], in_column["id"], in_description["id"]] == ids(page)
        assert page["sort"] == "relevance"
        scores = [item["score"] for item in page["items"]]
        assert scores == sorted(scores, reverse=True)

    def test_every_word_must_match(self, http: TestClient, party: MakeParty, publish: Publish) -> None:
        """A multi-word search returns only datasets that match every word."""
        provider, consumer = party("provider"), party("consumer")
        a, b = token(), token()
        both = publish(provider, tags=(a, b))
        publish(provider, tags=(a,))
        assert [both["id"]] == ids(search(http, consumer, q=f"{a} {b}"))

    @pytest.mark.parametrize(
        "q",
        [
            "'; DROP TABLE datasets; --",
            '" OR 1=1 --',
            "NEAR(a b) AND NOT *",
            "100%_off \\ %",
            "a:* & !b | (c)",
            "\x00\x01",
            "数据 ✓ — 港澳",
        ],
    )
    def test_sql_and_full_text_meta_characters_are_just_text(
        self, http: TestClient, party: MakeParty, app: FastAPI, q: str
    ) -> None:
        """SQL and full-text operators in a search are plain text: the search succeeds and breaks nothing."""
        consumer = party("consumer")
        response = http.get("/api/v1/datasets", params={"q": q}, headers=consumer.headers)
        assert 200 == response.status_code, response.text
        with app.state.sessionmaker() as session:  # the table is still there
            from gbadz.catalog.models import Dataset

            assert session.get(Dataset, "no-such") is None

    def test_chinese_titles_are_searchable(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A dataset with a Chinese title is found by searching for that title."""
        provider, consumer = party("provider"), party("consumer")
        word = token()
        found = publish(provider, name=f"澳門旅客 {word}")
        assert [found["id"]] == ids(search(http, consumer, q=f"澳門旅客 {word}"))


@pytest.mark.both_read_paths
class TestFilters:
    def test_each_filter_narrows_the_results(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Each search filter (origin, PI, purpose, provider, category, updated_since) narrows the result."""
        hk, mo = party("provider", "HK"), party("provider", "MO")
        consumer = party("consumer", "HK")
        tag = token()
        hk_pi = publish(hk, tags=(tag,), purposes=("cross_border_hr",))
        mo_open = publish(mo, tags=(tag,), origin="MO", with_pi=False, purposes=("other",))
        everything = {hk_pi["id"], mo_open["id"]}
        assert everything == set(ids(search(http, consumer, q=tag)))
        assert [mo_open["id"]] == ids(search(http, consumer, q=tag, origin="MO"))
        assert everything == set(ids(search(http, consumer, q=tag, origin=["MO", "HK"])))
        assert [hk_pi["id"]] == ids(search(http, consumer, q=tag, has_pi=True))
        assert [mo_open["id"]] == ids(search(http, consumer, q=tag, has_pi=False))
        assert [hk_pi["id"]] == ids(search(http, consumer, q=tag, purpose="cross_border_hr"))
        assert [] == ids(search(http, consumer, q=tag, purpose="emergency"))
        assert [mo_open["id"]] == ids(search(http, consumer, q=tag, provider=mo.org_name))
        assert [hk_pi["id"]] == ids(search(http, consumer, q=tag, provider=hk.client.org_id))
        assert everything == set(ids(search(http, consumer, q=tag, category="general")))
        assert [] == ids(search(http, consumer, q=tag, category="important"))
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert [] == ids(search(http, consumer, q=tag, updated_since=future))
        assert everything == set(ids(search(http, consumer, q=tag, updated_since=past)))
        page = search(http, consumer, q=tag, origin="MO")
        assert 1 == page["total"]

    def test_deprecated_is_listed_but_retired_is_not(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Deprecated datasets stay listed; retired ones vanish for consumers but not for their provider."""
        provider, consumer = party("provider"), party("consumer")
        tag = token()
        old = publish(provider, tags=(tag,))
        gone = publish(provider, tags=(tag,))
        reason = {"reason": "superseded by a better dataset"}
        assert (
            200
            == http.post(
                f"/api/v1/datasets/{old['id']}/deprecate", json=reason, headers=provider.headers
            ).status_code
        )
        assert (
            200
            == http.post(
                f"/api/v1/datasets/{gone['id']}/retire", json=reason, headers=provider.headers
            ).status_code
        )
        page = search(http, consumer, q=tag)
        assert [old["id"]] == ids(page)
        assert "deprecated" == page["items"][0]["status"]
        assert [] == ids(search(http, consumer, q=tag, status="retired"))
        assert 404 == http.get(f"/api/v1/datasets/{gone['id']}", headers=consumer.headers).status_code
        # The provider still sees its retired dataset.
        assert [gone["id"]] == ids(search(http, provider, q=tag, status="retired"))


@pytest.mark.both_read_paths
class TestPagination:
    @pytest.mark.parametrize("sort", ["relevance", "name", "-updated"])
    def test_pages_cover_every_dataset_once_while_others_are_published(
        self, http: TestClient, party: MakeParty, publish: Publish, sort: str
    ) -> None:
        """Cursor pages list every existing dataset exactly once while new ones are published in between."""
        provider, consumer = party("provider"), party("consumer")
        tag = token()
        original = set()
        for i in range(17):
            # Mixed relevance: some match by name, some by tag only, so scores tie and differ.
            name = f"{tag} set {i}" if i % 3 == 0 else f"Set {i:02d}"
            original.add(publish(provider, tags=(tag,), name=name)["id"])
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"q": tag, "limit": 5, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            page = search(http, consumer, **params)
            seen += ids(page)
            pages += 1
            # Other providers publish matching datasets between page requests.
            publish(provider, tags=(tag,), name=f"{tag} late {pages}")
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 20
        assert len(seen) == len(set(seen)), "a dataset appeared on two pages"
        assert original <= set(seen), "a dataset that existed throughout was skipped"

    def test_concurrent_publishing_while_paging(
        self, http: TestClient, party: MakeParty, publish: Publish, app: FastAPI
    ) -> None:
        """Paging while another thread publishes never repeats or skips a dataset that existed throughout."""
        provider, consumer = party("provider"), party("consumer")
        tag = token()
        original = {publish(provider, tags=(tag,))["id"] for _ in range(12)}
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            with TestClient(app) as other:
                try:
                    while not stop.is_set():
                        doc = contract(f"t-late-{token()}", provider.org_name, tags=(tag,))
                        r = other.post(
                            "/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML
                        )
                        assert 201 == r.status_code, r.text
                except Exception as exc:  # noqa: BLE001 - reported by the main thread
                    errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            seen: list[str] = []
            cursor = None
            for _ in range(40):
                params: dict[str, Any] = {"q": tag, "limit": 3, "sort": "name"}
                if cursor:
                    params["cursor"] = cursor
                page = search(http, consumer, **params)
                seen += ids(page)
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        finally:
            stop.set()
            thread.join(30)
        assert [] == errors
        assert len(seen) == len(set(seen))
        assert original <= set(seen)

    def test_bad_cursors_are_400(self, http: TestClient, party: MakeParty, publish: Publish) -> None:
        """A malformed cursor, or one from another query or sort, is refused rather than misapplied."""
        provider, consumer = party("provider"), party("consumer")
        tag = token()
        for _ in range(3):
            publish(provider, tags=(tag,))
        first = search(http, consumer, q=tag, limit=1, sort="name")
        cursor = first["next_cursor"]
        assert cursor
        for bad in ["garbage", "%%%", "eyJ4IjoxfQ", cursor[:-3], "A" * 512]:
            r = http.get(
                "/api/v1/datasets", params={"q": tag, "sort": "name", "cursor": bad}, headers=consumer.headers
            )
            assert_error(r, 400, "cursor")
        # A cursor from another query or sort is refused, not silently misapplied.
        r = http.get(
            "/api/v1/datasets",
            params={"q": token(), "sort": "name", "cursor": cursor},
            headers=consumer.headers,
        )
        assert_error(r, 400, "different query")
        r = http.get(
            "/api/v1/datasets",
            params={"q": tag, "sort": "-updated", "cursor": cursor},
            headers=consumer.headers,
        )
        assert_error(r, 400, "cursor")
        assert_error(
            http.get("/api/v1/datasets", params={"cursor": "A" * 600}, headers=consumer.headers), 422
        )


@pytest.mark.both_read_paths
class TestBadInput:
    @pytest.mark.parametrize(
        ("params", "status", "field"),
        [
            ({"origin": "XX"}, 422, "origin"),
            ({"category": "secret"}, 422, "category"),
            ({"purpose": "world-domination"}, 422, "purpose"),
            ({"status": "gone"}, 422, "status"),
            ({"has_pi": "perhaps"}, 422, "has_pi"),
            ({"sort": "random"}, 422, "sort"),
            ({"limit": 0}, 422, "limit"),
            ({"limit": 1000}, 422, "limit"),
            ({"q": "x" * 201}, 422, "q"),
            ({"updated_since": "yesterday"}, 422, "updated_since"),
            ({"updated_since": "2026-01-01T00:00:00"}, 400, "updated_since"),
            ({"sort": "relevance"}, 400, "sort"),
        ],
    )
    def test_bad_parameters_name_the_field(
        self, http: TestClient, party: MakeParty, params: dict[str, Any], status: int, field: str
    ) -> None:
        """A bad search parameter is refused naming the field, without echoing an oversized value back."""
        response = http.get("/api/v1/datasets", params=params, headers=party("consumer").headers)
        body = assert_error(response, status, field)
        assert "x" * 50 not in str(body)  # the oversized value is not echoed back


@pytest.mark.both_read_paths
class TestVisibility:
    def test_hong_kong_consumer_cannot_see_a_shenzhen_important_dataset(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A Shenzhen important dataset looks missing to Hong Kong, Macao and others; Guangzhou sees it."""
        sz_provider = party("provider", "CN-SZ")
        tag = token()
        secret = publish(sz_provider, tags=(tag,), origin="CN-SZ", category="important")
        open_one = publish(sz_provider, tags=(tag,), origin="CN-SZ")
        hk = party("consumer", "HK")
        page = search(http, hk, q=tag)
        assert [open_one["id"]] == ids(page)
        assert 1 == page["total"]  # not counted either
        for path in ("", "/versions", "/versions/1"):
            r = http.get(f"/api/v1/datasets/{secret['id']}{path}", headers=hk.headers)
            missing = http.get(f"/api/v1/datasets/no-such-dataset{path}", headers=hk.headers)
            assert 404 == r.status_code == missing.status_code
            assert r.json()["detail"].replace(secret["id"], "X") == missing.json()["detail"].replace(
                "no-such-dataset", "X"
            )
        # Other facets of the listing do not count it either.
        assert 0 == search(http, hk, q=tag, category="important")["total"]
        # A Guangzhou organisation is under the same (Mainland) regime: it sees it.
        gz = party("consumer", "CN-GZ")
        assert {secret["id"], open_one["id"]} == set(ids(search(http, gz, q=tag)))
        assert 200 == http.get(f"/api/v1/datasets/{secret['id']}", headers=gz.headers).status_code
        # Macao and elsewhere do not.
        for where in ("MO", "OTHER"):
            assert [open_one["id"]] == ids(search(http, party("consumer", where), q=tag))

    def test_visible_to_opens_restricted_metadata_to_named_jurisdictions(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """visible_to shows a restricted dataset's metadata to the named jurisdictions and no others."""
        sz_provider = party("provider", "CN-SZ")
        tag = token()
        shared = publish(sz_provider, tags=(tag,), origin="CN-SZ", category="core", visible_to=("HK",))
        assert [shared["id"]] == ids(search(http, party("consumer", "HK"), q=tag))
        assert [] == ids(search(http, party("consumer", "MO"), q=tag))

    def test_drafts_are_seen_only_by_their_provider(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """A draft dataset is visible only to the provider that owns it."""
        provider, other = party("provider"), party("provider")
        tag = token()
        draft = publish(provider, tags=(tag,), status="draft")
        assert [draft["id"]] == ids(search(http, provider, q=tag, status="draft"))
        assert [] == ids(search(http, other, q=tag, status="draft"))
        assert 404 == http.get(f"/api/v1/datasets/{draft['id']}", headers=other.headers).status_code

    def test_an_unknown_organisation_sees_only_general_datasets(
        self, app: FastAPI, party: MakeParty, publish: Publish
    ) -> None:
        """An organisation unknown to the catalog reads no restricted dataset by id; its provider does."""
        from gbadz.catalog.service import get_visible
        from gbadz.errors import DatasetNotFound
        from gbadz.identity.service import Viewer

        provider = party("provider", "CN-SZ")
        restricted = publish(provider, origin="CN-SZ", category="important")
        general = publish(provider, origin="CN-SZ")
        with app.state.sessionmaker() as session:
            with pytest.raises(DatasetNotFound):
                get_visible(session, Viewer("unknown", "OTHER"), restricted["id"])
            assert general["id"] == get_visible(session, Viewer("unknown", "OTHER"), general["id"]).id
            assert (
                restricted["id"]
                == get_visible(session, Viewer(provider.client.org_id, "OTHER"), restricted["id"]).id
            )

    def test_a_lower_case_jurisdiction_in_visible_to_is_refused(
        self, http: TestClient, party: MakeParty
    ) -> None:
        """A provider cannot open a restricted dataset to "hk": visible_to takes exact codes (400, named)."""
        provider = party("provider", "CN-SZ")
        doc = contract(
            f"t-{token()}", provider.org_name, origin="CN-SZ", category="important", visible_to=("hk",)
        )
        response = http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML)
        assert 400 == response.status_code
        assert "gbadz.visible_to" in str(response.json()["detail"])

    def test_a_stored_lower_case_code_opens_nothing(
        self, app: FastAPI, party: MakeParty, publish: Publish
    ) -> None:
        """A contract stored before codes were checked still loads, and its "hk" shows the dataset to no HK viewer."""
        import sqlalchemy as sa

        from gbadz.catalog.models import Dataset
        from gbadz.catalog.service import get_visible, stored_contract
        from gbadz.errors import DatasetNotFound
        from gbadz.identity.service import Viewer

        provider = party("provider", "CN-SZ")
        dataset = publish(provider, origin="CN-SZ", category="important")["id"]
        with app.state.sessionmaker.begin() as session:  # as an older release stored it
            row = session.get(Dataset, dataset)
            assert row is not None
            row.contract = {**row.contract, "gbadz": {**row.contract["gbadz"], "visible_to": ["hk"]}}
            session.execute(sa.update(Dataset).where(Dataset.id == dataset).values(visible_to=" hk "))
        with app.state.sessionmaker() as session:
            row = session.get(Dataset, dataset)
            assert row is not None
            assert ["hk"] == stored_contract(row).gbadz.visible_to
            with pytest.raises(DatasetNotFound):
                get_visible(session, Viewer("someone-in-hk", "HK"), dataset)


@pytest.mark.both_read_paths
class TestDatasetReads:
    def test_detail_shows_schema_licence_and_hides_personal_examples(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Detail shows schema and licence but no personal examples; only the provider sees the contract."""
        provider, consumer = party("provider"), party("consumer")
        created = publish(provider)
        response = http.get(f"/api/v1/datasets/{created['id']}", headers=consumer.headers)
        assert 200 == response.status_code
        body = response.json()
        columns = {c["name"]: c for c in body["columns"]}
        assert "pi" == columns["phone"]["classification"]
        assert "mask_last4" == columns["phone"]["protection"]
        assert columns["phone"]["examples"] is None
        assert columns["customer_id"]["subject_identifier"]
        assert ["Kowloon"] == columns["district"]["examples"]
        assert "general" == columns["district"]["classification"]
        assert ["trade_transport_academic_mfg_marketing", "other"] == body["licence"]["permitted_purposes"]
        assert "P1Y" == body["licence"]["max_grant_duration"]
        assert body["latest"] is None
        assert body["current_version"] is None
        assert body["contract"] is None  # only the provider gets the raw contract
        assert "+852" not in response.text
        mine = http.get(f"/api/v1/datasets/{created['id']}", headers=provider.headers).json()
        assert mine["contract"]["id"] == created["id"]

    def test_etag_and_cache_control(self, http: TestClient, party: MakeParty, publish: Publish) -> None:
        """Dataset detail is privately cached with an ETag that answers 304 until the dataset changes."""
        provider, consumer = party("provider"), party("consumer")
        created = publish(provider)
        url = f"/api/v1/datasets/{created['id']}"
        first = http.get(url, headers=consumer.headers)
        etag = first.headers["etag"]
        assert "private" in first.headers["cache-control"]
        assert "Authorization" in first.headers["vary"]
        again = http.get(url, headers=consumer.headers | {"If-None-Match": etag})
        assert 304 == again.status_code
        assert b"" == again.content
        assert etag == again.headers["etag"]
        assert 200 == http.get(url, headers=consumer.headers | {"If-None-Match": '"other"'}).status_code
        # A change to the dataset changes its ETag.
        http.post(f"{url}/deprecate", json={"reason": "replaced soon"}, headers=provider.headers)
        changed = http.get(url, headers=consumer.headers | {"If-None-Match": etag})
        assert 200 == changed.status_code
        assert changed.headers["etag"] != etag
        listing = http.get("/api/v1/datasets", headers=consumer.headers)
        assert "no-cache" in listing.headers["cache-control"]


class TestProviderActions:
    def test_register_update_and_audit(self, http: TestClient, party: MakeParty, app: FastAPI) -> None:
        """A provider registers and updates a contract, YAML or JSON, under If-Match and versioning."""
        provider = party("provider")
        doc = contract(f"t-{token()}", provider.org_name)
        created = http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML)
        assert 201 == created.status_code
        assert created.headers["location"] == f"/api/v1/datasets/{doc['id']}"
        contract_etag = created.headers["x-contract-etag"]
        doc["version"] = "1.1.0"
        doc["description"]["purpose"] = "Now with a better description."
        updated = http.put(
            f"/api/v1/datasets/{doc['id']}",
            content=as_yaml(doc),
            headers=provider.headers | YAML | {"If-Match": contract_etag},
        )
        assert 200 == updated.status_code, updated.text
        assert "1.1.0" == updated.json()["contract_version"]
        # The same If-Match again is stale now: 412, nothing changes.
        doc["version"] = "1.2.0"
        stale = http.put(
            f"/api/v1/datasets/{doc['id']}",
            content=as_yaml(doc),
            headers=provider.headers | YAML | {"If-Match": contract_etag},
        )
        assert_error(stale, 412, "If-Match")
        # Not a newer version: 409.
        doc["version"] = "1.0.5"
        assert_error(
            http.put(f"/api/v1/datasets/{doc['id']}", content=as_yaml(doc), headers=provider.headers | YAML),
            409,
            "version",
        )
        # JSON is accepted as well as YAML.
        doc["version"] = "2.0.0"
        import json

        as_json = http.put(
            f"/api/v1/datasets/{doc['id']}",
            content=json.dumps(doc),
            headers=provider.headers | {"Content-Type": "application/json"},
        )
        assert 200 == as_json.status_code, as_json.text
        with app.state.sessionmaker() as session:
            actions = [e.action for e in AuditRepository(session).for_subject("dataset", doc["id"])]
        assert ["dataset.contract_updated", "dataset.contract_updated", "dataset.registered"] == sorted(
            actions
        )

    def test_bad_contracts_and_wrong_callers(
        self, http: TestClient, party: MakeParty, publish: Publish
    ) -> None:
        """Malformed contracts and callers without the right are refused with matching errors."""
        provider, other, consumer = party("provider"), party("provider"), party("consumer")
        doc = contract(f"t-{token()}", provider.org_name)
        assert_error(
            http.post("/api/v1/datasets", content=b"a: [", headers=provider.headers | YAML), 400, "YAML"
        )
        broken = {**doc, "gbadz": {**doc["gbadz"], "origin": "XX"}}
        assert_error(
            http.post("/api/v1/datasets", content=as_yaml(broken), headers=provider.headers | YAML),
            400,
            "gbadz.origin",
        )
        assert_error(
            http.post("/api/v1/datasets", content=as_yaml(doc), headers=other.headers | YAML),
            400,
            "gbadz.provider.organization",
        )
        assert_error(
            http.post(
                "/api/v1/datasets",
                content=as_yaml(doc),
                headers=provider.headers | {"Content-Type": "text/plain"},
            ),
            415,
        )
        assert_error(
            http.post("/api/v1/datasets", content=b"x" * (1024 * 1024 + 1), headers=provider.headers | YAML),
            413,
        )
        assert (
            403
            == http.post(
                "/api/v1/datasets", content=as_yaml(doc), headers=consumer.headers | YAML
            ).status_code
        )
        created = publish(provider, dataset_id=doc["id"])
        assert_error(
            http.post("/api/v1/datasets", content=as_yaml(doc), headers=provider.headers | YAML), 409, "id"
        )
        doc["version"] = "3.0.0"
        # Another provider may read it but not change it; nobody may retire what is not theirs.
        assert_error(
            http.put(f"/api/v1/datasets/{created['id']}", content=as_yaml(doc), headers=other.headers | YAML),
            403,
        )
        assert_error(
            http.post(
                f"/api/v1/datasets/{created['id']}/retire", json={"reason": "not mine"}, headers=other.headers
            ),
            403,
        )
        assert_error(
            http.put(
                f"/api/v1/datasets/{created['id']}",
                content=as_yaml({**doc, "id": "t-other"}),
                headers=provider.headers | YAML,
            ),
            400,
            "id",
        )
        assert_error(
            http.post(
                f"/api/v1/datasets/{created['id']}/deprecate", json={"reason": ""}, headers=provider.headers
            ),
            422,
            "reason",
        )
        detail = http.get(f"/api/v1/datasets/{created['id']}", headers=provider.headers).json()
        assert "1.0.0" == detail["contract_version"]
        assert "active" == detail["status"]

    def test_retiring_destroys_the_datasets_keys(
        self, http: TestClient, party: MakeParty, publish: Publish, app: FastAPI
    ) -> None:
        """Retiring a dataset destroys its data keys; a retired dataset can't be retired or updated again."""
        provider = party("provider")
        created = publish(provider)
        keys = app.state.keys
        key_id = keys.data_key_id(KeyContext(created["id"], "1", "phone", "pi"))
        assert keys.data_key(key_id)
        response = http.post(
            f"/api/v1/datasets/{created['id']}/retire",
            json={"reason": "licence ended"},
            headers=provider.headers,
        )
        assert 200 == response.status_code, response.text
        assert "retired" == response.json()["status"]
        from gbadz.errors import KeyDestroyed

        with pytest.raises(KeyDestroyed):
            keys.data_key(key_id)
        assert_error(
            http.post(
                f"/api/v1/datasets/{created['id']}/retire", json={"reason": "again"}, headers=provider.headers
            ),
            409,
        )
        doc = yaml.safe_load(as_yaml(contract(created["id"], provider.org_name, version="9.0.0")))
        assert_error(
            http.put(
                f"/api/v1/datasets/{created['id']}", content=as_yaml(doc), headers=provider.headers | YAML
            ),
            409,
            "retired",
        )


class TestCraftedContracts:
    CASES: ClassVar[dict[str, tuple[str, str, str]]] = {
        "billion-laughs": (
            "["
            + ", ".join(
                ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
                + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
            )
            + "]",
            "schema[0].properties[1].examples[5]",
            "size budget for a contract",
        ),
        "self-reference": ("&x [1, *x]", "schema[0].properties[1].examples[1]", "refers to a collection"),
        "binary": ("[!!binary aGVsbG8=]", "schema[0].properties[1].examples[0]", "binary is not allowed"),
        "5000-digit-integer": (
            "[" + "9" * 5000 + "]",
            "schema[0].properties[1].examples[0]",
            "an integer longer",
        ),
    }

    def test_refused_with_400_naming_the_field(self, http: TestClient, party: MakeParty) -> None:
        """Each crafted contract is 400 naming the field and the reason, within a bounded time; nothing is registered."""
        provider = party("provider")
        answers, expected = {}, {}
        for name, (examples, field, reason) in self.CASES.items():
            doc = contract(f"t-{token()}", provider.org_name)
            doc["schema"][0]["properties"][1]["examples"] = "EXAMPLES-HERE"
            raw = as_yaml(doc).replace(b"EXAMPLES-HERE", examples.encode())
            started = time.monotonic()
            response = http.post("/api/v1/datasets", content=raw, headers=provider.headers | YAML)
            fast = time.monotonic() - started < 3
            body = response.json()
            answers[name] = (response.status_code, body.get("field"), reason in body.get("detail", ""), fast)
            expected[name] = (400, field, True, True)
            assert 404 == http.get(f"/api/v1/datasets/{doc['id']}", headers=provider.headers).status_code
        assert expected == answers


class TestCatalogGeneration:
    def test_a_change_written_with_a_slow_clock_reaches_another_replicas_index(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        publish: Callable[..., dict[str, Any]],
    ) -> None:
        """A replica whose clock is behind retires a dataset: another replica's search drops it at
        its next generation check, because the generation counter moved (ADR 0027)."""
        from gbadz.catalog.index import CatalogIndex
        from gbadz.catalog.models import Dataset
        from gbadz.catalog.service import CHANGED

        provider, consumer = party("provider", "HK"), party("consumer", "HK")
        word = token()
        created = publish(provider, tags=(word,))
        publish(provider)  # newer: the newest updated_at is not the retired dataset's
        other = CatalogIndex(app.state.sessionmaker)  # replica B's index, built before the change
        assert created["id"] in other.current().ids
        with app.state.sessionmaker.begin() as session:
            dataset = session.get(Dataset, created["id"])
            assert dataset is not None
            stamped = dataset.updated_at
            dataset.status = "retired"
            dataset.updated_at = stamped - timedelta(minutes=5)  # written by a clock 5 minutes behind
            session.info[CHANGED] = True
        other.check()
        snapshot = other.current()
        assert "retired" == snapshot.rows[snapshot.position[created["id"]]]["status"]
        assert 0 == http.get(f"/api/v1/datasets?q={word}", headers=consumer.headers).json()["total"]
