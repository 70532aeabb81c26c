"""The console in a person's language beyond its labels (issue #19): the API's errors, ingestion
summaries, durations, and the PI/SPI words of the law a dataset falls under."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.console.localize import human_duration, ingest_summary
from gbadz.identity.models import Organization
from tests.api import bearer, fetch_token, make_client
from tests.conftest import REPO
from tests.console.conftest import sign_in
from tests.console.world import World, add_person
from tests.datasets import YAML

SignedIn = Callable[[str], TestClient]
TEMPLATES = REPO / "platform" / "gbadz" / "console" / "templates"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _in(client: TestClient, locale: str) -> TestClient:
    client.get(f"/console/lang?to={locale}&next=/console/")
    return client


def _badges(html: str) -> list[str]:
    return re.findall(r'<span class="badge badge-(?:pi|spi|no_pi)">([^<]+)</span>', html)


class TestTranslatedErrors:
    def test_the_apis_errors_read_in_each_language_with_its_english_beside(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """A refused form shows the API's error in the person's language, the API's English kept beside it."""
        client = signed_in("consumer")
        path = f"/console/datasets/{world.dataset}"
        cases = [
            # a 422 item, by its pydantic type (a column ticked: a copy without one is the
            # console's own refusal, from minimised columns)
            (
                {"purpose": "other", "purpose_text": "short", "columns": "district"},
                "purpose_text",
                "過短。",
                "过短。",
            ),
            # a business error, by the API's error class (ColumnNotInSchema)
            (
                {
                    "purpose": "other",
                    "purpose_text": "Route planning for the bay",
                    "columns": "no_such_column",
                },
                "columns",
                "某欄不在該數據集的數據結構中。",
                "某列不在该数据集的数据结构中。",
            ),
        ]
        for data, field, hant, hans in cases:
            shown = {}
            for locale in ("zh-Hant", "zh-Hans", "en"):
                page = _in(client, locale).get(path)
                response = client.post(f"{path}/request", data=data | {"csrf": _csrf(page.text)})
                assert 422 == response.status_code, (field, locale)
                found = re.search(rf'id="{field}-error">(.*?)</p>', response.text, re.DOTALL)
                assert found is not None, (field, locale)
                shown[locale] = found.group(1)
            english = shown["en"]
            assert "api-detail" not in english, "English needs no second copy of itself"
            assert shown["zh-Hant"].startswith(hant), shown
            assert shown["zh-Hans"].startswith(hans), shown
            for locale in ("zh-Hant", "zh-Hans"):
                assert f'<span class="api-detail" lang="en">({english})</span>' in shown[locale]


class TestIngestionSummaries:
    def test_a_rejected_uploads_reason_is_translated(self, world: World, signed_in: SignedIn) -> None:
        """The provider's runs say why an upload was rejected in their language (columns named as they are)."""
        provider = signed_in("provider")
        english = _in(provider, "en").get("/console/provider").text
        assert "missing columns: address" in english
        for locale, words in (
            ("zh-Hans", ["项检查中有", "缺少的列: address", "多出的列: addr", "行数据通过全部"]),
            ("zh-Hant", ["項檢查中有", "缺少的欄: address", "多出的欄: addr", "行數據通過全部"]),
        ):
            page = _in(provider, locale).get("/console/provider").text
            for word in words:
                assert word in page, (locale, word)

    def test_every_shape_of_summary(self) -> None:
        """Each summary the pipeline writes has its translation; an unknown one stays as written."""
        failed = "2 of 9 checks failed: fee: must be between 0 and 5000 (3 rows); patient_id: must be unique"
        assert ingest_summary(failed, "zh-Hant").startswith(
            "9 項檢查中有 2 項未通過：fee: 須介乎 0 與 5000 之間（3 行）；patient_id: 不得重複"
        )
        assert "第 4 版" in ingest_summary("identical to version 4; nothing new published", "zh-Hans")
        assert "something new" == ingest_summary("something new", "zh-Hans")
        assert failed == ingest_summary(failed, "en")


class TestDurations:
    def test_the_longest_grant_reads_as_people_write_it(self, world: World, signed_in: SignedIn) -> None:
        """The licence's P90D reads as 90 days, 90 天 and 90 日; never as ISO 8601."""
        client = signed_in("consumer")
        for locale, text in (("en", "90 days"), ("zh-Hans", "90 天"), ("zh-Hant", "90 日")):
            page = _in(client, locale).get(f"/console/datasets/{world.dataset}").text
            assert text in page, locale
            assert "P90D" not in page, locale

    def test_durations(self) -> None:
        """Years, months, weeks and days, singular and plural; anything else is shown as given."""
        assert "1 year 6 months" == human_duration("P1Y6M", "en")
        assert "1 day" == human_duration("P1D", "en")
        assert "2 星期" == human_duration("P2W", "zh-Hant")
        assert "6 个月" == human_duration("P6M", "zh-Hans")
        assert "PT5H" == human_duration("PT5H", "en")
        assert "—" == human_duration(None, "en")
        assert "180 日" == human_duration(180, "zh-Hant")


