"""The administrator's journey in headless Chromium (issue #19): an organisation, a client whose
secret is shown once and works at the token endpoint, a person who signs in and is then
disabled, and the organisation disabled; every page checked by axe-core, screenshots in
test-artifacts/console/<lane>/admin-*.png, the pages read with JavaScript off, and a pass in
Traditional Chinese."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect

from gbadz import db
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, OAuthSettings, Settings
from gbadz.identity import service
from tests.api import free_port
from tests.conftest import REPO
from tests.console.browsing import check, serving, sign_in, sign_out
from tests.console.world import PASSWORD, Person, add_person

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass
class Site:
    base: str
    app: FastAPI
    shots: Path
    admin: Person


@pytest.fixture
def site(settings: Settings, database_url: str, fresh_database_url: str) -> Iterator[Site]:
    """The app on a loopback port over a database of its own, with the zone's operator and its
    administrator only (no datasets: nothing here needs them)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    own = settings.model_copy(
        update={"oauth": OAuthSettings(issuer=base), "db": DatabaseSettings(url=fresh_database_url)}
    )
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(own)
    with app.state.sessionmaker.begin() as session:
        operator = service.create_organization(
            session, actor="test", name="Special Data Zone Operator", jurisdiction="CN-SZ", operator=True
        ).id
    admin = add_person(app, "admin", operator, "zone-admin")
    lane = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = REPO / "test-artifacts" / "console" / lane
    shots.mkdir(parents=True, exist_ok=True)
    with serving(app, port):
        yield Site(base, app, shots, admin)


