"""The provider's publishing journey in headless Chromium (issue #19): register a dataset from its
contract (a lint error shown beside the field first), the officer's listing review, a good upload
published by the embedded ingest worker and a bad one rejected with its failed checks, then the
consequences of deprecating before confirming. Every page is checked with axe-core (WCAG 2.1
A/AA) and saved as a screenshot; the pages are read again with JavaScript off and in Chinese."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from gbadz import db
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, OAuthSettings, Settings
from gbadz.ingest import samples
from tests.api import bearer, fetch_token, free_port, make_client
from tests.conftest import REPO
from tests.console.browsing import check, serving, sign_in, sign_out
from tests.console.world import Person, add_person
from tests.datasets import org_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
#: The embedded worker ingests in the app's thread; under load the first file takes a while.
INGEST_TIMEOUT_MS = 120_000


@dataclass
class Site:
    base: str
    app: FastAPI
    shots: Path
    provider: Person
    officer: Person
    provider_name: str
    files: Path


@pytest.fixture
def site(settings: Settings, tmp_path: Path, database_url: str, fresh_database_url: str) -> Iterator[Site]:
    """The app on a loopback port over a database of its own, its ingest worker on (inline: the
    DAG's steps in the app's thread), a Shenzhen provider and a compliance officer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ingest = settings.ingest.model_copy(
        update={"worker": True, "worker_mode": "inline", "worker_interval_s": 0.5}
    )
    own = settings.model_copy(
        update={
            "oauth": OAuthSettings(issuer=base),
            "db": DatabaseSettings(url=fresh_database_url),
            "ingest": ingest,
        }
    )
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(own)
    tag = secrets.token_hex(3)
    provider_org = make_client(app, "provider", "CN-SZ").org_id
    officer_org = make_client(app, "compliance_officer", "CN-SZ").org_id
    provider = add_person(app, "provider", provider_org, f"provider-{tag}")
    officer = add_person(app, "compliance_officer", officer_org, f"officer-{tag}")
    lane = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = REPO / "test-artifacts" / "console" / lane
    shots.mkdir(parents=True, exist_ok=True)
    files = tmp_path / "files"
    files.mkdir()
    for name, corrupt in (("arrivals.csv", False), ("arrivals-bad.csv", True)):
        table = samples.generate("mo-tourism-visitor-arrivals", 400)
        if corrupt:
            table = samples.corrupt(table, "mo-tourism-visitor-arrivals")
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        (files / name).write_bytes(sink.getvalue())
    with serving(app, port):
        yield Site(base, app, shots, provider, officer, org_name(app, provider_org), files)


def _contract(site: Site, dataset_id: str, origin: str) -> str:
    doc = yaml.safe_load((REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text())
    doc["id"] = dataset_id
    doc["name"] = f"Visitor arrivals at the bay {dataset_id[-6:]}"
    doc["gbadz"]["provider"]["organization"] = site.provider_name
    doc["gbadz"]["origin"] = origin
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _granted(site: Site, dataset_id: str) -> str:
    """The startup's request, decided at once (no personal information), as its API client sends it."""
    startup = make_client(site.app, "consumer", "HK")
    http = TestClient(site.app)
    asked = http.post(
        f"/api/v1/datasets/{dataset_id}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Planning tours across the bay",
            "columns": ["arrival_date", "source_market", "arrivals"],
        },
        headers=bearer(fetch_token(http, startup)),
    )
    assert 201 == asked.status_code, asked.text
    assert "approved" == asked.json()["state"], asked.json()
    return org_name(site.app, startup.org_id)


def _upload(page: Page, site: Site, name: str) -> None:
    page.get_by_label("Data file (CSV or Parquet, at most").set_input_files(str(site.files / name))
    page.get_by_role("button", name="Upload", exact=True).click()