class TestPersonalDataTerms:
    def test_hong_kong_and_macao_law_say_personal_data(
        self, app: FastAPI, world: World, signed_in: SignedIn, browser_client: Callable[[], TestClient]
    ) -> None:
        """A Mainland dataset's badges say 個人信息 (PIPL); a Hong Kong one's say 個人資料 (PDPO)."""
        hk = make_client(app, "provider", "HK")
        with app.state.sessionmaker() as session:
            org = session.get(Organization, hk.org_id)
            assert org is not None
            provider_name = org.name
        doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
        doc["id"] = f"hk-deliveries-{secrets.token_hex(3)}"
        doc["gbadz"]["provider"]["organization"] = provider_name
        assert "HK" == doc["gbadz"]["origin"]
        http = TestClient(app)
        headers = bearer(fetch_token(http, hk)) | YAML
        registered = http.post("/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=headers)
        assert 201 == registered.status_code, registered.text
        person = add_person(app, "provider", hk.org_id, f"hk-provider-{secrets.token_hex(3)}")
        hk_provider = sign_in(browser_client(), person)
        sz_consumer = signed_in("consumer")
        for locale, mainland, hong_kong in (
            ("zh-Hant", "個人信息", "個人資料"),
            ("zh-Hans", "个人信息", "个人资料"),
            ("en", "personal information", "personal data"),
        ):
            sz = _badges(_in(sz_consumer, locale).get(f"/console/datasets/{world.dataset}").text)
            hk_badges = _badges(_in(hk_provider, locale).get(f"/console/datasets/{doc['id']}").text)
            assert sz, locale
            assert hk_badges, locale
            assert all(mainland in b for b in sz), (locale, sz)
            assert all(hong_kong in b for b in hk_badges), (locale, hk_badges)
            assert not any(mainland in b for b in hk_badges), (locale, hk_badges)


@pytest.mark.e2e
class TestTables:
    PAGES = (
        ("consumer", "/console/requests"),
        ("provider", "/console/provider"),
        ("provider", "/console/requests"),
        ("compliance_officer", "/console/compliance"),
        ("compliance_officer", "/console/mechanisms"),
        ("compliance_officer", "/console/obligations"),
        ("compliance_officer", "/console/compliance/transfers"),
    )

    def test_no_cell_wraps_one_character_a_line_on_a_phone(self, world: World, signed_in: SignedIn) -> None:
        """On a 360-pixel screen in 繁體中文, every table cell keeps at least three characters' width
        and every table scrolls inside its own box instead of widening the page."""
        from playwright.sync_api import sync_playwright

        from tests.console.browsing import CHROMIUM, FLAGS

        css = (TEMPLATES.parent / "static" / "console.css").read_text()
        pages = [*self.PAGES, ("consumer", f"/console/datasets/{world.dataset}")]
        narrow: list[tuple[str, str, float]] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 360, "height": 740})
                for role, path in pages:
                    response = _in(signed_in(role), "zh-Hant").get(path)
                    assert 200 == response.status_code, path
                    html = response.text.replace(
                        '<link rel="stylesheet" href="/console/static/console.css">', f"<style>{css}</style>"
                    )
                    page.set_content(html)
                    assert page.locator("table").count() > 0, path
                    measured = page.evaluate(
                        """() => [...document.querySelectorAll('th, td')]
                          .filter(c => c.innerText.trim().length > 1)
                          .map(c => [c.innerText.trim().slice(0, 20),
                                     c.getBoundingClientRect().width / parseFloat(getComputedStyle(c).fontSize)])"""
                    )
                    narrow += [(path, text, round(em, 1)) for text, em in measured if em < 3]
                    page_width = page.evaluate("() => document.documentElement.scrollWidth")
                    wide = page.evaluate(
                        """() => [...document.querySelectorAll('body *')]
                          .filter(e => e.getBoundingClientRect().right > 362 && !e.closest('.scroll'))
                          .map(e => e.tagName + '.' + e.className + ' ' + (e.innerText || '').slice(0, 30))
                          .slice(0, 8)"""
                    )
                    assert page_width <= 360, (path, page_width, wide)
            finally:
                browser.close()
        assert [] == narrow
