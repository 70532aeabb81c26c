"""Issue #19 in the console, without a browser: a startup's request and grant pages, withdrawing
a request, minimised column defaults, the officer's grants page and the amend form of a mechanism."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access import service
from gbadz.access.models import AccessRequest, MechanismEvidence
from tests.api import bearer, fetch_token, make_client
from tests.console.conftest import sign_in
from tests.console.world import GRANTED, World, add_person
from tests.datasets import YAML, as_yaml, contract, file_mechanism, org_name, sign_off

SignedIn = Callable[[str], TestClient]
PURPOSE = "trade_transport_academic_mfg_marketing"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def ask(app: FastAPI, world: World, dataset: str, **body: Any) -> dict[str, Any]:
    """The world's startup asks through the API (as its API client)."""
    http = TestClient(app)
    token = fetch_token(http, world.clients["consumer"])
    payload = {"purpose": PURPOSE, "purpose_text": "Cold-chain route planning across the bay"} | body
    answer = http.post(f"/api/v1/datasets/{dataset}/access-requests", json=payload, headers=bearer(token))
    assert 201 == answer.status_code, answer.text
    created: dict[str, Any] = answer.json()
    return created


@dataclass
class Macao:
    """A Macao statistics dataset (part personal) and the startup's automatic grant on it."""

    dataset: str
    grant: str
    request: str


@pytest.fixture
def macao(app: FastAPI, world: World) -> Macao:
    http = TestClient(app)
    provider = make_client(app, "provider", "MO")
    token = fetch_token(http, provider)
    dataset = f"mo-{secrets.token_hex(4)}"
    doc = contract(dataset, org_name(app, provider.org_id), origin="MO", with_pi=False)
    registered = http.post("/api/v1/datasets", content=as_yaml(doc), headers=bearer(token) | YAML)
    assert 201 == registered.status_code, registered.text
    sign_off(http, app, dataset)
    created = ask(app, world, dataset)
    assert "approved" == created["state"], created
    return Macao(dataset, created["grant_id"], created["id"])


