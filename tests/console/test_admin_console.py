"""The administrator's console pages over HTTP (issue #19): organisations, clients (the secret
shown once), people; every page and form is 404 to the other roles, and every change is audited
with the acting person."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.audit import AuditEvent
from gbadz.identity import people, service
from gbadz.identity.models import OAuthClient, Organization, User
from tests.console.conftest import sign_in
from tests.console.world import PASSWORD, Person, World

SignedIn = Callable[[str], TestClient]
ADMIN_PAGES = ("/console/admin/organizations", "/console/admin/clients", "/console/admin/people")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def add_admin(app: FastAPI) -> Person:
    """An administrator: a person of an operator organisation (made as `gbadz` setup would)."""
    tag = secrets.token_hex(3)
    with app.state.sessionmaker.begin() as session:
        org = service.create_organization(
            session, actor="test", name=f"Zone operator {tag}", jurisdiction="CN-SZ", operator=True
        )
        people.create_user(
            session,
            actor="test",
            org_id=org.id,
            username=f"admin-{tag}",
            display_name=f"Admin {tag}",
            role="admin",
            password=PASSWORD,
        )
        return Person(f"admin-{tag}", PASSWORD, "admin", org.id)


@pytest.fixture
def admin(app: FastAPI, world: World, browser_client: Callable[[], TestClient]) -> TestClient:
    return sign_in(browser_client(), add_admin(app))


def _new_org(client: TestClient, name: str, **extra: str) -> str:
    page = client.get("/console/admin/organizations")
    made = client.post(
        "/console/admin/organizations",
        data={"csrf": _csrf(page.text), "name": name, "jurisdiction": "HK", **extra},
    )
    assert 303 == made.status_code, made.text
    return re.search(r"created=([0-9a-f-]{36})", made.headers["location"]).group(1)  # type: ignore[union-attr]


class TestAdminPages:
    def test_an_admin_lands_on_organisations_with_whole_ids(self, admin: TestClient, world: World) -> None:
        """An administrator's home is the organisations page; ids are shown whole, not cut."""
        home = admin.get("/console/")
        assert "/console/admin/organizations" == home.headers["location"]
        page = admin.get("/console/admin/organizations")
        assert 200 == page.status_code
        assert f'<code class="hash">{world.provider_org}</code>' in page.text
        for path in ADMIN_PAGES:
            assert 200 == admin.get(path).status_code, path

    def test_an_admin_sees_no_participant_page(self, admin: TestClient, world: World) -> None:
        """The admin session is as narrow as an admin client: no participant page opens (404)."""
        for path in ("/console/catalog", "/console/requests", "/console/obligations", "/console/compliance"):
            assert 404 == admin.get(path).status_code, path

    @pytest.mark.parametrize("role", ["consumer", "provider", "compliance_officer"])
    def test_no_other_role_reaches_an_admin_page_or_form(
        self, signed_in: SignedIn, app: FastAPI, world: World, role: str
    ) -> None:
        """A participant who would gain (a client, an account, a rival disabled) gets 404 everywhere, nothing written."""
        client = signed_in(role)
        csrf = _csrf(client.get("/console/obligations").text)
        for path in (*ADMIN_PAGES, f"/console/admin/organizations/{world.provider_org}/disable"):
            assert 404 == client.get(path).status_code, path
        me = world.people[role]
        rival = world.startup_org if role != "consumer" else world.provider_org
        with app.state.sessionmaker() as session:
            before = session.scalar(sa.select(sa.func.count()).select_from(OAuthClient))
            rival_client = session.scalar(sa.select(OAuthClient.client_id).where(OAuthClient.org_id == rival))
        posts = {
            "/console/admin/organizations": {"name": f"Mine {secrets.token_hex(2)}", "jurisdiction": "HK"},
            "/console/admin/clients": {"org_id": me.org_id, "role": "admin"},
            "/console/admin/people": {
                "org_id": me.org_id,
                "username": f"me-{secrets.token_hex(2)}",
                "display_name": "Me",
                "role": "admin",
                "password": PASSWORD,
            },
            f"/console/admin/organizations/{rival}/disable": {},
            f"/console/admin/clients/{rival_client}/revoke": {},
        }
        for path, data in posts.items():
            assert 404 == client.post(path, data={"csrf": csrf, **data}).status_code, path
        with app.state.sessionmaker() as session:
            assert before == session.scalar(sa.select(sa.func.count()).select_from(OAuthClient))
            assert session.get(Organization, rival).disabled_at is None  # type: ignore[union-attr]
            assert session.get(OAuthClient, rival_client).revoked_at is None  # type: ignore[union-attr]

    def test_forms_without_the_csrf_token_are_refused(self, admin: TestClient, app: FastAPI) -> None:
        """A forged form (no session CSRF token) is 403 and creates nothing."""
        name = f"Forged {secrets.token_hex(3)}"
        forged = admin.post("/console/admin/organizations", data={"name": name, "jurisdiction": "HK"})
        assert 403 == forged.status_code
        with app.state.sessionmaker() as session:
            assert session.scalar(sa.select(Organization.id).where(Organization.name == name)) is None


