"""The compliance officers' journey of issue #19 in headless Chromium: record a filing (a missing
date refused beside its field), amend it (version 2), determine a request with it, and revoke
the grant with a reason from the page of every grant. Every page passes axe (WCAG 2.1 AA), is
saved as a screenshot, reads with JavaScript off, and the key pages are checked in Traditional
Chinese.

Four eyes: whoever records an item cannot determine with it, so one officer records and amends
the filing and another determines and revokes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from gbadz.app import create_app
from gbadz.config import OAuthSettings, Settings
from tests.api import bearer, fetch_token, free_port
from tests.conftest import REPO
from tests.console.browsing import check, serving, sign_in, sign_out
from tests.console.world import FILING_PDF, Person, World, add_person, build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass
class Site:
    base: str
    app: FastAPI
    world: World
    shots: Path
    recorder: Person  # the officer who records and amends (the world's officer determines)


@pytest.fixture
def site(settings: Settings, tmp_path: Path, database_url: str) -> Iterator[Site]:
    """The app on a loopback port; the world's request already past the provider's review."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(settings.model_copy(update={"oauth": OAuthSettings(issuer=base)}))
    world = build(app, settings, tmp_path)
    http = TestClient(app)
    provider = bearer(fetch_token(http, world.clients["provider"]))
    step = http.post(
        f"/api/v1/access-requests/{world.pending_request}/approve",
        json={"reason": "the port agrees"},
        headers=provider,
    )
    assert "under_compliance_review" == step.json()["state"], step.text
    recorder = add_person(app, "compliance_officer", world.officer_org, f"recorder-{world.dataset[-6:]}")
    lane = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = REPO / "test-artifacts" / "console" / lane / "officer"
    shots.mkdir(parents=True, exist_ok=True)
    with serving(app, port):
        yield Site(base, app, world, shots, recorder)


