"""Administration over the API (issue #19): clients listed without secrets, organisations disabled
(their tokens stop at once), people created, listed and disabled; each as the party who would gain."""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import audit, db
from gbadz.app import create_app
from gbadz.audit import AuditEvent
from gbadz.config import DatabaseSettings, Settings
from gbadz.errors import Conflict
from gbadz.identity import people, service
from tests.api import Client, basic, bearer, fetch_token, make_client

PASSWORD = "a first password, set once"


def _operator(app: FastAPI) -> str:
    with app.state.sessionmaker.begin() as session:
        org = service.create_organization(
            session,
            actor="test",
            name=f"Zone operator {secrets.token_hex(3)}",
            jurisdiction="CN-SZ",
            operator=True,
        )
        return org.id


def _person_token(app: FastAPI, username: str, org_id: str, role: str) -> str:
    """The token the console mints for a signed-in person (the same call the console makes)."""
    token = app.state.authorization_server.person_token_for(username, org_id, role)
    return str(token["access_token"])


def _events(app: FastAPI, subject_type: str, subject_id: str) -> list[AuditEvent]:
    with app.state.sessionmaker() as session:
        return list(audit.AuditRepository(session).for_subject(subject_type, subject_id))


class TestListClients:
    def test_clients_are_listed_without_secrets_and_filtered_by_organisation(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """An admin lists clients with their organisation, role and scopes, and never a secret."""
        admin = bearer(fetch_token(http, clients["admin"]))
        listed = http.get("/api/v1/clients", headers=admin)
        assert 200 == listed.status_code, listed.text
        assert {c.client_id for c in clients.values()} <= {c["client_id"] for c in listed.json()}
        for client in clients.values():
            assert str(client.client_secret) not in listed.text
        assert all("client_secret" not in c for c in listed.json())
        mine = http.get("/api/v1/clients", params={"org_id": clients["provider"].org_id}, headers=admin)
        assert [clients["provider"].client_id] == [c["client_id"] for c in mine.json()]
        assert ["access:review", "catalog:read", "datasets:publish"] == mine.json()[0]["scopes"]

    @pytest.mark.parametrize("role", ["provider", "consumer", "compliance_officer"])
    def test_only_an_admin_lists_clients_or_people(
        self, http: TestClient, clients: dict[str, Client], role: str
    ) -> None:
        """A participant cannot enumerate clients or people (403 insufficient_scope)."""
        token = bearer(fetch_token(http, clients[role]))
        for path in ("/api/v1/clients", "/api/v1/people"):
            assert 403 == http.get(path, headers=token).status_code

    def test_a_named_client_keeps_its_name(self, http: TestClient, clients: dict[str, Client]) -> None:
        """A client may be named for what it is for; a name over 100 characters is refused, naming the field."""
        admin = bearer(fetch_token(http, clients["admin"]))
        org = clients["consumer"].org_id
        made = http.post(
            "/api/v1/clients", json={"org_id": org, "role": "consumer", "name": "nightly sync"}, headers=admin
        )
        assert "nightly sync" == made.json()["name"]
        long = http.post(
            "/api/v1/clients", json={"org_id": org, "role": "consumer", "name": "x" * 101}, headers=admin
        )
        assert 422 == long.status_code
        assert ["body", "name"] == long.json()["detail"][0]["loc"]


class TestDisableOrganization:
    def test_a_disabled_organisations_tokens_stop_at_once(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """Disabling an organisation refuses its live tokens, new tokens and new members at once; audited."""
        victim = make_client(app, "consumer")
        live = bearer(fetch_token(http, victim))
        assert 200 == http.get("/api/v1/me", headers=live).status_code
        with app.state.sessionmaker.begin() as session:
            people.create_user(
                session,
                actor="test",
                org_id=victim.org_id,
                username=f"p-{secrets.token_hex(3)}",
                display_name="P",
                role="consumer",
                password=PASSWORD,
            )
        person = _person_token(app, "someone", victim.org_id, "consumer")
        admin = bearer(fetch_token(http, clients["admin"]))

        disabled = http.post(f"/api/v1/organizations/{victim.org_id}/disable", headers=admin)

        assert 200 == disabled.status_code, disabled.text
        assert disabled.json()["disabled_at"]
        assert 401 == http.get("/api/v1/me", headers=live).status_code
        assert 401 == http.get("/api/v1/me", headers=bearer(person)).status_code
        refused = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(victim))
        assert 401 == refused.status_code
        more = http.post("/api/v1/clients", json={"org_id": victim.org_id, "role": "consumer"}, headers=admin)
        assert (409, "org_id") == (more.status_code, more.json()["field"])
        again = http.post(f"/api/v1/organizations/{victim.org_id}/disable", headers=admin)
        assert 409 == again.status_code
        events = _events(app, "organization", victim.org_id)
        assert ["organization.created", "organization.disabled"] == [e.action for e in events]
        assert clients["admin"].client_id in events[-1].actor

    def test_a_disabled_organisations_people_cannot_sign_in(
        self, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """A person of a disabled organisation is refused with a right password (as a wrong one is)."""
        org = make_client(app, "provider").org_id
        name = f"p-{secrets.token_hex(3)}"
        with app.state.sessionmaker.begin() as session:
            people.create_user(
                session,
                actor="test",
                org_id=org,
                username=name,
                display_name="P",
                role="provider",
                password=PASSWORD,
            )
            assert people.authenticate(session, name, PASSWORD) is not None
            service.disable_organization(session, actor="test", actor_org_id="", org_id=org)
            assert people.authenticate(session, name, PASSWORD) is None

    def test_an_admin_cannot_disable_their_own_organisation(
        self, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """Nobody would be left to undo it: 409, and the organisation stays enabled."""
        admin = bearer(fetch_token(http, clients["admin"]))
        own = http.post(f"/api/v1/organizations/{clients['admin'].org_id}/disable", headers=admin)
        assert (409, "org_id") == (own.status_code, own.json()["field"])
        assert 200 == http.get("/api/v1/me", headers=admin).status_code

    @pytest.mark.parametrize("role", ["provider", "consumer", "compliance_officer"])
    def test_a_participant_cannot_disable_a_rival(
        self, http: TestClient, clients: dict[str, Client], role: str
    ) -> None:
        """A participant who would gain from a rival's outage is refused (403) and the rival keeps working."""
        rival = clients["consumer" if role != "consumer" else "provider"]
        token = bearer(fetch_token(http, clients[role]))
        assert 403 == http.post(f"/api/v1/organizations/{rival.org_id}/disable", headers=token).status_code
        assert 200 == http.get("/api/v1/me", headers=bearer(fetch_token(http, rival))).status_code

    def test_unknown_and_malformed_ids(self, http: TestClient, clients: dict[str, Client]) -> None:
        """An unknown organisation is 404; an id no organisation can have is 422."""
        admin = bearer(fetch_token(http, clients["admin"]))
        assert 404 == http.post(f"/api/v1/organizations/{'0' * 36}/disable", headers=admin).status_code
        assert 422 == http.post("/api/v1/organizations/a%00b/disable", headers=admin).status_code


class TestPeopleApi:
    def test_an_admin_creates_lists_and_disables_a_person(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """A person is created with a first password that is never echoed or audited; disabling
        them refuses their token at once; both changes are audited with the acting admin."""
        admin = bearer(fetch_token(http, clients["admin"]))
        name = f"mei.{secrets.token_hex(3)}"
        body = {
            "org_id": clients["consumer"].org_id,
            "username": name,
            "display_name": "Mei Chan",
            "role": "consumer",
            "password": PASSWORD,
        }
        made = http.post("/api/v1/people", json=body, headers=admin)
        assert 201 == made.status_code, made.text
        assert PASSWORD not in made.text
        person_id = made.json()["id"]
        listed = http.get("/api/v1/people", params={"org_id": clients["consumer"].org_id}, headers=admin)
        assert [name] == [p["username"] for p in listed.json()]
        assert PASSWORD not in listed.text
        token = bearer(_person_token(app, name, clients["consumer"].org_id, "consumer"))
        assert 200 == http.get("/api/v1/me", headers=token).status_code

        disabled = http.post(f"/api/v1/people/{person_id}/disable", headers=admin)

        assert 200 == disabled.status_code, disabled.text
        assert 401 == http.get("/api/v1/me", headers=token).status_code
        assert 409 == http.post(f"/api/v1/people/{person_id}/disable", headers=admin).status_code
        events = _events(app, "user", person_id)
        assert ["user.created", "user.disabled"] == [e.action for e in events]
        assert all(clients["admin"].client_id in e.actor for e in events)
        assert PASSWORD not in json.dumps([e.details for e in events])

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"username": "A"}, "username"),
            ({"display_name": " "}, "display_name"),
            ({"password": "short"}, "password"),
            ({"role": "admin"}, "role"),  # only the operator's people may be administrators
        ],
    )
    def test_bad_input_names_the_field_and_writes_nothing(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client], change: dict[str, str], field: str
    ) -> None:
        """Bad input is a 400 naming the field; no person is created."""
        admin = bearer(fetch_token(http, clients["admin"]))
        body = {
            "org_id": clients["consumer"].org_id,
            "username": f"x.{secrets.token_hex(3)}",
            "display_name": "X",
            "role": "consumer",
            "password": PASSWORD,
        } | change
        refused = http.post("/api/v1/people", json=body, headers=admin)
        assert (400, field) == (refused.status_code, refused.json()["field"]), refused.text
        assert PASSWORD not in refused.text
        listed = http.get("/api/v1/people", params={"org_id": clients["consumer"].org_id}, headers=admin)
        assert [] == listed.json()

    def test_an_admin_person_holds_exactly_the_admin_clients_scopes(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """An operator's administrator signs in with admin and catalog:read only, and cannot disable themselves."""
        operator = _operator(app)
        admin = bearer(fetch_token(http, clients["admin"]))
        name = f"admin.{secrets.token_hex(3)}"
        made = http.post(
            "/api/v1/people",
            json={
                "org_id": operator,
                "username": name,
                "display_name": "Ada",
                "role": "admin",
                "password": PASSWORD,
            },
            headers=admin,
        )
        assert 201 == made.status_code, made.text
        token = bearer(_person_token(app, name, operator, "admin"))
        assert ["admin", "catalog:read"] == http.get("/api/v1/me", headers=token).json()["scopes"]
        itself = http.post(f"/api/v1/people/{made.json()['id']}/disable", headers=token)
        assert 409 == itself.status_code
        assert 200 == http.get("/api/v1/me", headers=token).status_code

    @pytest.mark.parametrize("role", ["provider", "consumer", "compliance_officer"])
    def test_a_participant_cannot_create_or_disable_people(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client], role: str
    ) -> None:
        """A participant cannot make themselves an administrator or lock a rival's people out (403)."""
        token = bearer(fetch_token(http, clients[role]))
        body = {
            "org_id": clients[role].org_id,
            "username": f"me.{secrets.token_hex(3)}",
            "display_name": "Me",
            "role": "admin",
            "password": PASSWORD,
        }
        assert 403 == http.post("/api/v1/people", json=body, headers=token).status_code
        with app.state.sessionmaker.begin() as session:
            rival = people.create_user(
                session,
                actor="test",
                org_id=clients["admin"].org_id,
                username=f"r.{secrets.token_hex(3)}",
                display_name="R",
                role="consumer",
                password=PASSWORD,
            )
            rival_id = rival.id
        assert 403 == http.post(f"/api/v1/people/{rival_id}/disable", headers=token).status_code
        with app.state.sessionmaker() as session:
            assert (
                session.scalar(sa.select(people.User.disabled_at).where(people.User.id == rival_id)) is None
            )