class TestClientSecretOnce:
    def test_the_secret_is_shown_once_and_works(
        self, admin: TestClient, app: FastAPI, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """The secret is on the page after creating the client, works at the token endpoint, and a
        reload, or the same cookie in another admin's session, never shows it again."""
        page = admin.get("/console/admin/clients")
        made = admin.post(
            "/console/admin/clients",
            data={
                "csrf": _csrf(page.text),
                "org_id": world.startup_org,
                "role": "consumer",
                "name": "sync job",
            },
        )
        assert 303 == made.status_code, made.text
        location = made.headers["location"]
        client_id = location.split("/")[-2]
        once = admin.cookies.get("__Host-gbadz_once")
        assert once
        shown = admin.get(location)
        secret = re.search(r'id="client_secret" name="client_secret" value="([^"]+)"', shown.text)
        assert secret is not None, shown.text
        assert "no-store" == shown.headers["cache-control"]
        token = TestClient(app).post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret.group(1))
        )
        assert 200 == token.status_code, token.text
        again = admin.get(location)
        assert 200 == again.status_code
        assert secret.group(1) not in again.text
        assert 'id="secret-gone"' in again.text
        other = sign_in(browser_client(), add_admin(app))
        other.cookies.set("__Host-gbadz_once", once, domain="console.test")
        assert secret.group(1) not in other.get(location).text
        listed = admin.get("/console/admin/clients")
        assert client_id in listed.text
        assert secret.group(1) not in listed.text

    def test_a_client_can_be_revoked_and_bad_input_is_named(
        self, admin: TestClient, app: FastAPI, world: World
    ) -> None:
        """Revoking from the console is audited with the person; a missing role is shown beside its field."""
        csrf = _csrf(admin.get("/console/admin/clients").text)
        missing = admin.post(
            "/console/admin/clients", data={"csrf": csrf, "org_id": world.startup_org, "role": ""}
        )
        assert 422 == missing.status_code
        assert 'id="role-error"' in missing.text
        made = admin.post(
            "/console/admin/clients", data={"csrf": csrf, "org_id": world.startup_org, "role": "consumer"}
        )
        client_id = made.headers["location"].split("/")[-2]
        revoked = admin.post(f"/console/admin/clients/{client_id}/revoke", data={"csrf": csrf})
        assert 303 == revoked.status_code
        with app.state.sessionmaker() as session:
            event = session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.subject_id == client_id, AuditEvent.action == "client.revoked"
                )
            ).one()
        assert event.actor.startswith("admin:user:admin-")