def _token(site: Site, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{site.base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )


def _create_client(page: Page, org: str, name: str) -> tuple[str, str]:
    page.get_by_role("link", name="API clients").click()
    form = page.locator("form[method=post][action='/console/admin/clients']")
    form.get_by_label("Organisation").select_option(label=org)
    form.get_by_label("Role").select_option("consumer")
    form.get_by_label("What it is for (optional)").fill(name)
    form.get_by_role("button", name="Create the client").click()
    expect(page).to_have_url(re.compile(r"/console/admin/clients/gbz_[0-9a-f]+/created$"))
    secret = page.get_by_label("Client secret").input_value()
    client_id = page.locator("#client-id").inner_text()
    return client_id, secret


def test_an_admin_creates_a_client_and_sees_its_secret_once(browser: Browser, site: Site) -> None:
    """An admin registers an organisation, creates a client (its secret shown once, working at the
    token endpoint), adds a person who signs in, disables them and then the organisation."""
    tag = secrets.token_hex(2)
    org = f"Lantau Freight Data Ltd {tag}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, site, site.admin)
    expect(page).to_have_url(f"{site.base}/console/admin/organizations")
    check(page, site, "admin-01-organisations")

    # An organisation: a mistake first (no jurisdiction), shown beside its field.
    form = page.locator("form[action='/console/admin/organizations']")
    form.get_by_label("Legal name").fill(org)
    form.get_by_role("button", name="Register").click()
    expect(page.locator("#jurisdiction-error")).to_be_visible()
    expect(page.get_by_label("Jurisdiction")).to_have_attribute("aria-invalid", "true")
    check(page, site, "admin-02-organisation-error")
    page.get_by_label("Jurisdiction").select_option("HK")
    page.get_by_label("Registered in a GBA city, Hong Kong or Macao").check()
    page.locator("form[action='/console/admin/organizations']").get_by_role("button", name="Register").click()
    row = page.locator("tr.highlight")
    expect(row).to_contain_text(org)
    org_id = row.locator("code").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", org_id), org_id  # the whole id, not cut

    # A client: the secret is shown once and works; a reload shows it no more.
    client_id, secret = _create_client(page, org, "freight sync")
    expect(page.get_by_role("alert")).to_contain_text("shown this once")
    expect(page.get_by_label("A token for it (client credentials)")).to_contain_text(
        f"-u {client_id}:{secret}"
    )
    check(page, site, "admin-03-client-secret-once")
    token = _token(site, client_id, secret)
    assert 200 == token.status_code, token.text
    access = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert 200 == httpx.get(f"{site.base}/api/v1/me", headers=access).status_code
    page.reload()
    expect(page.locator("#secret-gone")).to_be_visible()
    expect(page.get_by_label("Client secret")).to_have_count(0)
    assert secret not in page.content()
    check(page, site, "admin-04-client-secret-gone")
    page.get_by_role("link", name="Back to the clients").click()
    expect(page.locator(f"#client-{client_id}")).to_contain_text("freight sync")
    assert secret not in page.content()
    check(page, site, "admin-05-clients")

    # A person, who signs in; disabled, their next page is the sign-in.
    page.get_by_role("link", name="People").click()
    form = page.locator("form[action='/console/admin/people']")
    form.get_by_label("Organisation").select_option(label=org)
    form.get_by_label("Role").select_option("consumer")
    form.get_by_label("Username").fill(f"kit-{tag}")
    form.get_by_label("Name shown in the console").fill("Kit Lau")
    form.get_by_label("First password (at least 12 characters)").fill("too short")
    form.get_by_role("button", name="Add the person").click()
    expect(page.locator("#password-error")).to_be_visible()
    expect(page.get_by_label("First password (at least 12 characters)")).to_have_value("")
    check(page, site, "admin-06-person-error")
    page.get_by_label("First password (at least 12 characters)").fill(PASSWORD)
    page.get_by_role("button", name="Add the person").click()
    expect(page.locator("tr.highlight")).to_contain_text(f"kit-{tag}")
    check(page, site, "admin-07-people")
    person = Person(f"kit-{tag}", PASSWORD, "consumer", org_id)
    theirs = browser.new_context()
    their_page = theirs.new_page()
    sign_in(their_page, site, person)
    expect(their_page).to_have_url(f"{site.base}/console/catalog")
    page.locator("tr.highlight").get_by_role("button", name="Disable").click()
    expect(page.locator("tr", has_text=f"kit-{tag}")).to_contain_text("disabled")
    their_page.goto(f"{site.base}/console/catalog")
    expect(their_page.get_by_role("heading", name="Sign in to gbadz")).to_be_visible()
    theirs.close()

    # The organisation, after a confirmation page: its client's live token is refused at once.
    page.get_by_role("link", name="Organisations").click()
    page.locator(f"#org-{org_id}").get_by_role("link", name="Disable…").click()
    expect(page.get_by_role("heading", name="Disable an organisation")).to_be_visible()
    check(page, site, "admin-08-disable-confirm")
    page.get_by_role("button", name="Disable this organisation").click()
    expect(page.locator(f"#org-{org_id}")).to_contain_text("disabled")
    assert 401 == httpx.get(f"{site.base}/api/v1/me", headers=access).status_code
    assert 401 == _token(site, client_id, secret).status_code

    # Traditional Chinese (Hong Kong): the same pages, checked.
    page.get_by_role("link", name="繁體中文").click()
    expect(page.get_by_role("heading", name="機構", exact=True)).to_be_visible()
    check(page, site, "admin-09-organisations-zh-Hant")
    page.get_by_role("link", name="API 用戶端").click()
    expect(page.get_by_role("heading", name="API 用戶端", exact=True)).to_be_visible()
    check(page, site, "admin-10-clients-zh-Hant")
    page.get_by_role("link", name="English").click()
    sign_out(page)
    context.close()


def test_the_admin_pages_read_and_work_without_javascript(browser: Browser, site: Site) -> None:
    """With JavaScript off every admin page reads, and a client is created with its secret shown once."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, site, site.admin)
    for path, heading in (
        ("/console/admin/organizations", "Organisations"),
        ("/console/admin/clients", "API clients"),
        ("/console/admin/people", "People"),
    ):
        page.goto(site.base + path)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    client_id, secret = _create_client(page, "Special Data Zone Operator", "ops without js")
    assert 200 == _token(site, client_id, secret).status_code
    page.reload()
    expect(page.locator("#secret-gone")).to_be_visible()
    page.goto(f"{site.base}/console/catalog")  # another role's page: missing
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    context.close()