def test_an_officer_records_amends_determines_and_revokes(browser: Browser, site: Site) -> None:
    """Record (missing date refused by field), amend to version 2, determine with it, revoke with a reason."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    world = site.world
    today = datetime.now(UTC).date()
    reference = f"GBA-SC-AMEND-{world.dataset[-6:]}"

    # -- the recording officer: a filing with its filing date missing, then recorded
    sign_in(page, site, site.recorder)
    page.get_by_role("link", name="Evidence registry").click()
    page.get_by_label("Exporter", exact=True).select_option(world.provider_org)
    page.get_by_label("Recipient", exact=True).select_option(world.startup_org)
    page.get_by_label("Mechanism", exact=True).select_option("GBA_SC")
    page.get_by_label("Reference", exact=True).fill(reference)
    page.get_by_label("Effective", exact=True).fill((today - timedelta(days=6)).isoformat())
    page.get_by_role("button", name="Record", exact=True).click()
    expect(page.locator("#filing_date-error")).to_be_visible()
    expect(page.get_by_label("Filed", exact=True)).to_have_attribute("aria-invalid", "true")
    check(page, site, "o01-record-missing-date")
    page.get_by_label("Filed", exact=True).fill((today - timedelta(days=5)).isoformat())
    page.get_by_role("button", name="Record", exact=True).click()
    row = page.locator("tr", has_text=reference)
    expect(row).to_have_class("highlight")
    expect(row).to_contain_text("version 1")
    check(page, site, "o02-recorded")

    # -- the filing date was wrong: amend it (the form is prefilled; a cleared date is refused)
    row.get_by_role("link", name=f"Amend {reference}").click()
    expect(page.get_by_role("heading", name="Amend a mechanism")).to_be_visible()
    expect(page.get_by_label("Reference", exact=True)).to_have_value(reference)
    check(page, site, "o03-amend-form")
    page.get_by_label("Filed", exact=True).fill("")
    page.get_by_role("button", name="Record the amendment").click()
    expect(page.locator("#filing_date-error")).to_be_visible()
    expect(page.get_by_label("Filed", exact=True)).to_have_attribute("aria-invalid", "true")
    check(page, site, "o04-amend-error")
    page.get_by_label("Filed", exact=True).fill((today - timedelta(days=2)).isoformat())
    page.get_by_role("button", name="Record the amendment").click()
    current = page.locator("tr.highlight", has_text=reference)
    expect(current).to_contain_text("version 2")
    expect(page.locator("tr", has_text=reference).filter(has_text="superseded by")).to_have_count(1)
    pdf = site.shots / "filing.pdf"
    pdf.write_bytes(FILING_PDF)
    current.get_by_label("Upload the filed document").set_input_files(str(pdf))
    current.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("tr", has_text=reference).filter(has_text="version 2")).to_contain_text("SHA-256")
    check(page, site, "o05-amended-version-2")
    sign_out(page)

    # -- another officer determines the waiting request with version 2
    sign_in(page, site, world.people["compliance_officer"])
    page.get_by_role("link", name="Review queue").click()
    card = page.locator(f"#request-{world.pending_request}")
    picker = card.get_by_label("Mechanism evidence the decision relies on")
    value = picker.locator("option", has_text=reference).get_attribute("value")
    assert value is not None
    picker.select_option(value)
    card.get_by_label("PIPIA reference").fill("PIPIA-SZ-2026-042")
    card.get_by_label("PIPIA completed on").fill((today - timedelta(days=7)).isoformat())
    card.get_by_label("Notice and separate-consent record").fill("Notice v2 and separate consents, 2026-11")
    card.get_by_label("Your note: why the transfer is lawful").fill(
        "GBA contract filed (amended); PIPIA read."
    )
    check(page, site, "o06-determination")
    card.get_by_role("button", name="Approve with this determination").click()
    expect(page.locator(f"article#request-{world.pending_request}")).to_have_count(0)  # decided

    # -- every grant, filtered; a revocation without a reason is refused beside it, then done
    page.get_by_role("link", name="Grants", exact=True).click()
    page.get_by_label("Dataset", exact=True).fill(world.dataset)
    page.get_by_label("Status", exact=True).select_option("active")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=active"))
    expect(page.locator("tr[id^=grant-]")).to_have_count(1)
    row_id = page.locator("tr[id^=grant-]").get_attribute("id")
    grant = page.locator(f"#{row_id}")
    check(page, site, "o07-grants-filtered")
    grant.get_by_role("button", name="Revoke").click()
    expect(grant.locator("p.error")).to_be_visible()
    expect(grant.get_by_label("Reason for revoking")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("tr[id^=grant-]")).to_have_count(1)  # still filtered
    check(page, site, "o08-revoke-needs-a-reason")
    grant.get_by_label("Reason for revoking").fill("The recipient breached clause 7")
    grant.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("The grant was revoked.")
    expect(page).to_have_url(re.compile(rf"dataset_id={world.dataset}"))
    page.get_by_label("Status", exact=True).select_option("revoked")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f"#{row_id}")).to_contain_text("The recipient breached clause 7")
    check(page, site, "o09-grant-revoked")
    page.goto(f"{site.base}/console/compliance/grants?expires_before=soon")
    expect(page.locator("#expires_before-error")).to_be_visible()
    check(page, site, "o10-bad-filter")

    # -- the key pages in Traditional Chinese
    page.goto(f"{site.base}/console/compliance/grants?status=revoked&dataset_id={world.dataset}")
    page.get_by_role("link", name="繁體中文").click()
    expect(page.get_by_role("heading", level=1, name="授權")).to_be_visible()
    check(page, site, "o11-grants-zh-Hant")
    page.goto(f"{site.base}/console/mechanisms")
    expect(page.locator("tr", has_text=reference).filter(has_text="第 2 版")).to_have_count(1)
    check(page, site, "o12-registry-zh-Hant")
    page.get_by_role("link", name="English").click()
    context.close()

    # -- the pages read with JavaScript off
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, world.people["compliance_officer"])
    for path, heading in (
        (f"/console/compliance/grants?status=revoked&dataset_id={world.dataset}", "Grants"),
        ("/console/mechanisms", "Evidence registry"),
        (f"/console/grants/{grant_id(page, site)}", "Grant for"),
    ):
        page.goto(site.base + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    expect(page.get_by_text("The recipient breached clause 7")).to_be_visible()
    context.close()


def grant_id(page: object, site: Site) -> str:
    """The journey's grant (the world's request, approved)."""
    http = TestClient(site.app)
    token = fetch_token(http, site.world.clients["consumer"])
    found = http.get(f"/api/v1/access-requests/{site.world.pending_request}", headers=bearer(token)).json()
    return str(found["grant_id"])
