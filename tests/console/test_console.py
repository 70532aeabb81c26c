"""The console over HTTP: sign-in (authorization code + PKCE), sessions, CSRF, roles, forms, languages."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import AccessRequest
from gbadz.audit import AuditEvent
from gbadz.console.i18n import CATALOG, LOCALES
from gbadz.console.models import ConsoleSession
from gbadz.identity import people
from tests.console.conftest import BASE, sign_in
from tests.console.world import GRANTED, World, determination_form

SignedIn = Callable[[str], TestClient]
TEMPLATES = Path(__file__).resolve().parents[2] / "platform" / "gbadz" / "console" / "templates"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def _authorize_url(
    challenge: str | None, method: str = "S256", redirect: str | None = None, **extra: str
) -> str:
    params = {
        "response_type": "code",
        "client_id": "gbadz-console",
        "redirect_uri": redirect or f"{BASE}/console/callback",
        "state": "s-" + secrets.token_hex(4),
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": method}
    return "/oauth/authorize?" + urlencode(params | extra)


def _code(client: TestClient, url: str, username: str, password: str) -> str:
    page = client.get(url)
    assert 200 == page.status_code, page.text
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    posted = client.post(
        url, data={"username": username, "password": password, "signin_token": token.group(1)}
    )
    assert 302 == posted.status_code, posted.text
    return parse_qs(urlsplit(posted.headers["location"]).query)["code"][0]


def _exchange(client: TestClient, code: str, verifier: str) -> tuple[int, dict[str, object]]:
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{BASE}/console/callback",
            "client_id": "gbadz-console",
            "code_verifier": verifier,
        },
    )
    return response.status_code, response.json()


def _errors(html: str) -> list[str]:
    """The messages a page shows beside its fields and on top (for assertion messages)."""
    return re.findall(r'class="(?:error|alert)"[^>]*>([^<]*)', html)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


class TestSignIn:
    def test_the_flow_sets_a_host_only_secure_httponly_session_cookie_and_sign_out_ends_it(
        self, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """Sign-in sets a __Host- Secure HttpOnly session cookie, and sign-out makes that cookie useless."""
        client = browser_client()
        anonymous = client.get("/console/catalog")
        assert 303 == anonymous.status_code
        assert anonymous.headers["location"].startswith("/console/login?next=")
        start = client.get("/console/login?next=/console/catalog")
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert ["S256"] == query["code_challenge_method"]
        assert 43 == len(query["code_challenge"][0])
        page = client.get(start.headers["location"])
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token is not None
        person = world.people["consumer"]
        posted = client.post(
            start.headers["location"],
            data={"username": person.username, "password": person.password, "signin_token": token.group(1)},
        )
        finished = client.get(posted.headers["location"])
        assert "/console/catalog" == finished.headers["location"]
        cookie = next(
            v for k, v in finished.headers.multi_items() if k == "set-cookie" and "gbadz_session" in v
        )
        assert cookie.startswith("__Host-gbadz_session=")
        for attribute in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert "domain=" not in cookie.lower()
        catalog = client.get("/console/catalog")
        assert 200 == catalog.status_code
        assert person.username not in catalog.text  # the display name is shown, not the login
        assert "Consumer" in catalog.text
        assert "default-src 'none'" in catalog.headers["content-security-policy"]

        out = client.post("/console/logout", data={"csrf": _csrf(catalog.text)})
        assert 303 == out.status_code
        client.cookies.set(
            "__Host-gbadz_session", cookie.split(";")[0].split("=", 1)[1], domain="console.test"
        )
        assert 303 == client.get("/console/catalog").status_code  # the old cookie no longer works

    def test_pkce_is_required_and_only_s256(
        self, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """An authorization request without PKCE, or with plain PKCE, is sent back as invalid_request."""
        client = browser_client()
        missing = client.get(_authorize_url(None))
        plain = client.get(_authorize_url("x" * 43, method="plain"))
        for response in (missing, plain):
            # The redirect URI is the client's own: the error goes back to it (RFC 6749 §4.1.2.1).
            assert 302 == response.status_code
            assert "error=invalid_request" in response.headers["location"]

    def test_a_foreign_redirect_uri_or_unknown_client_is_shown_not_followed(
        self, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """A foreign redirect URI, unknown client or repeated parameter shows an error, never a redirect."""
        client = browser_client()
        _, challenge = _pkce()
        foreign = client.get(_authorize_url(challenge, redirect="https://evil.example/cb"))
        unknown = client.get(_authorize_url(challenge, client_id="gbz_nope"))
        repeated = client.get(_authorize_url(challenge) + "&state=again")
        for response in (foreign, unknown, repeated):
            assert 400 == response.status_code
            assert "location" not in response.headers
            assert "Sign-in failed" in response.text

    def test_a_code_works_once_and_only_with_its_verifier(
        self, world: World, browser_client: Callable[[], TestClient], app: FastAPI
    ) -> None:
        """An authorization code works once, only with its PKCE verifier, for the person's org and scopes."""
        client = browser_client()
        person = world.people["provider"]
        verifier, challenge = _pkce()
        code = _code(client, _authorize_url(challenge), person.username, person.password)
        status, body = _exchange(client, code, _pkce()[0])
        assert (400, "invalid_grant") == (status, body["error"])
        code = _code(client, _authorize_url(challenge), person.username, person.password)
        status, body = _exchange(client, code, verifier)
        assert 200 == status, body
        claims = app.state.authenticator.authenticate(f"Bearer {body['access_token']}")
        assert f"user:{person.username}" == claims.subject
        assert world.provider_org == claims.org_id
        assert {"catalog:read", "datasets:publish", "access:review"} == set(claims.scopes)
        status, body = _exchange(client, code, verifier)
        assert (400, "invalid_grant") == (status, body["error"])

    @pytest.mark.fresh_world
    def test_wrong_passwords_are_refused_next_to_the_field_then_rate_limited(
        self, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """Wrong passwords get 400 five times and then 429; a forged sign-in token is refused as expired."""
        client = browser_client()
        _, challenge = _pkce()
        url = _authorize_url(challenge)
        statuses = []
        for _ in range(6):
            page = client.get(url)
            token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
            assert token is not None
            answer = client.post(
                url,
                data={
                    "username": world.people["consumer"].username,
                    "password": "not it",
                    "signin_token": token.group(1),
                },
            )
            statuses.append(answer.status_code)
        assert [400] * 5 + [429] == statuses
        forged = client.post(url, data={"username": "x", "password": "y", "signin_token": "forged"})
        assert 400 == forged.status_code
        assert "expired" in forged.text

    def test_the_sign_in_form_names_the_missing_fields(
        self, world: World, browser_client: Callable[[], TestClient]
    ) -> None:
        """An empty sign-in form marks the username and password fields invalid, each with its own error."""
        client = browser_client()
        url = _authorize_url(_pkce()[1])
        page = client.get(url)
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token is not None
        answer = client.post(url, data={"username": "", "password": "", "signin_token": token.group(1)})
        assert 400 == answer.status_code
        assert 'id="username-error"' in answer.text
        assert 'id="password-error"' in answer.text
        assert 'aria-invalid="true"' in answer.text

    @pytest.mark.fresh_world
    def test_a_disabled_person_is_signed_out_at_the_next_request(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """Disabling a person signs them out at their next request and deletes their console sessions."""
        client = signed_in("consumer")
        assert 200 == client.get("/console/catalog").status_code
        with app.state.sessionmaker.begin() as session:
            people.disable_user(session, actor="test", username=world.people["consumer"].username)
        assert 303 == client.get("/console/catalog").status_code
        with app.state.sessionmaker() as session:
            assert 0 == session.scalar(
                sa.select(sa.func.count())
                .select_from(ConsoleSession)
                .where(
                    ConsoleSession.user_id
                    == session.scalar(
                        sa.text("select id from users where username = :u"),
                        {"u": world.people["consumer"].username},
                    )
                )
            )


ROLE_PAGES = {
    "consumer": [
        "/console/compliance",
        "/console/compliance/transfers",
        "/console/provider",
        "/console/mechanisms",
    ],
    "provider": ["/console/compliance", "/console/compliance/transfers.csv"],
    "compliance_officer": ["/console/provider"],
}


class TestRoles:
    @pytest.mark.parametrize("role", sorted(ROLE_PAGES))
    def test_another_roles_pages_look_missing(self, role: str, signed_in: SignedIn) -> None:
        """Another role's console pages answer 404 Not found rather than admitting they exist."""
        client = signed_in(role)
        for path in ROLE_PAGES[role]:
            response = client.get(path)
            assert 404 == response.status_code, path
            assert "Not found" in response.text

    def test_another_roles_actions_look_missing_and_change_nothing(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """Posting another role's actions answers 404 and leaves the pending request untouched."""
        consumer = signed_in("consumer")
        csrf = _csrf(consumer.get("/console/catalog").text)
        approve = consumer.post(f"/console/requests/{world.pending_request}/approve", data={"csrf": csrf})
        assert 404 == approve.status_code
        verify = consumer.post("/console/compliance/verify", data={"csrf": csrf})
        assert 404 == verify.status_code
        provider = signed_in("provider")
        csrf = _csrf(provider.get("/console/catalog").text)
        assess = provider.post(
            f"/console/datasets/{world.dataset}/request",
            data={"csrf": csrf, "purpose": "other", "purpose_text": "I am not a startup at all"},
        )
        assert 404 == assess.status_code
        with app.state.sessionmaker() as session:
            assert "under_provider_review" == session.get(AccessRequest, world.pending_request).state  # type: ignore[union-attr]

    def test_a_form_without_the_sessions_csrf_token_is_refused(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """A form with a missing or forged CSRF token is refused as expired and changes nothing."""
        provider = signed_in("provider")
        for data in ({}, {"csrf": "forged"}):
            response = provider.post(f"/console/requests/{world.pending_request}/approve", data=data)
            assert 403 == response.status_code
            assert "Form expired" in response.text
        with app.state.sessionmaker() as session:
            assert "under_provider_review" == session.get(AccessRequest, world.pending_request).state  # type: ignore[union-attr]


class TestCraftedValues:
    BAD_IDS: ClassVar[tuple[str, ...]] = ("%3F", "x%3Fy", "%23", "x%23y", "%00", "%2F", "%2e%2e", "%C2%B2")

    def test_crafted_dataset_ids_look_missing(self, world: World, signed_in: SignedIn) -> None:
        """A dataset id with ?, #, NUL, / or .. (percent-encoded) is a 404 on every dataset page, never a 500."""
        consumer = signed_in("consumer")
        csrf = _csrf(consumer.get(f"/console/datasets/{world.dataset}").text)
        for bad in self.BAD_IDS:
            statuses = {
                consumer.get(f"/console/datasets/{bad}").status_code,
                consumer.post(f"/console/datasets/{bad}/assess", data={"csrf": csrf}).status_code,
                consumer.post(
                    f"/console/datasets/{bad}/request",
                    data={"csrf": csrf, "purpose": "other", "duration_days": "30"},
                ).status_code,
            }
            assert {404} == statuses, bad

    def test_non_ascii_or_huge_day_counts_are_422_beside_the_field(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """``duration_days`` of a superscript, Arabic-Indic or full-width digit, or 30 digits, is 422 naming the field."""
        consumer = signed_in("consumer")
        page = consumer.get(f"/console/datasets/{world.dataset}")
        answers = {}
        for days in ("\u00b2", "\u0663\u0660", "\uff13\uff10", "1" * 30, "-5", "3.5"):
            response = consumer.post(
                f"/console/datasets/{world.dataset}/request",
                data={
                    "csrf": _csrf(page.text),
                    "purpose": "other",
                    "purpose_text": "Route planning for the bay",
                    "duration_days": days,
                },
            )
            answers[days] = (response.status_code, 'id="duration_days-error"' in response.text)
        assert dict.fromkeys(answers, (422, True)) == answers

    def test_non_ascii_individuals_are_422_beside_the_field(self, signed_in: SignedIn) -> None:
        """``approved_individuals=²`` on a mechanism is 422 naming the field, not a 500."""
        provider = signed_in("provider")
        csrf = _csrf(provider.get("/console/mechanisms").text)
        response = provider.post(
            "/console/mechanisms",
            data={"csrf": csrf, "kind": "GBA_SC", "reference": "GBA-X", "approved_individuals": "²"},
        )
        assert 422 == response.status_code, response.text[:300]
        assert 'id="approved_individuals-error"' in response.text


class TestForms:
    def test_a_bad_request_form_shows_errors_next_to_the_fields_and_writes_nothing(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """Each invalid access-request field gets an error linked to it, and no request is written."""
        client = signed_in("consumer")
        page = client.get(f"/console/datasets/{world.dataset}")
        assert 200 == page.status_code
        with app.state.sessionmaker() as session:
            before = session.scalar(sa.select(sa.func.count()).select_from(AccessRequest))
        district = {"columns": "district"}  # the form never asks for every column (minimisation)
        cases = [
            ({"purpose": "", "purpose_text": "Route planning for the bay"} | district, "purpose"),
            ({"purpose": "other", "purpose_text": "short"} | district, "purpose_text"),
            (
                {"purpose": "other", "purpose_text": "Route planning for the bay", "duration_days": "ten"}
                | district,
                "duration_days",
            ),
            (
                {"purpose": "other", "purpose_text": "Route planning for the bay", "destination": "XX"}
                | district,
                "destination",
            ),
            ({"purpose": "other", "purpose_text": "Route planning for the bay"}, "columns"),
            (
                {
                    "purpose": "other",
                    "purpose_text": "Route planning for the bay",
                    "columns": "no_such_column",
                },
                "columns",
            ),
        ]
        for data, field in cases:
            response = client.post(
                f"/console/datasets/{world.dataset}/request", data=data | {"csrf": _csrf(page.text)}
            )
            assert 422 == response.status_code, (field, response.text[:500])
            assert f'id="{field}-error"' in response.text, field
            assert f'aria-describedby="{field}-error"' in response.text, field
        with app.state.sessionmaker() as session:
            assert before == session.scalar(sa.select(sa.func.count()).select_from(AccessRequest))

    def test_rejecting_without_a_reason_is_refused_next_to_the_reason(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """Rejecting without a reason is refused beside the reason field, and the request stays pending."""
        provider = signed_in("provider")
        queue = provider.get("/console/requests")
        assert world.pending_request in queue.text
        response = provider.post(
            f"/console/requests/{world.pending_request}/reject",
            data={"csrf": _csrf(queue.text), "reason": ""},
        )
        assert 422 == response.status_code
        assert f'id="reason-{world.pending_request}-error"' in response.text
        with app.state.sessionmaker() as session:
            assert "under_provider_review" == session.get(AccessRequest, world.pending_request).state  # type: ignore[union-attr]

    def test_an_oversized_form_is_refused_whatever_its_content_length_says(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """A form over the size limit is refused with 413 even when its Content-Length claims it is small."""
        provider = signed_in("provider")
        csrf = _csrf(provider.get("/console/requests").text)
        body = urlencode({"csrf": csrf, "reason": "x" * 70_000}).encode()
        response = provider.post(
            f"/console/requests/{world.pending_request}/approve",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "10"},
        )
        assert 413 == response.status_code
        with app.state.sessionmaker() as session:
            assert "under_provider_review" == session.get(AccessRequest, world.pending_request).state  # type: ignore[union-attr]

    def test_a_bad_transfer_filter_is_named(self, signed_in: SignedIn) -> None:
        """An invalid transfer-log date filter is refused with an error on the since field."""
        officer = signed_in("compliance_officer")
        response = officer.get("/console/compliance/transfers?since=yesterday")
        assert 422 == response.status_code
        assert 'id="since-error"' in response.text


class TestLanguages:
    def test_switching_language_keeps_the_page_and_uses_the_legal_vocabulary(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """Switching language returns to the same page and uses each language's legal terms."""
        client = signed_in("consumer")
        path = f"/console/datasets/{world.dataset}"
        for code, words in (
            ("zh-Hant", ["數據目錄", "個人信息", "許可"]),
            ("zh-Hans", ["数据目录", "个人信息", "许可"]),
            ("en", ["Catalog", "personal information", "Licence"]),
        ):
            switched = client.get(f"/console/lang?to={code}&next={path}")
            assert path == switched.headers["location"]
            page = client.get(path)
            assert f'<html lang="{code}">' in page.text
            for word in words:
                assert word in page.text, (code, word)

    def test_the_language_switch_only_returns_to_local_pages(self, signed_in: SignedIn) -> None:
        """The language switch never redirects off-site; foreign targets fall back to the console home."""
        client = signed_in("consumer")
        for target in ("https://evil.example/", "//evil.example/", "/\\evil"):
            assert "/console/" == client.get(f"/console/lang?to=en&next={target}").headers["location"]

    def test_every_label_the_templates_use_has_all_three_languages(self) -> None:
        """Every label the templates and vocabularies use is translated into all three languages."""
        used = set()
        for template in TEMPLATES.glob("*.html"):
            text = template.read_text()
            used |= set(re.findall(r'\bt\(\s*"([^"]+)"', text)) | set(re.findall(r"\bt\(\s*'([^']+)'", text))
        # Labels built from a prefix and a code: every code the prefix is used with.
        from gbadz.vocabulary import AUTHORITIES, EVIDENCE_VARIANTS, MACAO_GROUNDS, SECTORS, SPI_CATEGORIES

        used = {k for k in used if not k.endswith(":")} | {
            f"onward:{o}" for o in ("none", "within_gba", "outside_gba")
        }
        used |= {f"authority:{a}" for a in AUTHORITIES} | {f"spi:{c}" for c in SPI_CATEGORIES}
        used |= {f"variant:{v}" for v in EVIDENCE_VARIANTS} | {f"sector:{s}" for s in SECTORS}
        used |= {f"ground:{g}" for g in MACAO_GROUNDS if g != "none"}
        used |= {f"date:{d}" for d in ("issued", "effective_date", "filing_date", "valid_to")}
        used |= {f"finding:{f}" for f in ("necessity_accepted", "foreign_pi_transit", "anonymised")}
        used |= {f"step:{s}" for s in ("provider", "compliance")} | {"role:exporter", "role:recipient"}
        used |= {
            f"obligation:{k}"
            for k in (
                "pipia",
                "notice_consent",
                "contract_filing",
                "dspdp_notification",
                "recipient_deletion",
            )
        }
        used |= {"open", "met", "suspended"}
        # Codes the templates translate through a variable.
        from gbadz.contract import Protection
        from gbadz.identity.people import PEOPLE_ROLES
        from gbadz.vocabulary import EVIDENCE_KINDS, JURISDICTIONS, OUTCOMES, PURPOSES

        used |= {*JURISDICTIONS, *OUTCOMES, *PURPOSES, *EVIDENCE_KINDS, *PEOPLE_ROLES, *Protection.__args__}
        used |= {"general", "important", "core", "pi", "spi", "no_pi", "mechanism", "exempt"}
        used |= {"submitted", "under_provider_review", "under_compliance_review", "approved", "rejected"}
        used |= {
            "active",
            "expired",
            "revoked",
            "draft",
            "proposed",
            "deprecated",
            "retired",
            "queued",
            "accepted",
        }
        missing = sorted(k for k in used if k not in CATALOG or set(CATALOG[k]) != set(LOCALES))
        assert [] == missing
        assert len(used) > 150


def test_people_get_clear_errors_for_bad_accounts(app: FastAPI, world: World) -> None:
    """Creating a person with a bad username, password or role names the field; a taken name conflicts."""
    from gbadz.errors import BadRequest, Conflict

    with app.state.sessionmaker.begin() as session:
        base = {"actor": "t", "org_id": world.startup_org, "display_name": "X", "role": "consumer"}
        cases = [
            (base | {"username": "ab", "password": "long enough password"}, "username"),
            (base | {"username": "fine-name", "password": "short"}, "password"),
            (base | {"username": "fine-name", "password": "long enough password", "role": "admin"}, "role"),
        ]
        for fields, name in cases:
            with pytest.raises(BadRequest, match=f"^{name}:"):
                people.create_user(session, **fields)  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            people.create_user(
                session, **base, username=world.people["consumer"].username, password="long enough password"
            )  # type: ignore[arg-type]


def test_sign_in_helper_reaches_the_role_home(world: World, browser_client: Callable[[], TestClient]) -> None:
    """Each signed-in role is sent from the console root to its own home page, which loads."""
    for role, home in (
        ("consumer", "/console/catalog"),
        ("provider", "/console/provider"),
        ("compliance_officer", "/console/compliance"),
    ):
        client = sign_in(browser_client(), world.people[role])
        assert home == client.get("/console/").headers["location"]
        assert 200 == client.get(home).status_code, role


def _approve_through_the_console(world: World, signed_in: SignedIn, *, determine: bool = True) -> None:
    """The provider's step, then (unless not ``determine``) the officer's determination."""
    for role in ("provider", "compliance_officer") if determine else ("provider",):
        reviewer = signed_in(role)
        queue = reviewer.get("/console/requests")
        assert world.pending_request in queue.text, role
        form = determination_form(world) if role == "compliance_officer" else {"reason": "ok"}
        answer = reviewer.post(
            f"/console/requests/{world.pending_request}/approve", data=form | {"csrf": _csrf(queue.text)}
        )
        assert 303 == answer.status_code, answer.text[:500]


@pytest.mark.fresh_world
def test_reviews_then_a_delivery_sent_twice_is_one_logged_transfer(
    world: World, signed_in: SignedIn, app: FastAPI
) -> None:
    """Console approvals are audited per person, and a delivery sent twice is one logged transfer."""
    from gbadz.translog.models import LogEntry

    _approve_through_the_console(world, signed_in)
    with app.state.sessionmaker() as session:
        request = session.get(AccessRequest, world.pending_request)
        assert request is not None
        assert "approved" == request.state
        # The audit trail names the people who decided, not just the console.
        actors = set(
            session.scalars(
                sa.select(AuditEvent.actor).where(
                    AuditEvent.subject_id == world.pending_request, AuditEvent.action.like("access_request.%")
                )
            )
        )
        for role in ("provider", "compliance_officer"):
            assert (
                f"{role}:user:{world.people[role].username} via gbadz-console@{world.people[role].org_id}"
                in actors
            )
    consumer = signed_in("consumer")
    page = consumer.get("/console/requests")
    action = re.search(r'action="(/console/grants/[^"]+/deliver)"', page.text)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert action is not None
    assert key is not None
    form = {"csrf": _csrf(page.text), "idempotency_key": key.group(1)}
    first = consumer.post(action.group(1), data=form)
    again = consumer.post(action.group(1), data=form)
    assert 200 == first.status_code, first.text[:500]
    entries = [re.search(r"entry (\d+) of the transfer log", r.text) for r in (first, again)]
    assert all(entries)
    assert entries[0].group(1) == entries[1].group(1)  # type: ignore[union-attr]
    grant_id = action.group(1).split("/")[3]
    with app.state.sessionmaker() as session:
        kinds = session.scalars(sa.select(LogEntry.kind).where(LogEntry.grant_id == grant_id)).all()
    # The determination, then one transfer; its second set of URLs logged.
    assert ["determination", "download", "reissue"] == sorted(kinds)
    # Signed URLs to the API, which decrypts the grant's sealed copy (ADR 0018): never the S3 server.
    assert f'href="{BASE}/api/v1/delivery-files/' in first.text
    assert 'href="http://127.0.0.1' not in first.text
    # The grant's own page (issue #19) offers the same button: one click, one logged transfer.
    own = consumer.get(f"/console/grants/{grant_id}")
    own_key = re.search(r'name="idempotency_key" value="([^"]+)"', own.text)
    assert own_key is not None
    form = {"csrf": _csrf(own.text), "idempotency_key": own_key.group(1)}
    twice = [consumer.post(action.group(1), data=form) for _ in range(2)]
    numbers = {re.search(r"entry (\d+) of the transfer log", r.text).group(1) for r in twice}  # type: ignore[union-attr]
    assert 1 == len(numbers)


@pytest.mark.fresh_world
def test_a_revoked_grant_gets_no_links_and_says_why(world: World, signed_in: SignedIn, app: FastAPI) -> None:
    """A grant the provider revokes in the console gets 410 and no links; its holder then attests deletion."""
    from gbadz.access.models import Grant

    _approve_through_the_console(world, signed_in)
    consumer = signed_in("consumer")
    page = consumer.get("/console/requests")
    action = re.search(r'action="(/console/grants/([^"/]+)/deliver)"', page.text)
    assert action is not None
    grant_id = action.group(2)
    provider = signed_in("provider")
    grants = provider.get("/console/requests")
    assert f'action="/console/grants/{grant_id}/revoke"' in grants.text
    revoke = f"/console/grants/{grant_id}/revoke"
    refused = provider.post(revoke, data={"csrf": _csrf(grants.text), "reason": ""})
    assert 422 == refused.status_code
    assert f'aria-describedby="reason-{grant_id}-error"' in refused.text
    done = provider.post(revoke, data={"csrf": _csrf(grants.text), "reason": "The provider withdrew consent"})
    assert 303 == done.status_code, done.text[:500]
    answer = consumer.post(action.group(1), data={"csrf": _csrf(page.text)})
    assert 410 == answer.status_code
    assert "the grant is revoked" in answer.text
    assert "X-Amz-Signature" not in answer.text
    assert "The provider withdrew consent" in answer.text  # the holder sees why
    attest = f"/console/grants/{grant_id}/deletion-attestation"
    assert f'action="{attest}"' in answer.text
    short = consumer.post(attest, data={"csrf": _csrf(page.text), "statement": "gone"})
    assert 422 == short.status_code
    assert f'id="statement-{grant_id}-error"' in short.text
    statement = "Every copy deleted from our storage and backups today"
    assert 303 == consumer.post(attest, data={"csrf": _csrf(page.text), "statement": statement}).status_code
    with app.state.sessionmaker() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        assert (statement, True) == (grant.deletion_statement, grant.deletion_attested_at is not None)
    assert f'action="{attest}"' not in consumer.get("/console/requests").text


class TestDetermination:
    @pytest.mark.fresh_world
    def test_an_incomplete_determination_is_refused_beside_its_field_and_keeps_what_was_entered(
        self, world: World, signed_in: SignedIn, app: FastAPI
    ) -> None:
        """Each missing or unusable part of a determination is named beside its field; a complete one approves."""
        _approve_through_the_console(world, signed_in, determine=False)
        officer = signed_in("compliance_officer")
        queue = officer.get("/console/requests")
        rid = world.pending_request
        assert "<legend>General regime</legend>" in queue.text
        assert "Sector requirement" not in queue.text  # no sector overlay on this dataset
        assert f'<option value="{world.mechanism}"' in queue.text
        assert f'id="pipia_date-{rid}" name="pipia_date" type="date"' in queue.text
        url, csrf = f"/console/requests/{rid}/approve", _csrf(queue.text)
        full = determination_form(world)
        cases = [
            (full | {"note": ""}, "note", 422),
            (full | {"evidence_id": ""}, "evidence_id", 422),
            (full | {"pipia_reference": ""}, "pipia_reference", 422),
            (full | {"pipia_date": "someday"}, "pipia_date", 422),
            (full | {"consent_reference": ""}, "consent_reference", 422),
        ]
        for data, field, status in cases:
            answer = officer.post(url, data=data | {"csrf": csrf})
            assert status == answer.status_code, (field, answer.text[:300])
            assert f'id="{field}-{rid}-error"' in answer.text, (field, _errors(answer.text))
            assert f'aria-describedby="{field}-{rid}-error"' in answer.text, field
            assert 'value="PIPIA-SZ-2026-042"' in answer.text or field == "pipia_reference"  # kept
        # Four eyes: the officer records a contract, and may not approve with it.
        registry = officer.get("/console/mechanisms")
        today = datetime.now(UTC).date()
        recorded = officer.post(
            "/console/mechanisms",
            data={
                "csrf": _csrf(registry.text),
                "exporter_org_id": world.provider_org,
                "recipient_org_id": world.startup_org,
                "kind": "GBA_SC",
                "reference": f"GBA-SC-OWN-{secrets.token_hex(3)}",
                "effective_date": (today - timedelta(days=5)).isoformat(),
                "filing_date": (today - timedelta(days=2)).isoformat(),
            },
        )
        assert 303 == recorded.status_code, recorded.text[:500]
        own = parse_qs(urlsplit(recorded.headers["location"]).query)["recorded"][0]
        assert f'<option value="{own}"' in officer.get("/console/requests").text
        answer = officer.post(url, data=determination_form(world, own) | {"csrf": csrf})
        assert 403 == answer.status_code
        assert f'id="evidence_id-{rid}-error"' in answer.text
        assert "cannot approve with it" in answer.text
        assert 303 == officer.post(url, data=full | {"csrf": csrf}).status_code
        with app.state.sessionmaker() as session:
            request = session.get(AccessRequest, rid)
            assert request is not None
            assert ("approved", "M12") == (request.state, request.decision["reviewed"]["rule_id"])
            assert ["provider", "compliance"] == [step["step"] for step in request.reviews]
        assert "reviewed as" in officer.get("/console/requests").text


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


class TestEvidenceRegistry:
    def test_a_provider_records_a_filing_uploads_its_document_and_withdraws_it(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """Recording names a missing field beside it; the document is kept with its SHA-256; withdrawal needs a reason."""
        provider = signed_in("provider")
        page = provider.get("/console/mechanisms")
        assert 200 == page.status_code
        assert "GBA-SC-440300-" in page.text  # the world's contract, parties by name where known
        csrf = _csrf(page.text)
        today = datetime.now(UTC).date()
        reference = f"GBA-SC-440300-P-{secrets.token_hex(3)}"
        item = {
            "csrf": csrf,
            "exporter_org_id": world.provider_org,
            "recipient_org_id": world.startup_org,
            "kind": "GBA_SC",
            "reference": reference,
            "effective_date": (today - timedelta(days=3)).isoformat(),
            "purposes": "trade_transport_academic_mfg_marketing",
        }
        missing = provider.post("/console/mechanisms", data=item)
        assert 422 == missing.status_code
        assert 'id="filing_date-error"' in missing.text
        assert f'value="{reference}"' in missing.text  # what was entered stays
        recorded = provider.post("/console/mechanisms", data=item | {"filing_date": today.isoformat()})
        assert 303 == recorded.status_code, recorded.text[:500]
        evidence_id = parse_qs(urlsplit(recorded.headers["location"]).query)["recorded"][0]
        upload = f"/console/mechanisms/{evidence_id}/document"
        odd = provider.post(
            f"{upload}?csrf={csrf}",
            data={"csrf": csrf},
            files={"document": ("f.pdf", PDF, "application/pdf\u00e9")},
        )
        assert (422, True) == (odd.status_code, "Choose the filed document" in odd.text)  # never forwarded
        sent = provider.post(
            f"{upload}?csrf={csrf}",
            data={"csrf": csrf},
            files={"document": ("filing.pdf", PDF, "application/pdf")},
        )
        assert 303 == sent.status_code, sent.text[:500]
        listed = provider.get("/console/mechanisms")
        assert hashlib.sha256(PDF).hexdigest() in listed.text
        fetched = provider.get(upload)
        assert PDF == fetched.content
        assert fetched.headers["content-disposition"].startswith("attachment;")
        assert "nosniff" == fetched.headers["x-content-type-options"]
        again = provider.post(
            f"{upload}?csrf={csrf}",
            data={"csrf": csrf},
            files={"document": ("other.pdf", PDF + b" ", "application/pdf")},
        )
        assert 409 == again.status_code
        assert "already holds its document" in again.text
        withdraw = f"/console/mechanisms/{evidence_id}/withdraw"
        refused = provider.post(withdraw, data={"csrf": csrf, "reason": ""})
        assert 422 == refused.status_code
        assert f'id="reason-{evidence_id}-error"' in refused.text
        assert (
            303
            == provider.post(
                withdraw, data={"csrf": csrf, "reason": "Replaced by a new contract"}
            ).status_code
        )
        assert "Replaced by a new contract" in provider.get("/console/mechanisms").text

    def test_an_upload_is_bounded_and_needs_the_forms_token(self, world: World, signed_in: SignedIn) -> None:
        """An upload over 20 MiB is refused with 413; a forged token is refused before the body is read."""
        provider = signed_in("provider")
        upload = f"/console/mechanisms/{world.mechanism}/document"
        csrf = _csrf(provider.get("/console/mechanisms").text)
        big = b"0" * (20 * 1024 * 1024 + 70 * 1024)
        # A forged token with a body over the limit: 403, not 413 (the body was never parsed).
        forged = provider.post(
            f"{upload}?csrf=forged",
            data={"csrf": csrf},
            files={"document": ("a.pdf", big, "application/pdf")},
        )
        assert 403 == forged.status_code
        too_big = provider.post(
            f"{upload}?csrf={csrf}",
            data={"csrf": csrf},
            files={"document": ("big.pdf", big, "application/pdf")},
        )
        assert 413 == too_big.status_code
        # Ids that are not one path segment look missing, never a 500 or another route.
        for bad in ("%00", "x%3Fy", "%0d%0a"):
            answer = provider.post(
                f"/console/mechanisms/{bad}/withdraw", data={"csrf": csrf, "reason": "no reason"}
            )
            assert 404 == answer.status_code, (bad, answer.status_code)


class TestObligations:
    def test_the_exporter_meets_the_preconditions_before_data_leaves(
        self, world: World, signed_in: SignedIn
    ) -> None:
        """An exempt Mainland grant delivers nothing until its exporter records the PIPIA and the notice and consent."""
        consumer = signed_in("consumer")
        page = consumer.get(f"/console/datasets/{world.dataset}")
        asked = consumer.post(
            f"/console/datasets/{world.dataset}/request",
            data={
                "csrf": _csrf(page.text),
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Demand forecasting without the GBA contract",
                "columns": GRANTED,
                "duration_days": "30",
            },
        )
        assert 303 == asked.status_code, asked.text[:500]
        # Exempt (Provisions 2024 Art.5(4)): granted at once, with the exporter's duties open.
        assert "/console/requests?created=" in asked.headers["location"]
        provider = signed_in("provider")
        mine = consumer.get("/console/requests")
        grant = re.search(
            r'<tr id="grant-([^"]+)">\s*<th scope="row"><a href="[^"]+">[^<]+</a></th>\s*<td>active',
            mine.text,
        )
        assert grant is not None
        deliver = f"/console/grants/{grant.group(1)}/deliver"
        waiting = consumer.post(deliver, data={"csrf": _csrf(mine.text)})
        assert 409 == waiting.status_code
        assert "no data leaves before" in waiting.text
        duties = provider.get("/console/obligations")
        assert 200 == duties.status_code
        owed = re.findall(r'action="/console/obligations/([^"/]+)/met"', duties.text)
        assert len(owed) >= 2
        short = provider.post(
            f"/console/obligations/{owed[0]}/met", data={"csrf": _csrf(duties.text), "reference": "x"}
        )
        assert 422 == short.status_code
        assert f'id="reference-{owed[0]}-error"' in short.text
        pipia = re.search(r'id="date-([^"]+)" name="date" type="date"', duties.text)
        assert pipia is not None  # a PIPIA names the date it was completed
        undated = provider.post(
            f"/console/obligations/{pipia.group(1)}/met",
            data={"csrf": _csrf(duties.text), "reference": "PIPIA-7"},
        )
        assert 422 == undated.status_code
        assert f'id="date-{pipia.group(1)}-error"' in undated.text
        done_on = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
        for duty in owed:
            met = provider.post(
                f"/console/obligations/{duty}/met",
                data={"csrf": _csrf(duties.text), "reference": f"REC-{duty[:6]}", "date": done_on},
            )
            assert 303 == met.status_code, met.text[:500]
        assert 200 == consumer.post(deliver, data={"csrf": _csrf(mine.text)}).status_code
        theirs = consumer.get("/console/obligations?state=open")
        assert "the recipient deletes every copy" in theirs.text
        assert 'action="/console/obligations/' not in theirs.text  # deletion is attested on the grant


def test_an_expired_code_is_refused(
    world: World, browser_client: Callable[[], TestClient], app: FastAPI
) -> None:
    """An expired authorization code is refused as invalid_grant even with the right verifier."""
    from gbadz.identity.models import AuthorizationCode

    client = browser_client()
    person = world.people["consumer"]
    verifier, challenge = _pkce()
    code = _code(client, _authorize_url(challenge), person.username, person.password)
    with app.state.sessionmaker.begin() as session:
        row = session.get(AuthorizationCode, hashlib.sha256(code.encode()).hexdigest())
        assert row is not None
        row.expires_at = row.expires_at.replace(year=2000)
    status, body = _exchange(client, code, verifier)
    assert (400, "invalid_grant") == (status, body["error"])


def _officer_card(decision: dict[str, Any], items: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The determination form for one request with this decision, and the review card it renders."""
    from types import SimpleNamespace

    from gbadz.console.routes import _review_form
    from gbadz.console.web import env, helpers
    from gbadz.law.rules import default_rules

    request = {
        "id": "r1",
        "dataset_id": "d1",
        "provider_org_id": "exporter",
        "requester_org_id": "recipient",
        "purpose": "other",
        "purpose_text": "A purpose",
        "destination": "HK",
        "columns": [],
        "duration_days": 30,
        "state": "under_compliance_review",
        "reviews": [],
        "decision": {"legal_basis": "a basis", "evidence_required": []} | decision,
    }
    holder = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(rules=default_rules())))
    form = _review_form(holder, request, items, date(2026, 12, 1))
    person = SimpleNamespace(role="compliance_officer", display_name="O", org_name="Office", org_id="office")
    html = env.get_template("requests.html").render(
        **helpers("en"),
        t=lambda text, **params: text.format(**params) if params else text,
        signed=SimpleNamespace(person=person, csrf="token"),
        path="/console/requests",
        query="",
        locale="en",
        locales={},
        request=None,
        queue=[request],
        forms={"r1": form},
        requests=[],
        grants=[],
        created=None,
        errors={},
        error_for=None,
        values={},
        form_key="k",
        macao_grounds=["consent", "contract"],
        placed=False,
    )
    return form, html


class TestReviewForm:
    PAIR: ClassVar[dict[str, Any]] = {
        "exporter_org_id": "exporter",
        "recipient_org_id": "recipient",
        "withdrawn_at": None,
        "purposes": [],
        "dataset_ids": [],
        "valid_to": None,
        "variant": None,
        "issued": "2026-10-01",
        "effective_date": None,
        "filing_date": None,
        "authority_name": None,
    }

    def test_a_sector_rule_adds_a_column_of_valid_sector_approvals(self) -> None:
        """An M2 decision gets a sector column listing only valid SECTOR items of the pair, beside the general one."""
        items = [
            self.PAIR | {"id": "contract", "kind": "GBA_SC", "reference": "GBA-1"},
            self.PAIR | {"id": "sector", "kind": "SECTOR", "reference": "SEC-1", "authority_name": "Health"},
            self.PAIR | {"id": "lapsed", "kind": "SECTOR", "reference": "SEC-0", "valid_to": "2026-01-01"},
            self.PAIR | {"id": "gone", "kind": "GBA_SC", "reference": "GBA-0", "withdrawn_at": "2026-11-01"},
            self.PAIR | {"id": "elsewhere", "kind": "GBA_SC", "reference": "GBA-X", "recipient_org_id": "x"},
            self.PAIR | {"id": "narrow", "kind": "GBA_SC", "reference": "GBA-N", "purposes": ["emergency"]},
        ]
        facts = {"origin": "CN_GBA9", "has_pi": True, "sector_overlay": "health"}
        form, html = _officer_card({"outcome": "HUMAN_REVIEW", "rule_id": "M2", "facts": facts}, items)
        assert (["contract"], ["sector"]) == (
            [m["id"] for m in form["evidence"]],
            [m["id"] for m in form["sector"]],
        )
        assert (True, True, []) == (form["sector_applies"], form["needs_pipia"], form["basis"])
        assert [
            "General regime",
            "Sector requirement",
            "PIPIA, notice and consent (PIPL Arts.39 and 55)",
        ] == (re.findall(r"<legend>([^<]+)</legend>", html))
        assert 'name="sector_evidence_id"' in html
        assert "SEC-0" not in html
        assert "GBA-0" not in html

    def test_a_human_review_offers_its_bases_and_an_awaited_finding_its_field(self) -> None:
        """A HUMAN_REVIEW the rules let a person determine gets a basis picker; an awaited finding its own field."""
        from gbadz.law.rules import default_rules

        rules = default_rules()
        facts = {"origin": "HK", "has_pi": True, "sector_overlay": "none"}
        form, html = _officer_card({"outcome": "HUMAN_REVIEW", "rule_id": "V1", "facts": facts}, [])
        assert list(rules.rule("V1").determinable_as) == [b["rule_id"] for b in form["basis"]]
        assert (False, False) == (form["sector_applies"], form["needs_pipia"])
        assert 'name="basis_rule_id"' in html
        assert "Sector requirement" not in html
        assert "No valid item is on file for this exporter and recipient." in html
        _, html = _officer_card(
            {"outcome": "HUMAN_REVIEW", "rule_id": "M8p", "awaits": "necessity_accepted"}, []
        )
        assert 'type="checkbox" id="necessity_accepted-r1" name="necessity_accepted"' in html
        assert 'name="basis_rule_id"' not in html
        _, html = _officer_card(
            {"outcome": "HUMAN_REVIEW", "rule_id": "O4", "awaits": "macao_art20_ground"}, []
        )
        assert '<select id="macao_art20_ground-r1" name="macao_art20_ground"' in html


def _grants_table(grants: list[dict[str, Any]]) -> str:
    """The requests page as a startup sees it, with these grants (the API's answers)."""
    from types import SimpleNamespace

    from gbadz.console.web import env, helpers

    person = SimpleNamespace(role="consumer", display_name="S", org_name="Startup", org_id="recipient")
    return env.get_template("requests.html").render(
        **helpers("en"),
        t=lambda text, **params: text.format(**params) if params else text,
        signed=SimpleNamespace(person=person, csrf="token"),
        path="/console/requests",
        query="",
        locale="en",
        locales={},
        request=None,
        queue=[],
        forms={},
        requests=[],
        grants=grants,
        created=None,
        errors={},
        error_for=None,
        values={},
        form_key="k",
        macao_grounds=[],
        placed=False,
    )


class TestAnalysisGrantsInTheConsole:
    """Issue #18: an analysis grant is reviewed with its DP finding and never offers a copy."""

    GRANT: ClassVar[dict[str, Any]] = {
        "id": "g1",
        "dataset_id": "d1",
        "status": "active",
        "outcome": "EXEMPT",
        "rule_id": "MA3",
        "legal_basis": "PIPL Art.4, Art.73(4)",
        "expires_at": "2027-01-01T00:00:00+00:00",
        "revoked_reason": None,
        "suspended_reason": None,
        "copies_deleted_at": None,
        "deletion_attested_at": None,
    }

    def test_an_awaited_dp_finding_gets_its_checkbox_and_reference(self) -> None:
        """MA2 waits for the DP finding: the card offers it and its evaluation reference, and no PIPIA."""
        facts = {"origin": "CN_GBA9", "has_pi": True, "release": "dp_aggregate", "sector_overlay": "none"}
        form, html = _officer_card(
            {"outcome": "HUMAN_REVIEW", "rule_id": "MA2", "awaits": "dp_release_accepted", "facts": facts}, []
        )
        assert 'type="checkbox" id="dp_release-r1" name="dp_release"' in html
        assert 'name="dp_evaluation_ref"' in html
        assert form["needs_pipia"] is False

    def test_the_officers_form_sends_the_finding(self) -> None:
        """The ticked finding and its reference reach the API as findings.dp_release / dp_evaluation_ref."""
        from starlette.datastructures import FormData

        from gbadz.console.routes import ApiFailed, _determination_body, review_errors

        body = _determination_body(
            FormData([("note", "evaluated"), ("dp_release", "on"), ("dp_evaluation_ref", " DP-1 ")])
        )
        assert {"dp_release": True, "dp_evaluation_ref": "DP-1"} == body["findings"]
        failure = ApiFailed(409, "findings.dp_release: rule MA2 waits", "findings.dp_release")
        assert "rule MA2 waits" == review_errors(failure)["dp_release"]

    def test_a_dp_finding_without_its_evaluation_is_shown_beside_the_reference(self) -> None:
        """The box ticked, no reference: the form sends what was given; the API's 422 naming
        findings.dp_evaluation_ref comes back beside the reference field, as a 422, not a 500."""
        from starlette.datastructures import FormData

        from gbadz.console.routes import ApiFailed, _determination_body, _status, review_errors

        body = _determination_body(FormData([("note", "evaluated"), ("dp_release", "on")]))
        assert {"dp_release": True} == body["findings"]
        failure = ApiFailed(
            422,
            "findings.dp_evaluation_ref: a DP release is anonymised only with an evaluation attached",
            "findings.dp_evaluation_ref",
        )
        errors = review_errors(failure)
        assert errors["dp_evaluation_ref"].startswith("a DP release is anonymised"), errors
        assert 422 == _status(failure)

    def test_an_analysis_grant_offers_no_download(self) -> None:
        """The startup's grant row: a copy grant offers links and a sharing profile; an analysis grant neither."""
        # GrantRead carries `deliverable` (an active copy grant with a published version).
        copy = _grants_table([self.GRANT | {"kind": "copy", "current_version": 1, "deliverable": True}])
        assert "Get download links" in copy
        assert "/console/grants/g1/sharing-profile" in copy
        analysis = _grants_table([self.GRANT | {"kind": "analysis"}])
        assert "Get download links" not in analysis
        assert "sharing-profile" not in analysis
        assert "Analysis grant: aggregates only, no copy of the rows" in analysis
