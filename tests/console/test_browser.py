"""Each role's journey through the console in headless Chromium, against the real app and services.

Debian's chromium (installed by `make setup`) driven by Playwright; every page is checked with
axe-core (WCAG 2.1 A/AA: labels, contrast, names, structure) and saved as a screenshot in
test-artifacts/console/<database>/.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Locator, expect

from gbadz import db
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, OAuthSettings, Settings
from tests.api import free_port
from tests.conftest import REPO
from tests.console.browsing import check, serving, sign_in, sign_out
from tests.console.world import FILING_PDF, GRANTED, Person, World, add_analysis_grant, add_person, build
from tests.console.world import Analysis as AnalysisGrant

#: The demo's release (issue #18): the average fee per department and month, for two departments.
FEE_BY_MONTH = (
    "SELECT department, month(visit_date) AS month, COUNT(*) AS visits, AVG(fee_cny) AS mean_fee\n"
    "FROM outpatient_visits\nWHERE department IN ('cardiology', 'paediatrics')\n"
    "GROUP BY department, month(visit_date)"
)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass
class Site:
    base: str
    app: FastAPI
    world: World
    shots: Path
    second_officer: Person
    analysis: AnalysisGrant


@pytest.fixture
def site(settings: Settings, tmp_path: Path, database_url: str, fresh_database_url: str) -> Iterator[Site]:
    """The app on a loopback port over a database of its own, so the transfer log, the charts
    and the verification see exactly this journey's transfers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    own = settings.model_copy(
        update={"oauth": OAuthSettings(issuer=base), "db": DatabaseSettings(url=fresh_database_url)}
    )
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(own)
    world = build(app, settings, tmp_path)
    lane = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = REPO / "test-artifacts" / "console" / lane
    shots.mkdir(parents=True, exist_ok=True)
    with serving(app, port):
        second = add_person(app, "compliance_officer", world.officer_org, f"officer2-{world.dataset[-6:]}")
        analysis = add_analysis_grant(app, settings, world, tmp_path, rows=12_000)
        yield Site(base, app, world, shots, second, analysis)


def determine(card: Locator, reference: str) -> None:
    """Fill the officer's determination: the contract on file, the PIPIA, notice and consent, a note."""
    picker = card.get_by_label("Mechanism evidence the decision relies on")
    value = picker.locator("option", has_text=reference).get_attribute("value")
    assert value is not None
    picker.select_option(value)
    card.get_by_label("PIPIA reference").fill("PIPIA-SZ-2026-042")
    card.get_by_label("PIPIA completed on").fill((datetime.now(UTC).date() - timedelta(days=7)).isoformat())
    card.get_by_label("Notice and separate-consent record").fill("Notice v2 and separate consents, 2026-11")
    card.get_by_label("Your note: why the transfer is lawful").fill(
        "GBA standard contract filed in time; PIPIA read."
    )
    card.get_by_role("button", name="Approve with this determination").click()