class TestPeopleAndOrganisations:
    def test_an_admin_adds_a_person_who_signs_in_then_disables_them(
        self, admin: TestClient, app: FastAPI, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """A bad password is named beside its field and never sent back; a person added signs in;
        disabled, their session ends at the next request."""
        csrf = _csrf(admin.get("/console/admin/people").text)
        name = f"kit-{secrets.token_hex(3)}"
        form = {
            "csrf": csrf,
            "org_id": world.startup_org,
            "username": name,
            "display_name": "Kit",
            "role": "consumer",
        }
        short = admin.post("/console/admin/people", data=form | {"password": "tiny-secret"})
        assert 400 == short.status_code
        assert 'id="password-error"' in short.text
        assert "tiny-secret" not in short.text
        admin_role = admin.post("/console/admin/people", data=form | {"password": PASSWORD, "role": "admin"})
        assert (400, True) == (admin_role.status_code, 'id="role-error"' in admin_role.text)
        made = admin.post("/console/admin/people", data=form | {"password": PASSWORD})
        assert 303 == made.status_code, made.text
        person = sign_in(browser_client(), Person(name, PASSWORD, "consumer", world.startup_org))
        assert 200 == person.get("/console/catalog").status_code
        with app.state.sessionmaker() as session:
            person_id = session.scalar(sa.select(User.id).where(User.username == name))

        disabled = admin.post(f"/console/admin/people/{person_id}/disable", data={"csrf": csrf})

        assert 303 == disabled.status_code
        assert 303 == person.get("/console/catalog").status_code  # to the sign-in
        with app.state.sessionmaker() as session:
            actions = session.scalars(
                sa.select(AuditEvent.action).where(AuditEvent.subject_id == person_id).order_by(AuditEvent.id)
            ).all()
        assert ["user.created", "user.signed_in", "user.disabled"] == list(actions)

    def test_disabling_an_organisation_asks_first_and_ends_its_sessions(
        self, admin: TestClient, app: FastAPI, browser_client: Callable[[], TestClient]
    ) -> None:
        """The disable link opens a confirmation page; confirming ends the organisation's sessions at once."""
        org_id = _new_org(admin, f"Short-lived Ltd {secrets.token_hex(3)}", gba_registered="true")
        with app.state.sessionmaker.begin() as session:
            member = people.create_user(
                session,
                actor="test",
                org_id=org_id,
                username=f"m-{secrets.token_hex(3)}",
                display_name="M",
                role="consumer",
                password=PASSWORD,
            ).username
        person = sign_in(browser_client(), Person(member, PASSWORD, "consumer", org_id))
        assert 200 == person.get("/console/catalog").status_code
        confirm = admin.get(f"/console/admin/organizations/{org_id}/disable")
        assert 200 == confirm.status_code
        assert 'class="danger"' in confirm.text

        done = admin.post(
            f"/console/admin/organizations/{org_id}/disable", data={"csrf": _csrf(confirm.text)}
        )

        assert 303 == done.status_code
        assert 303 == person.get("/console/catalog").status_code
        with app.state.sessionmaker() as session:
            org = session.get(Organization, org_id)
            assert org is not None
            assert org.disabled_at is not None
            assert org.gba_registered
        own = admin.get("/console/admin/organizations")
        assert 'href="/console/admin/organizations/' + org_id + '/disable"' not in own.text

    def test_choices_and_refusals_are_named_beside_their_fields_in_chinese(
        self, admin: TestClient, world: World
    ) -> None:
        """A missing choice and the API's refusal are shown beside their fields in the reader's script."""
        admin.cookies.set("gbadz_lang", "zh-Hant", domain="console.test")
        csrf = _csrf(admin.get("/console/admin/people").text)
        form = {"csrf": csrf, "username": "kit-zh", "display_name": "Kit", "password": "short"}
        unchosen = admin.post("/console/admin/people", data=form | {"org_id": "", "role": ""})
        assert 422 == unchosen.status_code
        assert '<p class="error" id="org_id-error">請選擇機構。</p>' in unchosen.text
        assert '<p class="error" id="role-error">請選擇角色。</p>' in unchosen.text
        refused = admin.post(
            "/console/admin/people", data=form | {"org_id": world.startup_org, "role": "consumer"}
        )
        assert 400 == refused.status_code
        assert '<p class="error" id="password-error">須為 12 至 256 個字元</p>' in refused.text
        assert 'value="kit-zh"' in refused.text  # what was typed stays, except the password
        assert 'value="short"' not in refused.text