class TestAdministratorsStay:
    def test_an_admin_client_belongs_to_an_operator_organisation(
        self, http: TestClient, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """An admin client in a participant's organisation is refused (422 naming role): it could
        otherwise disable the operator and lock every administrator out."""
        admin = bearer(fetch_token(http, clients["admin"]))
        refused = http.post(
            "/api/v1/clients", json={"org_id": clients["consumer"].org_id, "role": "admin"}, headers=admin
        )
        assert (422, "role") == (refused.status_code, refused.json()["field"]), refused.text
        made = http.post("/api/v1/clients", json={"org_id": _operator(app), "role": "admin"}, headers=admin)
        assert 201 == made.status_code, made.text

    def test_the_last_operator_administrator_cannot_be_disabled(
        self, settings: Settings, fresh_database_url: str
    ) -> None:
        """Disabling the operator organisation, or its last administrator person, is refused (409)
        while it would leave nobody to administer the zone; with a second administrator it works."""
        own = settings.model_copy(update={"db": DatabaseSettings(url=fresh_database_url)})
        engine = db.create_engine(own.db)
        db.upgrade(engine)
        engine.dispose()
        app = create_app(own)
        with TestClient(app) as http:
            operator, other_operator = _operator(app), _operator(app)
            with app.state.sessionmaker.begin() as session:
                ada = people.create_user(
                    session,
                    actor="test",
                    org_id=operator,
                    username=f"ada.{secrets.token_hex(3)}",
                    display_name="Ada",
                    role="admin",
                    password=PASSWORD,
                )
                ada_id = ada.id
                issued = service.create_client(session, actor="test", org_id=other_operator, role="admin")
            client = Client(issued.client.client_id, issued.client_secret, other_operator, "admin")
            admin = bearer(fetch_token(http, client))
            org = http.post(f"/api/v1/organizations/{operator}/disable", headers=admin)
            assert (409, "org_id") == (org.status_code, org.json()["field"]), org.text
            person = http.post(f"/api/v1/people/{ada_id}/disable", headers=admin)
            assert (409, "user_id") == (person.status_code, person.json()["field"]), person.text
            with app.state.sessionmaker.begin() as session, pytest.raises(Conflict):
                people.disable_user(session, actor="cli:admin", username=ada.username)
            made = http.post(
                "/api/v1/people",
                json={
                    "org_id": other_operator,
                    "username": f"bo.{secrets.token_hex(3)}",
                    "display_name": "Bo",
                    "role": "admin",
                    "password": PASSWORD,
                },
                headers=admin,
            )
            assert 201 == made.status_code, made.text
            assert 200 == http.post(f"/api/v1/organizations/{operator}/disable", headers=admin).status_code
