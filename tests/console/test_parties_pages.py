"""Issue #19 in the console, without a browser: a startup's request and grant pages, withdrawing
a request, minimised column defaults, the officer's grants page and the amend form of a mechanism."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
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
from tests.datasets import YAML, as_yaml, contract, determination, file_mechanism, org_name, sign_off

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


def determined(app: FastAPI, world: World) -> dict[str, Any]:
    """A GBA-contract request of the world's startup: the provider approves, then an independent
    compliance officer determines it, naming a contract on file recorded by another officer."""
    created = ask(app, world, world.dataset, columns=GRANTED)
    http = TestClient(app)
    approve = f"/api/v1/access-requests/{created['id']}/approve"
    provider = bearer(fetch_token(http, world.clients["provider"]))
    step = http.post(approve, json={"reason": "the provider agrees"}, headers=provider)
    assert "under_compliance_review" == step.json()["state"], step.text
    filed = file_mechanism(http, app, world.provider_org, world.startup_org)
    officer = bearer(fetch_token(http, world.clients["compliance_officer"]))
    done = http.post(approve, json={"determination": determination(filed["id"])}, headers=officer)
    assert 200 == done.status_code, done.text
    assert ("approved", "GBA_SC") == (done.json()["state"], done.json()["decision"]["outcome"]), done.text
    return dict(done.json()) | {"reference": filed["reference"]}


def _next_steps(html: str) -> str:
    return unescape(html.split('id="next-h"')[1].split("</section>")[0])


class TestWhatHappensNext:
    def test_both_parties_file_a_gba_contract_each_with_its_own_authority(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Shenzhen exporter, Hong Kong recipient: one filing line per party (Guangdong CAC, HK DPO),
        in three languages; never "only the exporter files with the Guangdong CAC" (rules §2.1)."""
        created = ask(app, world, world.dataset, columns=GRANTED)
        assert "GBA_SC" == created["decision"]["outcome"]
        client = signed_in("consumer")
        steps = _next_steps(client.get(f"/console/requests/{created['id']}").text)
        days = "within 10 working days of the contract's effective date"
        assert f"Filing by the exporter: with the Guangdong Cyberspace Administration {days}" in steps
        assert f"Filing by the recipient: with the Digital Policy Office (Hong Kong) {days}" in steps
        assert "files the signed contract with the Guangdong" not in steps
        for code, words in (
            ("zh-Hans", ("数据出境方备案", "广东省互联网信息办公室", "接收方备案", "香港数字政策办公室")),
            ("zh-Hant", ("數據出境方備案", "廣東省互聯網信息辦公室", "接收方備案", "香港數字政策辦公室")),
        ):
            client.get(f"/console/lang?to={code}&next=/console/")
            translated = _next_steps(client.get(f"/console/requests/{created['id']}").text)
            for word in words:
                assert word in translated, (code, word)
            assert "10" in translated

    def test_after_the_determination_the_steps_are_past_and_name_the_contract_used(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Approved by a determination: the final outcome, the contract relied on (by its reference),
        past tense; the grant's status drives the first line (in force, then revoked)."""
        done = determined(app, world)
        client = signed_in("consumer")
        steps = _next_steps(client.get(f"/console/requests/{done['id']}").text)
        assert f"the transfer relies on the contract on file: {done['reference']}" in steps
        assert "signed the GBA standard contract" in steps
        assert "signs the GBA standard contract with the exporter before" not in steps
        assert "The grant is in force" in steps
        assert "Filing by the recipient: with the Digital Policy Office (Hong Kong)" in steps
        http = TestClient(app)
        officer = bearer(fetch_token(http, world.clients["compliance_officer"]))
        revoked = http.post(
            f"/api/v1/grants/{done['grant_id']}/revoke", json={"reason": "Licence ended"}, headers=officer
        )
        assert 200 == revoked.status_code, revoked.text
        steps = _next_steps(client.get(f"/console/requests/{done['id']}").text)
        assert "The grant was revoked" in steps
        assert "The grant is in force" not in steps


class TestNoNamesAcrossParties:
    def test_the_startup_reads_party_roles_not_the_reviewers_identities(
        self, app: FastAPI, world: World
    ) -> None:
        """Invariant 9: the startup reading its determined request (and its grant's determination)
        sees which party took each step, never the provider's or the officer's username or client
        id; the provider sees its own step's; the compliance office sees everything."""
        done = determined(app, world)
        http = TestClient(app)
        heads = {role: bearer(fetch_token(http, world.clients[role])) for role in world.clients}
        people = {role: world.clients[role].client_id for role in ("provider", "compliance_officer")}
        path = f"/api/v1/access-requests/{done['id']}"
        read = http.get(path, headers=heads["consumer"])
        assert 200 == read.status_code, read.text
        assert [
            ("provider", "provider", "provider"),
            ("compliance", "compliance_officer", "compliance_officer"),
        ] == [(r["step"], r["by"], r["who"]) for r in read.json()["reviews"]]
        assert "compliance_officer" == read.json()["findings"]["by"]
        grant = http.get(f"/api/v1/grants/{done['grant_id']}", headers=heads["consumer"])
        assert ["provider", "compliance_officer"] == [
            a["by"] for a in grant.json()["determination"]["approvers"]
        ]
        listed = http.get("/api/v1/access-requests", headers=heads["consumer"]).text
        mechanisms = http.get("/api/v1/mechanisms", headers=heads["consumer"])
        assert {"compliance_officer"} == {m["recorded_by"] for m in mechanisms.json()}
        for text in (read.text, grant.text, listed, mechanisms.text):
            for client_id in people.values():
                assert client_id not in text
        provider = http.get(path, headers=heads["provider"]).json()
        assert [people["provider"], "compliance_officer"] == [r["who"] for r in provider["reviews"]]
        assert people["compliance_officer"] not in str(provider)
        recorded = http.get("/api/v1/mechanisms", headers=heads["compliance_officer"]).json()
        assert any(m["recorded_by"].endswith(f"@{world.officer_org}") for m in recorded)
        office = http.get(path, headers=heads["compliance_officer"]).json()
        assert [people["provider"], people["compliance_officer"]] == [r["who"] for r in office["reviews"]]
        assert people["compliance_officer"] in office["findings"]["by"]


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


class TestGrantPreconditions:
    def test_a_grant_with_open_preconditions_says_why_nothing_can_be_downloaded(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Exempt (no GBA contract asked for), Mainland personal data: the PIPIA and the notice and
        consent are open, so the page offers no download and names them; the request page follows
        the grant; the obligations are the grant's own (``grant_id``), each party's wording."""
        created = ask(app, world, world.dataset, columns=GRANTED, gba_sc_opt_in=False)
        assert ("approved", "EXEMPT") == (created["state"], created["decision"]["outcome"]), created
        grant = created["grant_id"]
        page = unescape(signed_in("consumer").get(f"/console/grants/{grant}").text)
        assert "Get download links" not in page
        assert "obligations due before any data leaves: notice and separate consent, PIPIA." in page
        assert "Nothing is due from your organisation on this grant." not in page  # it owes the deletion
        assert "the recipient deletes every copy" in page
        officer = unescape(signed_in("compliance_officer").get(f"/console/grants/{grant}").text)
        duties = officer.split('id="duties-h"')[1].split("</table>")[0]
        assert 3 == duties.count('<tr><th scope="row">'), duties  # this grant's, not the zone's
        http = TestClient(app)
        token = bearer(fetch_token(http, world.clients["compliance_officer"]))
        mine = http.get("/api/v1/obligations", params={"grant_id": grant}, headers=token).json()
        assert {"pipia", "notice_consent", "recipient_deletion"} == {d["kind"] for d in mine}
        assert {grant} == {d["grant_id"] for d in mine}
        bad = http.get("/api/v1/obligations", params={"grant_id": "../x"}, headers=token)
        assert 422 == bad.status_code
        assert "grant_id" in [str(part) for item in bad.json()["detail"] for part in item["loc"]]


class TestMinimisation:
    def test_non_personal_columns_start_ticked_and_personal_ones_show_why(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """On a part-personal dataset the non-personal columns are ticked, the personal ones not, with reasons."""
        http = TestClient(app)
        provider = make_client(app, "provider", "MO")
        dataset = f"mo-pi-{secrets.token_hex(4)}"
        doc = contract(dataset, org_name(app, provider.org_id), origin="MO", with_pi=True)
        doc["gbadz"]["columns"]["phone"]["spi"] = "financial_account"  # shown by its translated name
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
        why = page.split('value="phone"')[1].split("</p>")[0]
        assert "Protection" in why
        assert ("Sensitive category: financial account", False) == (
            why.split("<p", 1)[1].split(">", 1)[1].split(" ·")[0],
            "financial_account" in why,
        )


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


def _render_request(decision: dict[str, Any], state: str, grant: dict[str, Any] | None = None) -> str:
    """request.html for a request in ``state`` with ``decision`` (the page's own template)."""
    from types import SimpleNamespace

    from gbadz.console.i18n import translate
    from gbadz.console.startup import gba_sc_filings
    from gbadz.console.web import env, helpers

    def t(text: str, **params: Any) -> str:
        return translate(text, "en").format(**params)

    r = {
        "id": "r1",
        "dataset_id": "d1",
        "state": state,
        "created_at": "2026-12-01T00:00:00+00:00",
        "purpose": PURPOSE,
        "purpose_text": "A purpose",
        "kind": "copy",
        "columns": ["a"],
        "destination": "OTHER",
        "processing_location": None,
        "onward_transfer": "none",
        "duration_days": 30,
        "history": [],
        "reason": None,
        "licence_findings": [],
        "grant_id": "g1" if grant else None,
        "decision": {
            "rule_id": "M4",
            "legal_basis": "a basis",
            "evidence_required": [],
            "obligations": [],
            "facts": {"origin": "CN_GBA9", "dest": "OTHER"},
            "evidence": {},
            "reviewed": None,
        }
        | decision,
    }
    person = SimpleNamespace(role="consumer", display_name="S", org_name="Startup", org_id="s")
    html = env.get_template("request.html").render(
        **helpers("en"),
        t=t,
        signed=SimpleNamespace(person=person, csrf="token"),
        path="/console/requests/r1",
        query="",
        locale="en",
        locales={},
        request=SimpleNamespace(query_params={}),
        r=r,
        grant=grant,
        filings=gba_sc_filings(r["decision"], 10),
        withdrawable=False,
        errors={},
        values={},
    )
    return _next_steps(html)


class TestNextStepsTemplate:
    def test_standard_contract_or_certification_uses_the_engines_outcome_name(self) -> None:
        """SCC_OR_CERT (the engine's outcome; SCC and CERT are evidence kinds) shows both mechanisms
        before approval, then the one actually relied on, by its reference, in the past tense."""
        pending = _render_request({"outcome": "SCC_OR_CERT"}, "under_compliance_review")
        assert "a standard contract or a certification" in pending
        assert "Standard contract: your organisation signs" in pending
        assert "Certification: the exporter and your organisation are certified" in pending
        used = {"status": "satisfied", "used": "SCC-44-0017", "used_kind": "SCC"}
        grant = {"status": "active"}
        scc = _render_request({"outcome": "SCC_OR_CERT", "evidence": used}, "approved", grant)
        assert "signed the standard contract and the exporter filed it" in scc
        assert "SCC-44-0017" in scc
        assert "your organisation signs" not in scc
        cert = _render_request(
            {"outcome": "SCC_OR_CERT", "evidence": used | {"used": "CERT-9", "used_kind": "CERT"}},
            "approved",
            grant,
        )
        assert "were certified for personal information protection" in cert
        assert "CERT-9" in cert
        assert "signed the standard contract" not in cert

    def test_the_final_outcome_wins_over_the_engines_routing_note(self) -> None:
        """After a determination the page follows decision.outcome (final), not decision.reviewed
        (the engine's routing outcome before the officer determined it; invariant 8)."""
        final = {
            "outcome": "ASSESSMENT",
            "reviewed": {"outcome": "HUMAN_REVIEW", "rule_id": "X9"},
            "evidence": {"status": "satisfied", "used": "CAC-2026-7", "used_kind": "ASSESSMENT"},
        }
        page = _render_request(final, "approved", {"status": "suspended"})
        assert "the exporter passed the assessment" in page
        assert "CAC-2026-7" in page
        assert "The grant is suspended" in page
        assert "The grant is in force" not in page

    def test_a_macao_contract_is_filed_with_the_dspdp_by_the_macao_party(self) -> None:
        """Macao exporter, Zhuhai recipient: the exporter files with the DSPDP, the recipient with the
        Guangdong CAC (rules §2.2), each within the filing period."""
        page = _render_request(
            {"outcome": "GBA_SC", "facts": {"origin": "MO", "dest": "CN_GBA9"}}, "under_provider_review"
        )
        macao = "Personal Data Protection Bureau (Macao)"
        assert f"Filing by the exporter: with the {macao} within 10 working days" in page
        assert (
            "Filing by the recipient: with the Guangdong Cyberspace Administration within 10 working" in page
        )


class TestOfficerGrantsExpiry:
    def test_an_instant_out_of_range_is_named_beside_the_field(self, signed_in: SignedIn) -> None:
        """An expiry UTC cannot hold (typed, or the first day picked at Shanghai midnight) is shown
        beside the field with 422, never a 500."""
        client = signed_in("compliance_officer")
        for value in ("0001-01-01", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00%2B05:00"):
            page = client.get(f"/console/compliance/grants?expires_before={value}")
            assert 422 == page.status_code, (value, page.text[:300])
            assert 'id="expires_before-error"' in page.text, value

    def test_a_picked_date_is_midnight_in_shanghai(self) -> None:
        """A date picked in the filter is the start of that day in Asia/Shanghai (invariant 7)."""
        from types import SimpleNamespace

        from gbadz.console.officer import _grant_query
        from gbadz.law.rules import default_rules

        request = SimpleNamespace(
            query_params={"expires_before": "2026-12-10"},
            app=SimpleNamespace(state=SimpleNamespace(rules=default_rules())),
        )
        filters, query = _grant_query(request)  # type: ignore[arg-type]
        assert "2026-12-10" == filters["expires_before"]  # the form keeps what was picked
        assert "2026-12-10T00:00:00+08:00" == query["expires_before"]  # 2026-12-09 16:00 UTC