class TestRequestPage:
    def test_the_startup_reads_its_request_with_history_and_next_steps(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The request's page shows the decision, its history by party and what happens next (GBA contract)."""
        created = ask(app, world, world.dataset, columns=GRANTED)
        page = signed_in("consumer").get(f"/console/requests/{created['id']}")
        assert 200 == page.status_code, page.text[:300]
        for text in ("History", "What happens next", "the platform (automatic)", "within 10 working days"):
            assert text in page.text, text
        assert f'href="/console/requests/{created["id"]}/withdraw"' in page.text
        provider = signed_in("provider").get(f"/console/requests/{created['id']}")
        assert 200 == provider.status_code
        assert "/withdraw" not in provider.text  # only the requester withdraws

    def test_a_stranger_sees_no_request(self, app: FastAPI, world: World, browser_client: Any) -> None:
        """Another startup's person gets the not-found page for someone else's request and its withdrawal."""
        created = ask(app, world, world.dataset, columns=GRANTED)
        other = make_client(app, "consumer", "HK")
        person = add_person(app, "consumer", other.org_id, f"rival-{secrets.token_hex(3)}")
        client = sign_in(browser_client(), person)
        assert 404 == client.get(f"/console/requests/{created['id']}").status_code
        assert 404 == client.get(f"/console/requests/{created['id']}/withdraw").status_code
        csrf = _csrf(client.get("/console/catalog").text)
        refused = client.post(f"/console/requests/{created['id']}/withdraw", data={"csrf": csrf})
        assert 404 == refused.status_code
        with app.state.sessionmaker() as session:
            assert "under_provider_review" == session.get(AccessRequest, created["id"]).state  # type: ignore[union-attr]


class TestWithdraw:
    def test_the_startup_withdraws_after_confirming_and_the_provider_can_no_longer_approve(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Confirm page, a too-long reason refused beside it, then withdrawn; the provider's approval is refused."""
        created = ask(app, world, world.dataset, columns=GRANTED)
        client = signed_in("consumer")
        confirm = client.get(f"/console/requests/{created['id']}/withdraw")
        assert "Yes, withdraw the request" in confirm.text
        path = f"/console/requests/{created['id']}/withdraw"
        assert 403 == client.post(path, data={"csrf": "forged"}).status_code
        long = client.post(path, data={"csrf": _csrf(confirm.text), "reason": "x" * 501})
        assert 422 == long.status_code
        assert 'id="reason-error"' in long.text
        done = client.post(path, data={"csrf": _csrf(confirm.text), "reason": "Found a public source"})
        assert 303 == done.status_code, done.text[:300]
        page = client.get(done.headers["location"])
        assert "You withdrew this request." in page.text
        assert "/withdraw" not in page.text
        provider = signed_in("provider")
        csrf = _csrf(provider.get("/console/requests").text)
        refused = provider.post(
            f"/console/requests/{created['id']}/approve", data={"csrf": csrf, "reason": "ok"}
        )
        assert 409 == refused.status_code
        with app.state.sessionmaker() as session:
            assert "withdrawn" == session.get(AccessRequest, created["id"]).state  # type: ignore[union-attr]


class TestGrantPage:
    def test_a_grant_without_a_published_version_offers_no_download(
        self, macao: Macao, signed_in: SignedIn
    ) -> None:
        """The grant's page lists columns and expiry; with nothing published there is no download button."""
        client = signed_in("consumer")
        page = client.get(f"/console/grants/{macao.grant}")
        assert 200 == page.status_code, page.text[:300]
        assert "<code>trips</code>" in page.text
        assert "nothing to download" in page.text
        assert "Get download links" not in page.text
        listed = client.get("/console/requests")
        assert "Get download links" not in listed.text.split(f'id="grant-{macao.grant}"')[1].split("</tr>")[0]

    def test_a_suspended_grant_shows_why(self, app: FastAPI, macao: Macao, signed_in: SignedIn) -> None:
        """A grant suspended by a reclassification shows the reason on its page, and no download."""
        with app.state.sessionmaker.begin() as session:
            assert 1 == service.suspend_for_reclassification(session, macao.dataset, "test")
        page = signed_in("consumer").get(f"/console/grants/{macao.grant}")
        assert "Why suspended" in page.text
        assert "contract was reclassified" in page.text
        assert "Get download links" not in page.text


class TestMinimisation:
    def test_non_personal_columns_start_ticked_and_personal_ones_show_why(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """On a part-personal dataset the non-personal columns are ticked, the personal ones not, with reasons."""
        http = TestClient(app)
        provider = make_client(app, "provider", "MO")
        dataset = f"mo-pi-{secrets.token_hex(4)}"
        doc = contract(dataset, org_name(app, provider.org_id), origin="MO", with_pi=True)
        registered = http.post(
            "/api/v1/datasets", content=as_yaml(doc), headers=bearer(fetch_token(http, provider)) | YAML
        )
        assert 201 == registered.status_code, registered.text
        sign_off(http, app, dataset)
        page = signed_in("consumer").get(f"/console/datasets/{dataset}").text
        for name in ("record_id", "district", "trips"):
            assert f'name="columns" value="{name}" checked' in page, name
        for name in ("phone", "customer_id"):
            assert f'name="columns" value="{name}" aria-describedby="why-' in page, name
        assert "Protection" in page.split('value="phone"')[1].split("</p>")[0]


class TestAmend:
    def test_an_officer_amends_a_filing_and_sees_version_2(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """The amend form is prefilled; a cleared date is refused beside it (nothing written); then version 2."""
        filed = file_mechanism(TestClient(app), app, world.provider_org, world.startup_org, document=False)
        client = signed_in("compliance_officer")
        form = client.get(f"/console/mechanisms/{filed['id']}/amend")
        assert 200 == form.status_code, form.text[:300]
        assert f'value="{filed["reference"]}"' in form.text
        assert f'value="{filed["filing_date"]}"' in form.text
        data = {
            "csrf": _csrf(form.text),
            "exporter_org_id": world.provider_org,
            "recipient_org_id": world.startup_org,
            "kind": "GBA_SC",
            "reference": filed["reference"],
            "effective_date": filed["effective_date"],
        }
        with app.state.sessionmaker() as session:
            before = session.scalar(sa.select(sa.func.count()).select_from(MechanismEvidence))
        missing = client.post(f"/console/mechanisms/{filed['id']}/amend", data=data)
        assert 422 == missing.status_code, missing.text[:300]
        assert 'id="filing_date-error"' in missing.text
        with app.state.sessionmaker() as session:
            assert before == session.scalar(sa.select(sa.func.count()).select_from(MechanismEvidence))
        done = client.post(
            f"/console/mechanisms/{filed['id']}/amend", data=data | {"filing_date": filed["filing_date"]}
        )
        assert 303 == done.status_code, done.text[:300]
        registry = client.get(done.headers["location"]).text
        new_id = done.headers["location"].split("recorded=")[1].split("#")[0]
        assert "version 2" in registry.split(f'id="item-{new_id}"')[1].split("</tr>")[0]
        assert 404 == signed_in("consumer").get(f"/console/mechanisms/{filed['id']}/amend").status_code


class TestOfficerGrants:
    def test_an_officer_filters_grants_and_revokes_one_with_a_reason(
        self, world: World, macao: Macao, signed_in: SignedIn
    ) -> None:
        """Filters narrow the list, a bad one is named beside its field, and a revocation needs a reason."""
        client = signed_in("compliance_officer")
        page = client.get(f"/console/compliance/grants?dataset_id={macao.dataset}")
        assert 200 == page.status_code, page.text[:300]
        assert f'id="grant-{macao.grant}"' in page.text
        assert f'<option value="{world.startup_org}"' in page.text
        by_grantee = client.get(f"/console/compliance/grants?grantee_org_id={world.startup_org}&kind=copy")
        assert f'id="grant-{macao.grant}"' in by_grantee.text
        other = client.get(f"/console/compliance/grants?grantee_org_id={world.provider_org}")
        assert f'id="grant-{macao.grant}"' not in other.text
        bad = client.get("/console/compliance/grants?expires_before=soon")
        assert 422 == bad.status_code
        assert 'id="expires_before-error"' in bad.text
        path = f"/console/compliance/grants/{macao.grant}/revoke"
        empty = client.post(path, data={"csrf": _csrf(page.text), "reason": ""})
        assert 422 == empty.status_code
        assert f'id="reason-{macao.grant}-error"' in empty.text
        done = client.post(path, data={"csrf": _csrf(page.text), "reason": "Licence ended early"})
        assert 303 == done.status_code, done.text[:300]
        revoked = client.get(f"/console/compliance/grants?status=revoked&dataset_id={macao.dataset}").text
        assert "Licence ended early" in revoked
        active = client.get(f"/console/compliance/grants?status=active&dataset_id={macao.dataset}").text
        assert f'id="grant-{macao.grant}"' not in active
        assert 404 == signed_in("consumer").get("/console/compliance/grants").status_code
        assert 404 == signed_in("provider").get("/console/compliance/grants").status_code