def test_each_roles_journey(browser: Browser, site: Site) -> None:
    """Each role completes its journey in a real browser, and every page passes WCAG 2.1 A/AA checks."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    world = site.world

    # -- the startup: sign in, search, read the dataset, assess, ask (with a mistake first)
    page.goto(f"{site.base}/console/")
    check(page, site, "01-sign-in")
    sign_in(page, site, world.people["consumer"])
    expect(page).to_have_url(f"{site.base}/console/catalog")
    page.get_by_label("Search datasets").fill("deliveries")
    page.get_by_role("button", name="Search").click()
    expect(
        page.get_by_role("link", name=f"Shenzhen last-mile deliveries {world.dataset[-6:]}")
    ).to_be_visible()
    check(page, site, "02-catalog")
    page.get_by_role("link", name=f"Shenzhen last-mile deliveries {world.dataset[-6:]}").click()
    expect(page.get_by_role("heading", name="Schema")).to_be_visible()
    expect(page.locator("table.quality")).to_be_visible()
    check(page, site, "03-dataset")
    page.get_by_label("Purpose", exact=True).select_option("trade_transport_academic_mfg_marketing")
    for column in GRANTED:
        page.locator(f"input[name=columns][value={column}]").check()
    page.get_by_role("button", name="Assess the transfer").click()
    expect(page.locator(".assessment")).to_contain_text("GBA Standard Contract")
    expect(page.locator(".assessment")).to_contain_text("M12")
    check(page, site, "04-assessment")
    page.get_by_label("Describe the purpose").fill("short")
    page.get_by_role("button", name="Ask for access").click()
    expect(page.locator("#purpose_text-error")).to_be_visible()
    expect(page.get_by_label("Describe the purpose")).to_have_attribute("aria-invalid", "true")
    check(page, site, "05-request-form-error")
    page.get_by_label("Describe the purpose").fill("Cold-chain route planning for a Hong Kong grocer")
    page.get_by_role("button", name="Ask for access").click()
    expect(page).to_have_url(re.compile(r"/console/requests\?created="))
    expect(page.locator("tr.highlight")).to_contain_text("with the provider")
    check(page, site, "06-my-requests")
    page.goto(f"{site.base}/console/compliance")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    sign_out(page)

    # -- the provider: datasets and runs (a rejected upload with its reason), then the review queue
    sign_in(page, site, world.people["provider"])
    expect(page).to_have_url(f"{site.base}/console/provider")
    expect(page.locator("tr.failed")).to_contain_text("rejected")
    expect(page.locator("tr.failed")).to_contain_text("addr")
    check(page, site, "07-provider-datasets")
    page.get_by_role("link", name="Review queue").click()
    cards = page.locator("article.card")
    expect(cards).to_have_count(2)
    check(page, site, "08-provider-review-queue")
    newest = cards.filter(has_text="Cold-chain route planning for a Hong Kong grocer")
    newest.get_by_role("button", name="Reject").click()
    expect(page.locator("p.error")).to_be_visible()  # a rejection needs a reason
    newest = page.locator("article.card").filter(has_text="Cold-chain route planning for a Hong Kong grocer")
    newest.get_by_label("Reason (required to reject)").fill("Columns are necessary for route planning")
    newest.get_by_role("button", name="Approve").click()
    expect(page.locator("article.card")).to_have_count(1)
    sign_out(page)

    # -- the compliance officer records the filed GBA standard contract with its document...
    sign_in(page, site, world.people["compliance_officer"])
    expect(page).to_have_url(f"{site.base}/console/compliance")
    page.get_by_role("link", name="Evidence registry").click()
    check(page, site, "09a-evidence-registry")
    reference = f"GBA-SC-440300-B-{world.dataset[-6:]}"
    today = datetime.now(UTC).date()
    page.get_by_label("Exporter", exact=True).select_option(world.provider_org)
    page.get_by_label("Recipient", exact=True).select_option(world.startup_org)
    page.get_by_label("Mechanism", exact=True).select_option("GBA_SC")
    page.get_by_label("Reference", exact=True).fill(reference)
    page.get_by_label("Effective", exact=True).fill((today - timedelta(days=4)).isoformat())
    page.get_by_role("button", name="Record", exact=True).click()
    expect(page.locator("#filing_date-error")).to_be_visible()  # a standard contract's filing date
    expect(page.get_by_label("Filed", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Reference", exact=True)).to_have_value(reference)
    check(page, site, "09b-evidence-form-error")
    page.get_by_label("Filed", exact=True).fill((today - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Record", exact=True).click()
    row = page.locator("tr", has_text=reference)
    expect(row).to_have_class("highlight")
    pdf = site.shots.parent / "filing.pdf"
    pdf.write_bytes(FILING_PDF)
    row.get_by_label("Upload the filed document").set_input_files(str(pdf))
    row.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("tr", has_text=reference)).to_contain_text(hashlib.sha256(FILING_PDF).hexdigest())
    check(page, site, "09c-evidence-with-document")
    # ...and, having recorded it, may not determine with it (four eyes): the refusal is beside the picker.
    page.get_by_role("link", name="Review queue").click()
    card = page.locator("article.card")
    expect(card).to_have_count(1)
    expect(card.locator("fieldset legend")).to_contain_text(["General regime"])
    check(page, site, "09d-determination-form")
    determine(card, reference)
    card = page.locator("article.card")
    expect(card.locator("p.error")).to_contain_text("cannot approve with it")
    expect(card.get_by_label("Mechanism evidence the decision relies on")).to_have_attribute(
        "aria-invalid", "true"
    )
    expect(card.get_by_label("PIPIA reference")).to_have_value("PIPIA-SZ-2026-042")  # kept
    check(page, site, "09e-determination-four-eyes")
    sign_out(page)

    # -- another compliance officer determines the transfer with that contract
    sign_in(page, site, site.second_officer)
    page.get_by_role("link", name="Review queue").click()
    determine(page.locator("article.card"), reference)
    expect(page.get_by_text("Nothing waits for your review.")).to_be_visible()
    expect(page.locator("table").first).to_contain_text("reviewed as M12")
    sign_out(page)

    # -- the startup gets its links; the file downloads from the object store
    sign_in(page, site, world.people["consumer"])
    page.get_by_role("link", name="My requests and grants").click()
    page.get_by_role("button", name="Get download links").click()
    expect(page.get_by_text("recorded as entry")).to_be_visible()
    check(page, site, "09-delivery-links")
    url = page.locator("a.download").first.get_attribute("href")
    assert url is not None
    assert httpx.get(url).status_code == 200
    page.get_by_role("link", name="My requests and grants", exact=True).click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Delta Sharing profile").click()
    profile = json.loads(Path(download.value.path()).read_text())
    assert f"{site.base}/delta-sharing" == profile["endpoint"]
    assert profile["bearerToken"]
    sign_out(page)

    # -- the compliance officer: dashboard, transfer log with filters and CSV, verification
    sign_in(page, site, world.people["compliance_officer"])
    routes = page.locator("svg[aria-labelledby=routes-title]")
    expect(routes.locator("rect > title")).to_contain_text(["CN-SZ → HK: 1"])
    expect(routes).to_contain_text("Shenzhen → Hong Kong SAR (1)")
    expect(
        page.get_by_role(
            "img", name="Individuals exported year to date per exporter against the legal thresholds"
        )
    ).to_be_visible()
    check(page, site, "10-compliance-dashboard")
    page.get_by_role("link", name="Transfer log").first.click()
    page.get_by_label("Outcome").select_option("GBA_SC")
    page.get_by_label("Exporter").select_option(world.provider_org)
    page.get_by_label("Recipient").select_option(world.startup_org)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.log tbody tr")).to_have_count(1)
    expect(page.locator("table.log")).to_contain_text("GBA SC Implementation Guidelines")
    check(page, site, "11-transfer-log")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert 1 == len(rows)
    assert "GBA_SC" == rows[0]["decision_outcome"]
    page.goto(f"{site.base}/console/compliance")
    page.get_by_role("button", name="Verify the log").click()
    expect(page.locator(".verdict.ok")).to_contain_text("verified")
    check(page, site, "12-log-verified")
    # -- what is still owed, then the officer revokes the grant (its copies are deleted)
    page.get_by_role("link", name="Obligations").click()
    expect(page.locator("table")).to_contain_text("the recipient deletes every copy")
    check(page, site, "12a-obligations")
    page.get_by_role("link", name="Review queue").click()
    # The deliveries' grant (the startup's analysis grant on the hospital's visits is listed too).
    grant_row = page.locator("tr[id^=grant-]").filter(
        has=page.get_by_role("rowheader", name=world.dataset, exact=True)
    )
    grant_row.get_by_label("Reason for revoking").fill("The contract's recipient clause was breached")
    grant_row.get_by_role("button", name="Revoke").click()
    expect(grant_row).to_contain_text("The contract's recipient clause was breached")
    expect(grant_row).to_contain_text("Delivery copies deleted")
    check(page, site, "12b-grant-revoked")
    page.goto(f"{site.base}/console/compliance")
    page.get_by_role("link", name="繁體中文").click()
    expect(page.get_by_role("heading", name="合規看板")).to_be_visible()
    check(page, site, "13-compliance-dashboard-zh-Hant")
    page.get_by_role("link", name="简体中文").click()
    expect(page.get_by_role("heading", name="合规看板")).to_be_visible()
    page.goto(f"{site.base}/console/catalog")
    check(page, site, "14-catalog-zh-Hans")
    page.get_by_role("link", name="English").click()
    sign_out(page)

    # -- the startup analyses the hospital's visits (issue #18): what it may ask, an estimate that
    # spends nothing, a run (the meter drops; the table and the chart), a refusal beside the box
    sign_in(page, site, world.people["consumer"])
    page.get_by_role("link", name="My requests and grants").click()
    page.get_by_role("link", name=f"Analyse {site.analysis.dataset}").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Analysis: Shenzhen outpatient visits")
    expect(page.locator("#budget-meter")).to_have_attribute("value", "3.0")
    expect(page.get_by_text("These bounds bias results.")).to_be_visible()
    check(page, site, "15a-analysis-page")
    page.get_by_role("button", name="Estimate (spends nothing)").click()
    expect(page.locator("#estimate")).to_contain_text("Estimate: nothing was spent")
    expect(page.locator("#budget-meter")).to_have_attribute("value", "3.0")
    check(page, site, "15b-analysis-estimate")
    page.get_by_label("Query (SQL)").fill(FEE_BY_MONTH)
    page.get_by_role("button", name="Run (spends ε)").click()
    expect(page).to_have_url(re.compile(r"/analysis\?release=.+#result$"))
    expect(page.locator("table.release tbody tr")).not_to_have_count(0)
    expect(page.locator("table.release thead")).to_contain_text("mean_fee")
    expect(page.locator("#budget-meter")).to_have_attribute("value", "2.0")
    expect(page.get_by_role("img", name=re.compile("^Released values per group"))).to_have_count(2)
    expect(page.locator("table.history tbody tr")).to_have_count(1)
    check(page, site, "15c-analysis-result")
    page.get_by_label("Query (SQL)").fill("SELECT patient_id, fee_cny FROM outpatient_visits")
    page.get_by_role("button", name="Run (spends ε)").click()
    expect(page.locator("#sql-error")).to_contain_text("(rule privacy-unit)")
    expect(page.get_by_label("Query (SQL)")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#budget-meter")).to_have_attribute("value", "2.0")  # nothing spent
    check(page, site, "15d-analysis-refused")
    page.get_by_role("link", name="繁體中文").click()
    expect(page.get_by_role("heading", name="私隱預算")).to_be_visible()
    check(page, site, "15e-analysis-zh-Hant")
    page.get_by_role("link", name="English").click()
    context.close()


def test_pages_read_without_javascript_and_work_from_the_keyboard(browser: Browser, site: Site) -> None:
    """Console pages render without JavaScript, and a skip link and Tab reach every catalog control."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, site.world.people["compliance_officer"])
    for path, heading in (
        ("/console/compliance", "Compliance dashboard"),
        ("/console/compliance/transfers", "Transfer log"),
        ("/console/catalog", "Catalog"),
        (f"/console/datasets/{site.world.dataset}", "Shenzhen last-mile deliveries"),
        ("/console/requests", "Review queue"),
        ("/console/mechanisms", "Evidence registry"),
        ("/console/obligations", "Obligations"),
    ):
        page.goto(site.base + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    page.get_by_role("button", name="Sign out").click()
    context.close()

    # The startup's analysis page reads, estimates and refuses with JavaScript off: a plain form.
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, site.world.people["consumer"])
    page.goto(f"{site.base}/console/grants/{site.analysis.grant}/analysis")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Analysis")
    page.get_by_role("button", name="Estimate (spends nothing)").click()
    expect(page.locator("#estimate")).to_contain_text("Estimate: nothing was spent")
    page.get_by_label("Query (SQL)").fill("SELECT * FROM outpatient_visits")
    page.get_by_role("button", name="Run (spends ε)").click()
    expect(page.locator("#sql-error")).to_contain_text("(rule star)")
    context.close()

    context = browser.new_context()
    page = context.new_page()
    sign_in(page, site, site.world.people["consumer"])
    page.goto(f"{site.base}/console/catalog")
    page.keyboard.press("Tab")
    focused: Any = page.evaluate("document.activeElement.textContent")
    assert "Skip to content" == focused.strip()
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    # Every control on the page can be reached with Tab.
    reached = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert {"q", "category", "origin", "has_pi", "purpose", "Search"} <= reached
    context.close()
