"""Issue #19: what a console page costs, without giving up what it enforces.

A page's API calls take no second admission slot (one slot per outer request) and still need
the person's token; a session read moments ago is taken from memory, and whatever ends a
session (sign-out, disabling the person, another process deleting it) still ends it. The
catalog page searches without a round trip through the app, and still lists exactly what the
API's search answers the person, refusing the tokens the API refuses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import db
from gbadz.app import create_app
from gbadz.catalog.search import SearchQuery
from gbadz.console.inprocess import InProcess
from gbadz.console.models import ConsoleSession
from gbadz.console.session import SESSION_COOKIE, digest
from gbadz.identity import people
from tests.api import bearer, fetch_token
from tests.conftest import REPO
from tests.console.conftest import BASE, sign_in
from tests.console.world import World
from tests.datasets import YAML

SignedIn = Callable[[str], TestClient]


def _register(http: TestClient, world: World, suffix: str, name: str) -> dict[str, Any]:
    """A second dataset of the world's provider, registered through the API (not yet signed
    off, so only its provider sees it); its contract."""
    doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["id"] = f"{world.dataset}-{suffix}"
    doc["name"] = name
    doc["gbadz"]["origin"] = "CN-SZ"  # the provider organisation's jurisdiction
    token = fetch_token(http, world.clients["provider"])
    doc["gbadz"]["provider"]["organization"] = http.get(
        f"/api/v1/datasets/{world.dataset}", headers=bearer(token)
    ).json()["provider"]["name"]
    registered = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=bearer(token) | YAML
    )
    assert 201 == registered.status_code, registered.text
    return doc  # type: ignore[no-any-return]


@pytest.fixture
def one_slot(app: FastAPI) -> Iterator[FastAPI]:
    """The same world served by an app that admits one request at a time, with a short queue."""
    settings = app.state.settings
    api = settings.api.model_copy(update={"max_active_requests": 1, "queue_timeout_s": 2.0})
    narrow = create_app(settings.model_copy(update={"api": api}))
    yield narrow
    narrow.state.engine.dispose()


class TestOneSlotPerPage:
    def test_a_page_and_its_api_calls_need_one_admission_slot(self, world: World, one_slot: FastAPI) -> None:
        """With one slot, pages answer 200: their in-process API calls do not queue for a second
        slot (they did, and under 32 connections every slot was held by a page waiting for its
        own call until the queue timeout)."""
        with TestClient(one_slot, base_url=BASE, follow_redirects=False) as client:
            sign_in(client, world.people["consumer"])
            started = time.monotonic()
            catalog = client.get("/console/catalog")
            dataset = client.get(f"/console/datasets/{world.dataset}")
            assert (200, 200) == (catalog.status_code, dataset.status_code), catalog.text
            assert time.monotonic() - started < 2.0  # never waited out the queue timeout

    def test_an_in_process_call_still_needs_a_valid_token(self, app: FastAPI) -> None:
        """Skipping admission skips nothing else: without a token, or with a forged one, the API refuses."""
        caller = InProcess(app, BASE)

        async def calls() -> list[int]:
            bare = await caller.request("GET", "/api/v1/datasets")
            forged = await caller.request(
                "GET", "/api/v1/datasets", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
            )
            return [bare.status_code, forged.status_code]

        assert [401, 401] == asyncio.run(calls())

    def test_a_request_from_outside_cannot_claim_to_be_in_process(
        self, world: World, one_slot: FastAPI
    ) -> None:
        """The marker is a key of the ASGI scope, not anything a client sends: a request naming it
        in a header waits for a slot like any other."""
        with TestClient(one_slot, base_url=BASE, follow_redirects=False) as client:
            answer = client.get("/api/v1/datasets", headers={"gbadz.in_process": "1", "X-In-Process": "true"})
            assert 401 == answer.status_code  # admitted as usual, then refused for want of a token


def _listed(page: str) -> list[str]:
    return [unquote(found) for found in re.findall(r'<h2><a href="/console/datasets/([^"]+)">', page)]


class TestCatalogSearchWithoutRoundTrip:
    @pytest.mark.fresh_world
    def test_the_catalog_page_lists_what_the_api_search_answers_the_person(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The same datasets in the same order and the same total as the API's search for the
        person's organisation, filters applied alike; a dataset not yet signed off is missing
        for the consumer (as in the API) and listed for its provider."""
        http = TestClient(app)
        doc = _register(http, world, "unreviewed", "Shenzhen deliveries awaiting review")
        queries: list[dict[str, str]] = [
            {},
            {"q": "deliveries"},
            {"q": "shenzhen deliver", "origin": "CN-SZ"},
            {"has_pi": "true"},
            {"has_pi": "false"},
            {"category": "core"},
        ]
        seen: dict[str, set[str]] = {}
        for role in ("consumer", "provider"):
            page_client = signed_in(role)
            token = fetch_token(http, world.clients[role])  # an API client of the same organisation
            seen[role] = set()
            for params in queries:
                api = http.get("/api/v1/datasets", params=params, headers=bearer(token)).json()
                page = page_client.get("/console/catalog", params=params)
                assert 200 == page.status_code, page.text
                assert [item["id"] for item in api["items"]] == _listed(page.text), (role, params)
                assert f"{api['total']} datasets you may see" in page.text, (role, params)
                seen[role] |= set(_listed(page.text))
        assert doc["id"] not in seen["consumer"]
        assert {doc["id"], world.dataset} <= seen["provider"]
        # The dataset page reads as the API's get-by-id does: hidden looks missing.
        hidden = signed_in("consumer").get(f"/console/datasets/{doc['id']}")
        assert 404 == hidden.status_code
        assert doc["name"] not in hidden.text
        own = signed_in("provider").get(f"/console/datasets/{doc['id']}")
        assert 200 == own.status_code
        assert doc["name"] in own.text

    def test_a_token_the_api_refuses_is_refused_by_the_catalog_and_dataset_pages(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The pages authorise the person's token as the API routes do: a forged token sends
        the person to sign in, a token without ``catalog:read`` looks missing (the API's 401
        and 403), and neither shows a dataset."""
        client = signed_in("consumer")
        assert world.dataset in _listed(client.get("/console/catalog").text)
        id_hash = digest(client.cookies[SESSION_COOKIE])
        tokens = app.state.console_tokens
        try:
            tokens.put(id_hash, "eyJhbGciOiJub25lIn0.e30.", 900)
            for page in ("/console/catalog", f"/console/datasets/{world.dataset}"):
                forged = client.get(page)
                assert 303 == forged.status_code, page
                assert forged.headers["location"].startswith("/console/login")
            narrow = fetch_token(TestClient(app), world.clients["consumer"], scope="access:request")
            tokens.put(id_hash, narrow, 900)
            for page in ("/console/catalog?q=deliveries", f"/console/datasets/{world.dataset}"):
                refused = client.get(page)
                assert 404 == refused.status_code, page
                assert "Shenzhen last-mile deliveries" not in refused.text  # the dataset's name
        finally:
            tokens.forget(id_hash)
        assert world.dataset in _listed(client.get("/console/catalog").text)  # a fresh token again


@pytest.fixture
def by_database(app: FastAPI) -> Iterator[FastAPI]:
    """The same world served by an app that searches the database, not the in-memory index."""
    settings = app.state.settings
    api = settings.api.model_copy(update={"catalog_search": "database"})
    direct = create_app(settings.model_copy(update={"api": api}))
    yield direct
    direct.state.engine.dispose()


class TestCardsPerSnapshot:
    def test_a_card_is_rendered_once_per_snapshot_and_a_change_shows_at_once(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The catalog's cards are kept in the index snapshot they were rendered from: the page
        shows the kept card, and a change to the dataset (a new snapshot) shows on the next page."""
        from markupsafe import Markup

        http = TestClient(app)
        doc = _register(http, world, "cards", "Kwai Chung berth cards")
        token = fetch_token(http, world.clients["provider"])
        provider = signed_in("provider")
        # The first search after a change reads through the database (the index rebuilds); the
        # next is the index's, and keeps its cards.
        for _ in range(2):
            page = provider.get("/console/catalog", params={"q": "kwai chung berth"})
            assert 200 == page.status_code
            assert [doc["id"]] == _listed(page.text)
        snapshot = app.state.catalog_read_path.index.ready()
        assert snapshot is not None
        key = ("console-card", "en", doc["id"])
        assert doc["name"] in snapshot.memo[key]
        # The page takes the card from the snapshot: what is kept there is what is shown.
        snapshot.memo[key] = Markup(  # noqa: S704 - the test's own markup
            f'<li class="card"><a href="/console/datasets/{doc["id"]}">kept card</a></li>'
        )
        assert "kept card" in provider.get("/console/catalog", params={"q": "kwai chung berth"}).text
        deprecated = http.post(
            f"/api/v1/datasets/{doc['id']}/deprecate",
            json={"reason": "replaced by the hourly feed"},
            headers=bearer(token),
        )
        assert 200 == deprecated.status_code, deprecated.text
        # The first page after the change reads through the database; the second is the new
        # snapshot's, whose memo does not hold the kept card.
        for _ in range(2):
            after = provider.get("/console/catalog", params={"q": "kwai chung berth"})
            assert "kept card" not in after.text
            assert doc["name"] in after.text
            assert 'class="badge badge-deprecated"' in after.text
        renewed = app.state.catalog_read_path.index.ready()
        assert renewed is not None
        assert renewed is not snapshot
        assert "badge-deprecated" in renewed.memo[key]


class TestDirectReadRefusals:
    def test_what_the_apis_handlers_answered_is_a_page_not_json(
        self, world: World, by_database: FastAPI
    ) -> None:
        """The catalog page reads without the API's exception handlers, so it answers their cases
        itself: a cursor whose position holds a NUL (the database layer refuses it, as the API
        does with a 422) and a made-up position number are messages on the page, never JSON."""
        query = SearchQuery()
        with TestClient(by_database, base_url=BASE, follow_redirects=False) as client:
            sign_in(client, world.people["consumer"])
            for key in (["2026-01-01T00:00:00+00:00", "a\u0000"], ["2026-01-01", "b"]):
                raw = json.dumps({"f": query.fingerprint(), "k": key}).encode()
                cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
                page = client.get("/console/catalog", params={"cursor": cursor})
                assert page.headers["content-type"].startswith("text/html"), page.text[:200]
                assert page.status_code in (200, 422), page.status_code
            ranked = SearchQuery(q="deliveries")
            raw = json.dumps({"f": ranked.fingerprint(), "k": [10**300, "a"]}).encode()
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            page = client.get("/console/catalog", params={"q": "deliveries", "cursor": cursor})
            assert (422, "text/html") == (page.status_code, page.headers["content-type"][:9]), page.text[:200]
            api = client.get(
                "/api/v1/datasets",
                params={"q": "deliveries", "cursor": cursor},
                headers=bearer(fetch_token(client, world.clients["consumer"])),
            )
            assert (400, "cursor") == (api.status_code, api.json()["field"]), api.text


class TestSessionsInMemory:
    def test_a_page_read_moments_after_another_does_not_read_the_session_again(
        self, app: FastAPI, signed_in: SignedIn
    ) -> None:
        """The second page within the refresh interval finds its session in memory."""
        client = signed_in("consumer")
        assert 200 == client.get("/console/catalog").status_code
        statements: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements.append(statement)

        sa.event.listen(app.state.engine, "before_cursor_execute", seen)
        try:
            assert 200 == client.get("/console/catalog").status_code
        finally:
            sa.event.remove(app.state.engine, "before_cursor_execute", seen)
        assert [] == [s for s in statements if "console_sessions" in s]

    @pytest.mark.fresh_world
    def test_disabling_a_person_ends_their_remembered_session_at_once(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """A person disabled through this process is signed out at their very next page, however
        recently their session was read."""
        client = signed_in("consumer")
        assert 200 == client.get("/console/catalog").status_code
        with app.state.sessionmaker.begin() as session:
            people.disable_user(session, actor="test", username=world.people["consumer"].username)
        page = client.get("/console/catalog")
        assert 303 == page.status_code
        assert page.headers["location"].startswith("/console/login")

    def test_a_session_deleted_by_another_process_ends_within_the_refresh_interval(
        self, app: FastAPI, signed_in: SignedIn
    ) -> None:
        """Another replica (or the CLI) deleting the row is seen here within the revocation
        refresher's interval, as a revoked token is."""
        client = signed_in("consumer")
        assert 200 == client.get("/console/catalog").status_code
        other = db.create_engine(app.state.settings.db)
        try:
            with other.begin() as conn:
                conn.execute(
                    sa.delete(ConsoleSession).where(
                        ConsoleSession.id_hash == digest(client.cookies[SESSION_COOKIE])
                    )
                )
        finally:
            other.dispose()
        time.sleep(app.state.authenticator.revocations.refresh_s + 0.1)
        assert 303 == client.get("/console/catalog").status_code


class TestLabelsFoldedAtCompileTime:
    @pytest.mark.parametrize("locale", ["en", "zh-Hans", "zh-Hant"])
    def test_a_folded_page_is_the_page_translated_at_render_time(self, locale: str) -> None:
        """Labels translated when the template is compiled give the same page, byte for byte,
        as translating each label while rendering (escaping included)."""
        from markupsafe import Markup

        from gbadz.console.i18n import translate
        from gbadz.console.routes import CATEGORIES, JURISDICTIONS, PURPOSES
        from gbadz.console.session import Person, Signed
        from gbadz.console.web import ENVS, LOCALE_NAMES, cards, env, helpers

        def t(text: str, **params: object) -> str:
            label = translate(text, locale)
            return label.format(**params) if params else label

        item = {
            "id": "sz-port <berths>",
            "name": "Port & berths",
            "provider": {"org_id": "o", "name": "Shenzhen <Port>"},
            "origin": "CN-SZ",
            "current_version": 3,
            "row_count": 1200,
            "category": "important",
            "has_pi": True,
            "has_spi": False,
            "status": "deprecated",
            "tags": ["port", "<b>"],
            "summary": "Hourly berth occupancy",
        }
        context = {
            "request": None,
            "path": "/console/catalog",
            "query": "q=port&x=<y>",
            "locale": locale,
            "locales": LOCALE_NAMES,
            "t": t,
            "signed": Signed("h", Person("id", "u", "A <b>", "org", "Org & co", "consumer"), "csrf"),
            "filters": {"q": "<port>", "category": "core", "origin": "HK", "has_pi": "true", "purpose": ""},
            "page": {"items": [item, item | {"has_pi": False, "status": "active"}], "total": 2},
            "next_link": "/console/catalog?q=a&cursor=b",
            "errors": {"q": "q: too <long>", "form": "refused"},
            "categories": CATEGORIES,
            "jurisdictions": JURISDICTIONS,
            "purposes": PURPOSES,
            **helpers(locale),
        }
        unfolded = env.overlay()
        unfolded.globals = {**env.globals, "t": t}  # the imported macros' t, as in ENVS
        items = context["page"]["items"]  # type: ignore[index]
        runtime_cards = [
            Markup(unfolded.get_template("_card.html").render(d=d, **context))  # noqa: S704 - autoescaped
            for d in items
        ]
        runtime = unfolded.get_template("catalog.html").render(cards=runtime_cards, **context)
        folded = ENVS[locale].get_template("catalog.html").render(cards=cards(locale, items, None), **context)
        assert runtime == folded
        assert translate("Search datasets", locale) in folded
        assert "Shenzhen &lt;Port&gt;" in folded  # a card's values are escaped
        assert "<b>" not in folded


class TestTemplateShortcuts:
    def test_pages_render_as_stock_jinja_renders_them(self) -> None:
        """The console's environment (dict keys looked up first, plain functions called
        directly) renders what stock Jinja2 renders: a key named like a dict method is still the
        method, a missing key is still an error, other mappings are left to Jinja."""
        import jinja2

        from gbadz.console.web import env

        stock = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        source = (
            "{{ d.name }}|{{ d.items()|list|length }}|{{ d.get('name') }}|{{ o.name }}|"
            "{{ f(d.name, n=2) }}|{% for x in d.tags %}{{ x }}{% endfor %}|{{ d.provider.name }}"
        )
        context = {
            "d": {"name": "<a>", "items": [1], "get": "no", "tags": ["t1", "t2"], "provider": {"name": "P&"}},
            "o": type("Named", (dict,), {"name": "attribute"})(name="key"),
            "f": lambda text, n: text * n,
        }
        ours = env.from_string(source)
        assert stock.from_string(source).render(**context) == ours.render(**context)
        assert "&lt;a&gt;|5|&lt;a&gt;|attribute|&lt;a&gt;&lt;a&gt;|t1t2|P&amp;" == ours.render(**context)
        with pytest.raises(jinja2.UndefinedError):
            env.from_string("{{ d.missing }}").render(d={})


class TestPagesLeaveNoCycles:
    def test_the_catalog_and_dataset_pages_leave_no_cyclic_garbage(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """A page's objects (its request, its data, the rendering's context) are freed when it
        is answered, not left in a cycle for the collector: importing the macros with the
        page's context made one per render, and under load a full collection ran every second
        (issue #19)."""
        import gc

        import jinja2.runtime
        from starlette.requests import Request

        client = signed_in("consumer")
        pages = ("/console/catalog?q=deliveries", f"/console/datasets/{world.dataset}")
        for page in pages:  # templates compiled, sessions and tokens in memory
            assert 200 == client.get(page).status_code
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for page in pages:
                assert 200 == client.get(page).status_code
            gc.collect()
            left = [
                o
                for o in gc.garbage
                if isinstance(o, Request | jinja2.runtime.Macro | jinja2.runtime.Context)
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert [] == left


class TestLiveSessionsBookkeeping:
    def test_a_read_that_started_before_a_sign_out_is_not_kept(self) -> None:
        """A page's read that found the row live, finishing after a sign-out forgot the session,
        must not put it back: the next page reads the database (and finds no row)."""
        from datetime import UTC, datetime, timedelta

        from gbadz.console.session import LiveSessions, Person, Signed

        live = LiveSessions(ttl_s=60.0)
        signed = Signed("h", Person("id", "u", "U", "org", "Org", "consumer"), "csrf")
        now = datetime.now(UTC)
        read_at = time.monotonic()
        live.forget("h")  # the sign-out commits while the read is under way
        live.put(signed, read_at, now + timedelta(hours=1), now)
        assert live.get("h") is None
        live.put(signed, time.monotonic(), now + timedelta(hours=1), now)  # a read after it is kept
        assert signed == live.get("h")
        live.put(signed, time.monotonic(), now + timedelta(hours=1), now - timedelta(minutes=2))
        assert live.get("h") is None  # due to be touched: only the database read does that

    def test_a_session_past_half_its_time_in_memory_is_read_again_once(self) -> None:
        """Past half its time in memory, one caller (and only one at a time) is told to read the
        session again in the background; pages meanwhile keep finding it in memory."""
        from datetime import UTC, datetime, timedelta

        from gbadz.console.session import LiveSessions, Person, Signed

        live = LiveSessions(ttl_s=0.2)
        signed = Signed("h", Person("id", "u", "U", "org", "Org", "consumer"), "csrf")
        now = datetime.now(UTC)
        live.put(signed, time.monotonic(), now + timedelta(hours=1), now)
        assert not live.due("h")
        time.sleep(0.11)
        assert signed == live.get("h")
        assert [True, False] == [live.due("h"), live.due("h")]
        live.reread("h")
        assert live.due("h")  # that read found nothing to keep: the next caller tries again
        time.sleep(0.1)
        assert live.get("h") is None  # never past its time in memory
