"""The startups' journey of issue #19 in headless Chromium: a request with minimised column
defaults (nothing ticked is refused beside the columns), its own page with history and what
happens next, a withdrawal behind a confirmation, and a suspended grant's reason on the grant's
page (no download offered). Every page passes axe (WCAG 2.1 AA), is saved as a screenshot,
reads with JavaScript off, and the key pages are checked in Simplified Chinese.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from gbadz.access import service
from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from tests.api import bearer, fetch_token, free_port, make_client
from tests.conftest import REPO
from tests.console.browsing import check, serving, sign_in
from tests.console.world import GRANTED, World, build
from tests.datasets import YAML, as_yaml, contract, org_name, sign_off

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass
class Site:
    base: str
    app: FastAPI
    world: World
    shots: Path
    statistics: str  # a Macao dataset, part personal, nothing published
    suspended: str  # the startup's grant on it, suspended by a reclassification


@pytest.fixture
def site(settings: Settings, tmp_path: Path, database_url: str) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(settings.model_copy(update={"oauth": OAuthSettings(issuer=base)}))
    world = build(app, settings, tmp_path)
    http = TestClient(app)
    macao = make_client(app, "provider", "MO")
    dataset = f"mo-stats-{secrets.token_hex(3)}"
    doc = contract(dataset, org_name(app, macao.org_id), origin="MO", with_pi=True)
    registered = http.post(
        "/api/v1/datasets", content=as_yaml(doc), headers=bearer(fetch_token(http, macao)) | YAML
    )
    assert 201 == registered.status_code, registered.text
    sign_off(http, app, dataset)
    asked = http.post(
        f"/api/v1/datasets/{dataset}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Visitor flows by district for shop planning",
            "columns": ["district", "trips"],
        },
        headers=bearer(fetch_token(http, world.clients["consumer"])),
    )
    assert "approved" == asked.json()["state"], asked.text
    with app.state.sessionmaker.begin() as session:
        assert 1 == service.suspend_for_reclassification(session, dataset, "test")
    lane = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = REPO / "test-artifacts" / "console" / lane / "startup"
    shots.mkdir(parents=True, exist_ok=True)
    with serving(app, port):
        yield Site(base, app, world, shots, dataset, str(asked.json()["grant_id"]))


def test_a_startup_asks_minimally_withdraws_and_reads_a_suspended_grant(browser: Browser, site: Site) -> None:
    """Minimised defaults, the request's page (history, next steps), a withdrawal, a suspended grant's reason."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    world = site.world
    sign_in(page, site, world.people["consumer"])

    # -- minimisation: the non-personal columns start ticked, the personal ones opt-in with why
    page.goto(f"{site.base}/console/datasets/{site.statistics}")
    for name, ticked in (("record_id", True), ("district", True), ("trips", True), ("phone", False)):
        box = page.locator(f"input[name=columns][value={name}]")
        expect(box).to_be_checked() if ticked else expect(box).not_to_be_checked()
    expect(page.locator("p.column-why").first).to_contain_text("Protection")
    check(page, site, "s01-minimised-defaults")

    # -- the Shenzhen deliveries (every column personal): nothing ticked is refused beside the columns
    page.goto(f"{site.base}/console/datasets/{world.dataset}")
    page.get_by_label("Purpose", exact=True).select_option("trade_transport_academic_mfg_marketing")
    page.get_by_label("Describe the purpose").fill("Cold-chain route planning for a Hong Kong grocer")
    page.get_by_role("button", name="Ask for access").click()
    expect(page.locator("#columns-error")).to_be_visible()
    check(page, site, "s02-no-columns")
    for column in GRANTED:
        page.locator(f"input[name=columns][value={column}]").check()
    page.get_by_role("button", name="Ask for access").click()
    expect(page).to_have_url(re.compile(r"/console/requests\?created="))
    created = page.url.split("created=")[1].split("#")[0]

    # -- the request's own page: decision, history, what happens next (the GBA standard contract)
    page.locator(f"#request-{created}").get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Request for {world.dataset}")
    expect(page.locator("#history-h + div table")).to_contain_text("the platform (automatic)")
    expect(page.locator("ul.next")).to_contain_text("within 10 working days")
    check(page, site, "s03-request-page")

    # -- withdraw, after confirming
    page.get_by_role("link", name="Withdraw this request").click()
    expect(page.get_by_role("button", name="Yes, withdraw the request")).to_be_visible()
    check(page, site, "s04-confirm-withdrawal")
    page.get_by_label("Why (optional; no personal details)").fill("We found the figures elsewhere")
    page.get_by_role("button", name="Yes, withdraw the request").click()
    expect(page.get_by_role("status")).to_contain_text("You withdrew this request.")
    expect(page.locator("ul.next")).to_contain_text("nothing was granted")
    expect(page.get_by_role("link", name="Withdraw this request")).to_have_count(0)
    check(page, site, "s05-withdrawn")

    # -- the suspended grant: its reason, and no download
    page.get_by_role("link", name="My requests and grants").first.click()
    page.locator(f"#grant-{site.suspended}").get_by_role("link", name=site.statistics).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Grant for {site.statistics}")
    expect(page.get_by_role("status")).to_contain_text("contract was reclassified")
    expect(page.get_by_role("button", name="Get download links")).to_have_count(0)
    check(page, site, "s06-suspended-grant")

    # -- the same pages in Simplified Chinese
    page.get_by_role("link", name="简体中文").click()
    expect(page.get_by_role("status")).to_contain_text("暂停原因")
    check(page, site, "s07-suspended-grant-zh-Hans")
    page.goto(f"{site.base}/console/requests/{created}")
    expect(page.get_by_role("heading", name="下一步")).to_be_visible()
    check(page, site, "s08-request-page-zh-Hans")
    page.get_by_role("link", name="English").click()
    context.close()

    # -- the pages read with JavaScript off
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, world.people["consumer"])
    for path, text in (
        (f"/console/requests/{created}", "We found the figures elsewhere"),
        (f"/console/grants/{site.suspended}", "contract was reclassified"),
        (f"/console/datasets/{site.statistics}", "Columns without personal information are ticked"),
    ):
        page.goto(site.base + path)
        expect(page.locator("main")).to_contain_text(text)
    context.close()