def test_a_provider_publishes_a_dataset_from_its_contract(browser: Browser, site: Site) -> None:
    """A provider registers a dataset (fixing a lint error shown beside the field), an officer signs
    it off, a good upload is published and a bad one rejected with its checks, then deprecated."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dataset_id = f"bay-arrivals-{secrets.token_hex(3)}"

    # -- register: the template, then a contract whose origin is not the provider's registration
    sign_in(page, site, site.provider)
    page.get_by_role("link", name="Register a dataset").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Register a dataset")
    expect(page.get_by_label("Contract (YAML)")).to_contain_text("apiVersion: v3.0.2")
    check(page, site, "p01-register")
    page.get_by_label("Contract (YAML)").fill(_contract(site, dataset_id, "MO"))
    page.get_by_role("button", name="Register the dataset").click()
    expect(page.locator("#contract_text-error")).to_contain_text("gbadz.origin")
    expect(page.get_by_label("Contract (YAML)")).to_have_attribute("aria-invalid", "true")
    check(page, site, "p02-register-lint-error")
    page.get_by_label("Contract (YAML)").fill(_contract(site, dataset_id, "CN-SZ"))
    page.get_by_role("button", name="Register the dataset").click()
    expect(page.get_by_role("status")).to_contain_text("Registered.")
    expect(page.get_by_text("waiting for a compliance officer")).to_be_visible()
    check(page, site, "p03-registered")
    sign_out(page)

    # -- the officer's listing review
    sign_in(page, site, site.officer)
    page.get_by_role("link", name="Listing reviews").click()
    card = page.locator("section.card").filter(has_text=f"Visitor arrivals at the bay {dataset_id[-6:]}")
    expect(card.get_by_role("rowheader", name="arrivals", exact=True)).to_be_visible()
    check(page, site, "p04-listing-review")
    card.get_by_label("Sign off: list the dataset").check()
    card.get_by_label("Your note").fill("Aggregates only; every column classified as the data shows.")
    card.get_by_role("button", name="Record the review").click()
    expect(page.get_by_role("status")).to_contain_text("Review recorded.")
    sign_out(page)
    # A Hong Kong startup is granted three columns of the (non-personal) arrivals at once.
    startup_name = _granted(site, dataset_id)

    # -- a good upload: queued, then published by the embedded worker (the page refreshes itself)
    sign_in(page, site, site.provider)
    page.get_by_role("link", name=f"Visitor arrivals at the bay {dataset_id[-6:]}").click()
    expect(page.get_by_text("signed off: listed")).to_be_visible()
    grants = page.locator("table.grants")
    expect(grants.get_by_role("rowheader", name=f"{startup_name} (Hong Kong SAR)")).to_be_visible()
    expect(grants).to_contain_text("arrival_date, source_market, arrivals")
    check(page, site, "p05-dataset")
    _upload(page, site, "arrivals.csv")
    size = (site.files / "arrivals.csv").stat().st_size
    expect(page.locator("dl.facts")).to_contain_text(f"{size:,} bytes")
    check(page, site, "p06-run-queued")
    expect(page.get_by_role("status")).to_contain_text("Published as version 1.", timeout=INGEST_TIMEOUT_MS)
    expect(page.locator("table.tasks")).to_contain_text("publish")
    check(page, site, "p07-run-published")

    # -- a bad upload: rejected with the failed checks (column, rule, rows; never a value)
    page.get_by_role("link", name="Back to the dataset").click()
    _upload(page, site, "arrivals-bad.csv")
    expect(page.get_by_role("status")).to_contain_text(
        "Rejected: nothing was published.", timeout=INGEST_TIMEOUT_MS
    )
    checks = page.locator("table.checks")
    expect(checks).to_contain_text("arrivals")
    check(page, site, "p08-run-rejected")
    rejected_run = page.url

    # -- the same pages in Traditional Chinese
    page.get_by_role("link", name="繁體中文").click()
    expect(page.get_by_role("status")).to_contain_text("已拒絕：未發佈任何內容。")
    expect(page.get_by_role("heading", name="未通過的檢查")).to_be_visible()
    check(page, site, "p09-run-rejected-zh-Hant")
    page.get_by_role("link", name="返回數據集").click()
    expect(page.get_by_role("heading", name="上傳新版本")).to_be_visible()
    check(page, site, "p10-dataset-zh-Hant")
    page.get_by_role("link", name="English").click()

    # -- deprecate: the consequences first, then confirm
    page.get_by_role("link", name="Deprecate", exact=True).click()
    expect(page.get_by_role("heading", name="What this does")).to_be_visible()
    expect(page.locator("section.panel")).to_contain_text("1 live grants keep working")
    expect(page.locator("section.panel")).to_contain_text(startup_name)
    check(page, site, "p11-deprecate-consequences")
    page.get_by_role("button", name="Deprecate").click()
    expect(page.locator("#reason-error")).to_be_visible()  # a reason is needed
    page.get_by_label("Reason (shown to the holders of grants)").fill("Superseded by the daily feed")
    page.get_by_role("button", name="Deprecate").click()
    expect(page.get_by_role("status")).to_contain_text("The dataset is deprecated.")
    page.get_by_role("link", name="Retire", exact=True).click()
    expect(page.locator("section.panel")).to_contain_text("encryption keys are destroyed")
    check(page, site, "p12-retire-consequences")
    context.close()

    # -- JavaScript off: the pages read, and the upload form works as a plain form
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, site.provider)
    for path, heading in (
        ("/console/provider", "My datasets"),
        ("/console/provider/datasets/new", "Register a dataset"),
        (f"/console/provider/datasets/{dataset_id}", "Visitor arrivals at the bay"),
        (f"/console/provider/datasets/{dataset_id}/contract", "Change the contract"),
        (f"/console/provider/datasets/{dataset_id}/retire", "Retire the dataset"),
    ):
        page.goto(site.base + path)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    page.goto(rejected_run)
    expect(page.locator("table.checks")).to_contain_text("arrivals")
    page.goto(f"{site.base}/console/provider/datasets/{dataset_id}")
    _upload(page, site, "arrivals.csv")  # the same bytes again: identical to version 1
    expect(page.get_by_role("status")).to_contain_text("Published as version 1.", timeout=INGEST_TIMEOUT_MS)
    context.close()
