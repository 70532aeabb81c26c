"""The console's pages: server-rendered, one per task, each calling the JSON API as the signed-in person.

The console is a backend-for-frontend: it keeps the person's access token server-side and
calls the same ``/api/v1`` routes a program would, in process, so every rule (visibility,
roles, licences, the transfer engine, validation) is the API's, enforced once. The catalog's
search and a dataset's page, read most, call what those two routes call instead (the route's
token check, then its read: :meth:`Api.search`, :meth:`Api.dataset`). Pages of another role
answer 404, as a hidden dataset does.
"""

from __future__ import annotations

import asyncio
import hmac
import json as jsonlib
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from gbadz import db
from gbadz.catalog import reads, views
from gbadz.catalog.search import SearchQuery
from gbadz.console import charts, session
from gbadz.console.i18n import LOCALES, translate
from gbadz.console.inprocess import InProcess
from gbadz.console.localize import api_message, validation_message
from gbadz.console.session import LOGIN_COOKIE, SESSION_COOKIE, Signed
from gbadz.console.web import (
    LANG_COOKIE,
    SECURITY_HEADERS,
    FormTooLarge,
    FormUnreadable,
    cards,
    locale_of,
    read_form,
    read_multipart,
    render,
)
from gbadz.deps import Rules
from gbadz.errors import GbadzError
from gbadz.identity import auth
from gbadz.identity.oauth import CONSOLE_CALLBACK, CONSOLE_CLIENT_ID, GbadzAuthorizationServer
from gbadz.identity.tokens import Principal
from gbadz.vocabulary import (
    AUTHORITIES,
    EVIDENCE_KINDS,
    EVIDENCE_VARIANTS,
    JURISDICTIONS,
    MACAO_GROUNDS,
    OUTCOMES,
    PURPOSES,
    SECTORS,
    SPI_CATEGORIES,
)

router = APIRouter(prefix="/console", include_in_schema=False)
MAX_FORM_BYTES = 64 * 1024
HOME = {
    "consumer": "/console/catalog",
    "provider": "/console/provider",
    "compliance_officer": "/console/compliance",
    "admin": "/console/admin/organizations",
}
CATEGORIES = ("general", "important", "core")


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class PageNotFound(Exception):
    """Missing, hidden, or another role's: all look the same."""


class FormExpired(Exception):
    """The CSRF token of a form did not match the session's."""


_T = TypeVar("_T")


class ApiFailed(Exception):
    def __init__(self, status: int, detail: Any, field: str | None = None, error: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.field = field
        self.error = error  # the API's error class (``QueryRefused``, ``BudgetExhausted``, ...)


def _sessions(request: Request) -> Any:
    return request.app.state.sessionmaker


def _cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, secure=True, httponly=True, samesite="lax", path="/")


# -- who is signed in ----------------------------------------------------------------------
def _tokens(app: FastAPI) -> session.SessionTokens:
    tokens: session.SessionTokens | None = getattr(app.state, "console_tokens", None)
    if tokens is None:
        tokens = app.state.console_tokens = session.SessionTokens()
    return tokens


def _live(app: FastAPI) -> session.LiveSessions:
    live: session.LiveSessions | None = getattr(app.state, "console_live", None)
    if live is None:
        # As long as a revocation takes to reach this replica (see LiveSessions).
        live = session.LiveSessions(ttl_s=app.state.authenticator.revocations.refresh_s)
        live.watch(app.state.sessionmaker)
        app.state.console_live = live
    return live


_REREADS: set[asyncio.Task[None]] = set()


def _reread(request: Request, value: str | None, live: session.LiveSessions, id_hash: str) -> None:
    """Read a remembered session again in a worker thread while pages keep using it (within
    its time in memory): under load, every page of the session waiting for one read when it
    ran out made the slowest pages (issue #19). An ended session is forgotten."""
    settings, sessions = request.app.state.settings, _sessions(request)

    async def read() -> None:
        try:
            if await run_in_threadpool(session.load, sessions, settings.console, value, live) is None:
                live.forget(id_hash)
        # Whatever failed, the first page after its time in memory reads it again and answers it.
        except Exception:  # noqa: BLE001, S110
            pass
        finally:
            live.reread(id_hash)

    task = asyncio.get_running_loop().create_task(read())
    _REREADS.add(task)
    task.add_done_callback(_REREADS.discard)


async def signed_in(request: Request) -> Signed:
    settings = request.app.state.settings
    value = request.cookies.get(SESSION_COOKIE)
    live = _live(request.app)
    # A session read moments ago needs no worker thread; any other is read in one.
    signed = session.remembered(live, value)
    if signed is None:
        signed = await run_in_threadpool(session.load, _sessions(request), settings.console, value, live)
    elif live.due(signed.id_hash):
        _reread(request, value, live, signed.id_hash)
    if signed is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # After signing in, a GET comes back to its page; a form's target cannot be replayed.
        raise SignInRequired(target if request.method == "GET" else "/console/")
    tokens = _tokens(request.app)
    entry = tokens.get(signed.id_hash)
    if entry is None:
        # Minted from the live session, never read from the database (issue #20 item 7).
        server: GbadzAuthorizationServer = request.app.state.authorization_server
        person = signed.person
        token = server.person_token_for(person.username, person.org_id, person.role)
        entry = tokens.put(signed.id_hash, token["access_token"], int(token["expires_in"]))
    signed = Signed(signed.id_hash, signed.person, signed.csrf, entry[0], entry[1])
    request.state.signed = signed
    return signed


def role(*roles: str) -> Any:
    async def dependency(request: Request) -> Signed:
        signed = await signed_in(request)
        if signed.person.role not in roles:
            raise PageNotFound
        return signed

    return Depends(dependency)


Anyone = Annotated[Signed, role("consumer", "provider", "compliance_officer")]
Consumer = Annotated[Signed, role("consumer")]
Provider = Annotated[Signed, role("provider")]
Reviewer = Annotated[Signed, role("provider", "compliance_officer")]
Officer = Annotated[Signed, role("compliance_officer")]
#: Whoever is signed in, administrators included (signing out, the home redirect): an
#: administrator sees no participant page (``Anyone``) and no participant sees theirs.
Everyone = Annotated[Signed, role("consumer", "provider", "compliance_officer", "admin")]
Administrator = Annotated[Signed, role("admin")]


async def form_of(request: Request, signed: Signed) -> FormData:
    form = await read_form(request, MAX_FORM_BYTES)
    if not hmac.compare_digest(str(form.get("csrf") or ""), signed.csrf):
        raise FormExpired
    return form


_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,200}")
# ASCII digits only: str.isdigit() is true for "²" (which int() refuses) and for Arabic-Indic or
# full-width digits (which int() reads); neither is what a form field of whole days means.
_WHOLE = re.compile(r"[0-9]{1,9}")


def _q(value: str) -> str:
    """A path parameter as one API path segment; an id no record can have looks missing."""
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise PageNotFound
    return quote(value, safe="")


# -- the API, as the signed-in person --------------------------------------------------------
def in_process(app: FastAPI) -> InProcess:
    """One caller per app that calls the app itself over ASGI, taking no second admission slot
    (:mod:`gbadz.console.inprocess`)."""
    caller: InProcess | None = getattr(app.state, "console_http", None)
    if caller is None:
        caller = app.state.console_http = InProcess(app, app.state.settings.oauth.issuer)
    return caller


class Api:
    def __init__(self, request: Request, signed: Signed) -> None:
        self.request = request
        self.headers = {"Authorization": f"Bearer {signed.token}"}
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            self.headers["X-Request-ID"] = request_id

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        return await in_process(self.request.app).request(method, path, headers=headers, **kwargs)

    async def json(self, method: str, path: str, *, refusals: bool = False, **kwargs: Any) -> Any:
        """The API's answer; 403/404 look missing, unless ``refusals``: then a 403 is a message
        for the form (four eyes, not the exporter) while a 404 still looks missing."""
        response = await self.call(method, path, **kwargs)
        if response.status_code >= 400:
            raise self.refusal(response.status_code, _body(response), refusals=refusals)
        return response.json()

    def refusal(self, status: int, body: dict[str, Any], *, refusals: bool = False) -> Exception:
        """What a page does with the API's refusal (``body`` in the API's error shape)."""
        if status == 403 and refusals:
            return ApiFailed(403, body.get("detail"), body.get("field"), body.get("error"))
        if status in (403, 404):
            return PageNotFound()
        if status == 401:
            return SignInRequired(self.request.url.path if self.request.method == "GET" else "/console/")
        return ApiFailed(status, body.get("detail"), body.get("field"), body.get("error"))

    async def search(self, query: SearchQuery) -> tuple[dict[str, Any], dict[Any, Any] | None]:
        """``GET /api/v1/datasets`` as the person, without the round trip through the app, and
        the index snapshot's memo when the items are its rows (:attr:`Page.memo`).

        The catalog page is the console's most read page, and the round trip (the middleware
        stack again, routing, validating the query, the JSON written and parsed again) cost
        as much as the search itself (issue #19). This takes the route's own steps: the
        person's token authorised by the API's authenticator for the route's scope (a revoked
        token, a disabled person or organisation, a missing scope are refused the same way),
        then the same read (:meth:`ReadPath.search`: visibility by the person's organisation),
        and the same document the API writes as JSON. The query is built from the page's own
        checked filters, each a value the API's validation accepts.
        """
        path = self.request.app.state.catalog_read_path
        found = await self._direct(lambda principal: path.search(principal.org_id, query))
        if isinstance(found, bytes):
            return jsonlib.loads(found), None
        return views.page_document(found), found.memo

    async def dataset(self, dataset_id: str) -> dict[str, Any]:
        """``GET /api/v1/datasets/{id}`` as the person, without the round trip: as :meth:`search`,
        the route's own steps (authorise, then :meth:`ReadPath.dataset`, the page the API
        answers); a hidden or missing dataset looks missing."""
        path = self.request.app.state.catalog_read_path
        _q(dataset_id)  # an id no record can have looks missing, as in a path
        body, _etag, _contract_etag = await self._direct(
            lambda principal: path.dataset(principal.org_id, dataset_id)
        )
        document: dict[str, Any] = jsonlib.loads(body)
        return document

    async def _direct(self, read: Callable[[Principal], Awaitable[_T]]) -> _T:
        """``read`` as the person, after their token is authorised as the API's catalog read
        routes authorise theirs; what the API's exception handlers would answer is raised as the
        page's refusal instead (a refusal, text the database refuses, a busy pool)."""
        authenticator = self.request.app.state.authenticator
        try:
            with db.pool_busy_refused():
                principal = await auth.authorize(
                    authenticator, self.headers["Authorization"], (reads.READ_SCOPE,)
                )
                return await read(principal)
        except GbadzError as exc:
            raise self.refusal(
                exc.status_code, {"detail": exc.detail, "field": exc.field, "error": exc.error}
            ) from None
        except RequestValidationError as exc:  # a NUL in a cursor's key, refused by gbadz.db
            detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
            raise ApiFailed(422, detail, None, "RequestValidationError") from None


def _body(response: httpx.Response) -> dict[str, Any]:
    """An error answer's JSON body (our error shape), or its status when it has none."""
    try:
        body = response.json()
    except ValueError:
        return {"detail": f"the service answered {response.status_code}"}
    return body if isinstance(body, dict) else {"detail": str(body)}


def field_errors(failure: ApiFailed, fields: set[str]) -> dict[str, str]:
    """The API's complaint, placed next to the form field it names (else at the top of the form)."""
    errors: dict[str, str] = {}
    if isinstance(failure.detail, list):
        for item in failure.detail:
            loc = [str(part) for part in item.get("loc", [])]
            name = next((part for part in reversed(loc) if part in fields), "form")
            errors.setdefault(name, validation_message(item))
    elif failure.field in fields:
        detail = str(failure.detail).removeprefix(f"{failure.field}: ")
        errors[str(failure.field)] = api_message(detail, failure.error)
    else:
        errors["form"] = api_message(failure.detail, failure.error)
    return errors


# -- signing in and out ----------------------------------------------------------------------
@router.get("/login")
async def login(request: Request, next: str | None = None) -> Response:
    state, challenge = await run_in_threadpool(session.start_login, _sessions(request), next or "/console/")
    issuer = request.app.state.settings.oauth.issuer
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CONSOLE_CLIENT_ID,
            "redirect_uri": issuer + CONSOLE_CALLBACK,
            "scope": "catalog:read datasets:publish access:request access:review transfers:audit admin",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"/oauth/authorize?{query}", status_code=303)
    _cookie(response, LOGIN_COOKIE, state, session.LOGIN_TTL_S)
    return response


@router.get("/callback")
async def callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not state or not expected or not hmac.compare_digest(state, expected):
        return error_page(
            request,
            400,
            "Sign-in failed",
            "This sign-in was not started here, or it expired. Please sign in again.",
        )
    pending = await run_in_threadpool(session.take_login, _sessions(request), state)
    if pending is None or error or not code:
        return error_page(
            request, 400, "Sign-in failed", "The sign-in expired or was refused. Please sign in again."
        )
    issuer = request.app.state.settings.oauth.issuer
    exchanged = await in_process(request.app).request(
        "POST",
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": issuer + CONSOLE_CALLBACK,
            "client_id": CONSOLE_CLIENT_ID,
            "code_verifier": pending.code_verifier,
        },
    )
    if exchanged.status_code != 200:
        return error_page(
            request, 400, "Sign-in failed", "The sign-in code was not accepted. Please sign in again."
        )
    token = exchanged.json()
    principal = await request.app.state.authenticator.authenticate_async(f"Bearer {token['access_token']}")
    user_id = await run_in_threadpool(session.user_id, _sessions(request), principal.subject)
    value = await run_in_threadpool(
        session.open_session, _sessions(request), request.app.state.settings.console, user_id
    )
    _tokens(request.app).put(session.digest(value), token["access_token"], int(token["expires_in"]))
    response = RedirectResponse(pending.next_path, status_code=303)
    _cookie(response, SESSION_COOKIE, value, request.app.state.settings.console.session_ttl_s)
    response.delete_cookie(LOGIN_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
    return response


@router.post("/logout")
async def logout(request: Request, signed: Everyone) -> Response:
    await form_of(request, signed)
    await run_in_threadpool(session.close, _sessions(request), signed.id_hash, signed.person)
    _tokens(request.app).forget(signed.id_hash)
    _live(request.app).forget(signed.id_hash)
    response = RedirectResponse("/console/signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax", path="/")
    return response


@router.get("/signed-out")
async def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html", signed=None)


@router.get("/lang")
async def choose_language(request: Request, to: str = "en", next: str = "/console/") -> Response:
    response = RedirectResponse(session.safe_next(next), status_code=303)
    if to in LOCALES:
        response.set_cookie(LANG_COOKIE, to, max_age=365 * 86400, secure=True, samesite="lax", path="/")
    return response


@router.get("/")
async def home(request: Request, signed: Everyone) -> Response:
    return RedirectResponse(HOME[signed.person.role], status_code=303)


# -- catalog ---------------------------------------------------------------------------------
@router.get("/catalog")
async def catalog(request: Request, signed: Anyone) -> Response:
    params = request.query_params
    filters = {
        "q": params.get("q", "")[:200],
        "category": params.get("category", "") if params.get("category") in CATEGORIES else "",
        "origin": params.get("origin", "") if params.get("origin") in JURISDICTIONS else "",
        "has_pi": params.get("has_pi", "") if params.get("has_pi") in ("true", "false") else "",
        "purpose": params.get("purpose", "") if params.get("purpose") in PURPOSES else "",
    }
    query = SearchQuery(
        q=filters["q"] or None,
        origin=(filters["origin"],) if filters["origin"] else (),
        category=(filters["category"],) if filters["category"] else (),
        has_pi={"true": True, "false": False}.get(filters["has_pi"]),
        purpose=filters["purpose"] or None,
        cursor=params.get("cursor", "")[:512] or None,
    )
    errors: dict[str, str] = {}
    memo = None
    try:
        page, memo = await Api(request, signed).search(query)
    except ApiFailed as failure:
        errors = field_errors(failure, set(filters) | {"cursor"})
        page = {"items": [], "total": 0, "next_cursor": None}
    next_link = None
    if page.get("next_cursor"):
        next_link = "/console/catalog?" + urlencode(
            {k: v for k, v in filters.items() if v} | {"cursor": page["next_cursor"]}
        )
    return render(
        request,
        "catalog.html",
        status_code=422 if errors else 200,
        signed=signed,
        filters=filters,
        page=page,
        cards=cards(locale_of(request), page["items"], memo),
        next_link=next_link,
        errors=errors,
        categories=CATEGORIES,
        jurisdictions=JURISDICTIONS,
        purposes=PURPOSES,
    )


async def _dataset_page(
    request: Request, signed: Signed, dataset_id: str, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    dataset = await api.dataset(dataset_id)
    versions: list[dict[str, Any]] = []
    report = None
    if dataset.get("latest"):  # none until a first version is published: nothing to list
        versions = await api.json("GET", f"/api/v1/datasets/{_q(dataset_id)}/versions")
        detail = await api.json(
            "GET", f"/api/v1/datasets/{_q(dataset_id)}/versions/{dataset['latest']['version']}"
        )
        report = detail.get("quality_report")
    context = {"assessment": None, "errors": {}, "values": {}} | extra
    return render(
        request,
        "dataset.html",
        status_code=status_code,
        signed=signed,
        dataset=dataset,
        versions=versions,
        report=report,
        purposes=PURPOSES,
        jurisdictions=JURISDICTIONS,
        **context,
    )


@router.get("/datasets/{dataset_id}")
async def dataset_page(request: Request, dataset_id: str, signed: Anyone) -> Response:
    return await _dataset_page(request, signed, dataset_id)


def _ask(form: FormData) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": str(form.get("purpose") or ""),
        "columns": [str(c) for c in form.getlist("columns")],
        "gba_sc_opt_in": form.get("gba_sc_opt_in") == "on",
    }
    if form.get("destination"):
        body["destination"] = str(form.get("destination"))
    if form.get("kind"):  # copy or analysis (the API names any other value)
        body["kind"] = str(form.get("kind"))
    if body.get("kind") == "analysis":  # an analysis covers the contract's dimensions and measures
        body["columns"] = []
    return body


#: A copy asked with no column ticked: the form never means "every column" (data minimisation).
NO_COLUMNS = "Tick the columns you need: the ones without personal information are ticked to start with."


def _no_columns(body: dict[str, Any]) -> dict[str, str]:
    # Only a copy needs columns; another kind is the API's to name (analysis, or a wrong value).
    return {"columns": NO_COLUMNS} if body.get("kind", "copy") == "copy" and not body["columns"] else {}


ASK_FIELDS = {
    "purpose",
    "columns",
    "destination",
    "dest",
    "purpose_text",
    "duration_days",
    "onward_transfer",
    "gba_sc_opt_in",
    "kind",
}


@router.post("/datasets/{dataset_id}/assess")
async def assess(request: Request, dataset_id: str, signed: Consumer) -> Response:
    form = await form_of(request, signed)
    ask = _ask(form)
    body = {
        "dataset_id": dataset_id,
        "columns": ask["columns"],
        "purpose": ask["purpose"],
        "gba_sc_opt_in": ask["gba_sc_opt_in"],
    }
    if "kind" in ask:
        body["kind"] = ask["kind"]
    if "destination" in ask:
        body["dest"] = ask["destination"]
    body["onward_outside_gba"] = form.get("onward_transfer") == "outside_gba"
    values = dict(form) | {"columns": ask["columns"]}
    if _no_columns(ask):
        return await _dataset_page(request, signed, dataset_id, 422, errors=_no_columns(ask), values=values)
    try:
        result = await Api(request, signed).json("POST", "/api/v1/transfer-assessments", json=body)
    except ApiFailed as failure:
        errors = field_errors(failure, ASK_FIELDS)
        if "dest" in errors:
            errors["destination"] = errors.pop("dest")
        return await _dataset_page(request, signed, dataset_id, 422, errors=errors, values=values)
    return await _dataset_page(request, signed, dataset_id, assessment=result, values=values)


@router.post("/datasets/{dataset_id}/request")
async def request_access(request: Request, dataset_id: str, signed: Consumer) -> Response:
    form = await form_of(request, signed)
    body = _ask(form) | {
        "purpose_text": str(form.get("purpose_text") or ""),
        "onward_transfer": str(form.get("onward_transfer") or "none"),
    }
    duration = str(form.get("duration_days") or "").strip()
    values = dict(form) | {"columns": body["columns"]}
    errors = _no_columns(body)
    if duration and not _WHOLE.fullmatch(duration):
        errors["duration_days"] = "Enter a whole number of days."
    if errors:
        return await _dataset_page(request, signed, dataset_id, 422, errors=errors, values=values)
    if duration:
        body["duration_days"] = int(duration)
    try:
        created = await Api(request, signed).json(
            "POST", f"/api/v1/datasets/{_q(dataset_id)}/access-requests", json=body
        )
    except ApiFailed as failure:
        errors = field_errors(failure, ASK_FIELDS)
        return await _dataset_page(request, signed, dataset_id, 422, errors=errors, values=values)
    return RedirectResponse(
        f"/console/requests?created={created['id']}#request-{created['id']}", status_code=303
    )


# -- requests, reviews and grants ----------------------------------------------------------------
MAINLAND_REGIONS = ("CN_GBA9", "CN_OTHER")
#: What a compliance officer's determination names (the API's ``determination``).
DETERMINATION_FIELDS = (
    "note",
    "basis_rule_id",
    "evidence_id",
    "sector_evidence_id",
    "pipia_reference",
    "pipia_date",
    "consent_reference",
    "consent_not_required_reason",
)
#: Findings a decision may wait for, as checkboxes; the Macao ground is a select.
FINDING_CHECKS = ("necessity_accepted", "foreign_pi_transit", "anonymised")
#: The DP finding of an analysis request (issue #18), with the evaluation it rests on.
DP_FINDING = ("dp_release", "dp_evaluation_ref")
REVIEW_FIELDS = {
    *DETERMINATION_FIELDS,
    *FINDING_CHECKS,
    *DP_FINDING,
    "macao_art20_ground",
    "reason",
    "columns",
}


def legal_today(request: Request) -> date:
    """Today where the law counts dates (the rules' time zone): evidence validity is by that day."""
    rules = request.app.state.rules
    return datetime.now(rules.zone).date()


def _usable(item: dict[str, Any], r: dict[str, Any], today: date) -> bool:
    """An evidence item request ``r``'s determination could name: on file for its exporter and
    recipient, not withdrawn, in date, covering its purpose and dataset. The API checks the
    item again with everything else; this only keeps the picker to what can work."""
    if (item["exporter_org_id"], item["recipient_org_id"]) != (r["provider_org_id"], r["requester_org_id"]):
        return False
    if item.get("withdrawn_at"):
        return False
    if item.get("valid_to") and date.fromisoformat(item["valid_to"]) < today:
        return False
    if item.get("purposes") and r["purpose"] not in item["purposes"]:
        return False
    return not (item.get("dataset_ids") and r["dataset_id"] not in item["dataset_ids"])


def _review_form(
    request: Request, r: dict[str, Any], mechanisms: list[dict[str, Any]], today: date
) -> dict[str, Any]:
    """What the determination form of one request offers: the evidence pickers, the bases a
    HUMAN_REVIEW may be determined as, the finding it waits for, and whether a PIPIA is due."""
    rules = request.app.state.rules
    decision = r["decision"]
    facts = decision.get("facts") or {}
    usable = [m for m in mechanisms if _usable(m, r, today)]
    basis = []
    rule = rules.rule(str(decision.get("rule_id") or ""))
    if decision.get("outcome") == "HUMAN_REVIEW" and rule is not None:
        for target in rule.determinable_as:
            named = rules.rule(target)
            if named is not None:
                basis.append({"rule_id": target, "outcome": named.outcome, "legal_basis": named.legal_basis})
    origin = str(facts.get("origin") or "")
    overlay = facts.get("sector_overlay")
    return {
        "evidence": [m for m in usable if m["kind"] != "SECTOR"],
        "sector": [m for m in usable if m["kind"] == "SECTOR"],
        "sector_applies": decision.get("rule_id") == "M2" or overlay not in (None, "none"),
        "sector_name": overlay if overlay not in (None, "none") else None,
        "basis": basis,
        "awaits": decision.get("awaits"),
        # PIPL Arts.39 and 55: personal information leaving the Mainland needs a PIPIA and notice.
        "needs_pipia": (origin in MAINLAND_REGIONS or origin.startswith("CN"))
        and bool(facts.get("has_pi"))
        and not facts.get("anonymised")
        # An analysis is approved only as an accepted DP release (MA3): no PI leaves.
        and facts.get("release", "copy") == "copy"
        and decision.get("outcome") != "NOT_EXPORT",
    }


async def _requests_page(request: Request, signed: Signed, status_code: int = 200, **extra: Any) -> Response:
    api = Api(request, signed)
    requests = await api.json("GET", "/api/v1/access-requests", params={"limit": 200})
    grants = await api.json("GET", "/api/v1/grants", params={"limit": 200})
    me = signed.person
    if me.role == "provider":
        queue = [
            r for r in requests if r["state"] == "under_provider_review" and r["provider_org_id"] == me.org_id
        ]
    elif me.role == "compliance_officer":
        queue = [r for r in requests if r["state"] == "under_compliance_review"]
    else:
        queue = []
    forms: dict[str, dict[str, Any]] = {}
    if me.role == "compliance_officer" and queue:
        mechanisms = await api.json("GET", "/api/v1/mechanisms")
        today = legal_today(request)
        forms = {r["id"]: _review_form(request, r, mechanisms, today) for r in queue}
    queued = {r["id"] for r in queue}
    # An error shows beside its card or grant row; one for neither (it changed meanwhile) on top.
    placed = extra.get("error_for") in queued | {g["id"] for g in grants}
    # A form sent twice (a double click, a reload) reuses the transfer the first one logged.
    context = {"errors": {}, "error_for": None, "values": {}, "form_key": secrets.token_urlsafe(12)} | extra
    return render(
        request,
        "requests.html",
        status_code=status_code,
        signed=signed,
        queue=queue,
        forms=forms,
        requests=[r for r in requests if r["id"] not in queued],
        grants=grants,
        created=request.query_params.get("created"),
        macao_grounds=[g for g in MACAO_GROUNDS if g != "none"],
        placed=placed,
        **context,
    )


@router.get("/requests")
async def requests_page(request: Request, signed: Anyone) -> Response:
    return await _requests_page(request, signed)


def _determination_body(form: FormData) -> dict[str, Any]:
    """The officer's form as the API's approval body: the determination and any findings."""
    given = {name: str(form.get(name) or "").strip() for name in DETERMINATION_FIELDS}
    body: dict[str, Any] = {"determination": {k: v for k, v in given.items() if v}}
    findings: dict[str, Any] = {name: True for name in FINDING_CHECKS if form.get(name) == "on"}
    ground = str(form.get("macao_art20_ground") or "")
    if ground:
        findings["macao_art20_ground"] = ground
    if form.get("dp_release") == "on":
        findings["dp_release"] = True
    reference = str(form.get("dp_evaluation_ref") or "").strip()
    if reference:
        findings["dp_evaluation_ref"] = reference
    if findings:
        body["findings"] = findings
    return body


#: Review fields a card shows only for some decisions (a basis to name, a finding awaited).
CONDITIONAL_REVIEW_FIELDS = frozenset(
    {
        "basis_rule_id",
        "necessity_accepted",
        "foreign_pi_transit",
        "anonymised",
        "macao_art20_ground",
        *DP_FINDING,
    }
)


def review_errors(failure: ApiFailed) -> dict[str, str]:
    """The API names ``determination.<field>`` or ``findings.<name>``: the form's field of that name."""
    if isinstance(failure.detail, list):
        return field_errors(failure, REVIEW_FIELDS)
    named = str(failure.field or "")
    short = named.split(".", 1)[1] if named.startswith(("determination.", "findings.")) else named
    if short in REVIEW_FIELDS:
        message = api_message(str(failure.detail).removeprefix(f"{named}: "), failure.error)
        if short in CONDITIONAL_REVIEW_FIELDS:  # its input may not be on this card: say it on top too
            return {short: message, "form": api_message(failure.detail, failure.error)}
        return {short: message}
    return {"form": api_message(failure.detail, failure.error)}


def _status(failure: ApiFailed) -> int:
    return failure.status if 400 <= failure.status < 500 else 503


@router.post("/requests/{request_id}/{action}")
async def review(request: Request, request_id: str, action: str, signed: Reviewer) -> Response:
    if action not in ("approve", "reject"):
        raise PageNotFound
    form = await form_of(request, signed)
    reason = str(form.get("reason") or "").strip()
    body: dict[str, Any]
    if action == "approve" and signed.person.role == "compliance_officer":
        body = _determination_body(form)
    else:
        body = {"reason": reason} if reason or action == "reject" else {}
        # The provider's card lists the requested columns as ticked boxes; unticking narrows.
        if action == "approve" and signed.person.role == "provider" and form.get("columns_listed"):
            body["columns"] = [str(c) for c in form.getlist("columns")]
            if not body["columns"]:
                return await _requests_page(
                    request,
                    signed,
                    422,
                    errors={"columns": "Tick at least one column to approve."},
                    error_for=request_id,
                    values={"reason": reason, "columns": []},
                )
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/access-requests/{_q(request_id)}/{action}", json=body, refusals=True
        )
    except ApiFailed as failure:
        return await _requests_page(
            request,
            signed,
            _status(failure),
            errors=review_errors(failure),
            error_for=request_id,
            values={k: str(v) for k, v in form.items() if k not in ("csrf", "columns")}
            | {"columns": [str(c) for c in form.getlist("columns")]},
        )
    return RedirectResponse(f"/console/requests?done={action}#request-{request_id}", status_code=303)


async def _grant_action(
    request: Request, signed: Signed, grant_id: str, path: str, field: str, done: str
) -> Response:
    """A grant form with one text field (revoke: reason; attest deletion: statement)."""
    form = await form_of(request, signed)
    text = str(form.get(field) or "").strip()
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/grants/{_q(grant_id)}/{path}", json={field: text}, refusals=True
        )
    except ApiFailed as failure:
        return await _requests_page(
            request,
            signed,
            _status(failure),
            errors=field_errors(failure, {field}),
            error_for=grant_id,
            values={field: text},
        )
    return RedirectResponse(f"/console/requests?done={done}#grant-{grant_id}", status_code=303)


@router.post("/grants/{grant_id}/revoke")
async def revoke_grant(request: Request, grant_id: str, signed: Reviewer) -> Response:
    """The provider or a compliance officer ends a grant; the API deletes its delivery copies."""
    return await _grant_action(request, signed, grant_id, "revoke", "reason", "revoke")


@router.post("/grants/{grant_id}/deletion-attestation")
async def attest_deletion(request: Request, grant_id: str, signed: Consumer) -> Response:
    """The grantee attests, after the grant ended, that it deleted every copy."""
    return await _grant_action(request, signed, grant_id, "deletion-attestation", "statement", "attest")


@router.post("/grants/{grant_id}/deliver")
async def deliver(request: Request, grant_id: str, signed: Consumer) -> Response:
    form = await form_of(request, signed)
    key = str(form.get("idempotency_key") or "")[:200]
    headers = {"Idempotency-Key": key} if key else {}
    try:
        delivery = await Api(request, signed).json(
            "POST", f"/api/v1/grants/{_q(grant_id)}/deliveries", headers=headers
        )
    except ApiFailed as failure:
        return await _requests_page(
            request, signed, failure.status, errors=field_errors(failure, set()), error_for=grant_id
        )
    return render(request, "delivery.html", signed=signed, delivery=delivery)


@router.get("/grants/{grant_id}/sharing-profile")
async def sharing_profile(request: Request, grant_id: str, signed: Consumer) -> Response:
    """The grant's Delta Sharing profile file, for the open delta-sharing clients."""
    response = await Api(request, signed).call("GET", f"/api/v1/grants/{_q(grant_id)}/sharing-profile")
    if response.status_code != 200:
        raise PageNotFound
    return Response(
        response.content,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="gbadz-{grant_id[:8]}.share"',
            "Cache-Control": "no-store",
        },
    )


# -- evidence registry ---------------------------------------------------------------------------
DOCUMENT_TYPES = ("application/pdf", "image/png", "image/jpeg")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024  # the API's limit for a filed document
MECHANISM_DATES = ("issued", "valid_to", "effective_date", "filing_date")
MECHANISM_FIELDS = {
    "exporter_org_id",
    "recipient_org_id",
    "kind",
    "reference",
    *MECHANISM_DATES,
    "purposes",
    "variant",
    "authority",
    "authority_name",
    "sector",
    "dataset_ids",
    "spi_categories",
    "approved_individuals",
}


async def org_names(api: Api, signed: Signed) -> dict[str, str]:
    """Organisation names the viewer may already read: dataset providers, the transfer log's
    parties (officers) and their own. Others are shown by id."""
    names: dict[str, str] = {}
    page = await api.json("GET", "/api/v1/datasets", params={"limit": 100})
    for item in page["items"]:
        if item["provider"].get("org_id"):
            names[item["provider"]["org_id"]] = item["provider"]["name"]
    if signed.person.role == "compliance_officer":
        parties = await api.json("GET", "/api/v1/compliance/parties")
        for party in (*parties["exporters"], *parties["recipients"]):
            if party.get("name"):
                names[party["org_id"]] = party["name"]
    names[signed.person.org_id] = signed.person.org_name
    return names


async def _mechanisms_page(
    request: Request, signed: Signed, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    items = await api.json("GET", "/api/v1/mechanisms")
    requests = await api.json("GET", "/api/v1/access-requests", params={"limit": 200})
    names = await org_names(api, signed)
    me = signed.person
    # The parties one can pick: everyone the viewer's requests, items and datasets name.
    known = set(names)
    for r in requests:
        known |= {r["requester_org_id"], r["provider_org_id"]} - {None}
    for item in items:
        known |= {item["exporter_org_id"], item["recipient_org_id"]}
    if me.role == "compliance_officer":
        known.discard(me.org_id)  # the compliance office exports and receives nothing itself
    parties = sorted(known, key=lambda org: (names.get(org, "~" + org)).lower())
    exporters = parties if me.role == "compliance_officer" else [me.org_id]
    context = {"errors": {}, "error_for": None, "values": {}} | extra
    return render(
        request,
        "mechanisms.html",
        status_code=status_code,
        signed=signed,
        items=sorted(items, key=lambda i: (i.get("withdrawn_at") is not None, i["reference"])),
        names=names,
        exporters=exporters,
        recipients=parties,
        kinds=EVIDENCE_KINDS,
        variants=EVIDENCE_VARIANTS,
        authorities=AUTHORITIES,
        sectors=[s for s in SECTORS if s != "none"],
        purposes=PURPOSES,
        spi_categories=SPI_CATEGORIES,
        max_mib=MAX_DOCUMENT_BYTES // (1024 * 1024),
        **context,
    )


@router.get("/mechanisms")
async def mechanisms_page(request: Request, signed: Reviewer) -> Response:
    return await _mechanisms_page(request, signed)


def _mechanism_body(form: FormData) -> dict[str, Any]:
    body: dict[str, Any] = {
        name: str(form.get(name) or "").strip()
        for name in ("exporter_org_id", "recipient_org_id", "kind", "reference")
    }
    for name in (*MECHANISM_DATES, "variant", "authority", "authority_name", "sector"):
        value = str(form.get(name) or "").strip()
        if value:
            body[name] = value
    body["purposes"] = [str(p) for p in form.getlist("purposes")]
    text = str(form.get("dataset_ids") or "")
    body["dataset_ids"] = [d.strip() for d in text.replace("\n", ",").split(",") if d.strip()]
    spi = [str(c) for c in form.getlist("spi_categories")]
    if spi:  # none ticked: the item does not state its categories (not: covers none)
        body["spi_categories"] = spi
    return body


@router.post("/mechanisms")
async def record_mechanism(request: Request, signed: Reviewer) -> Response:
    form = await form_of(request, signed)
    body = _mechanism_body(form)
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if k != "csrf"}
    values |= {"purposes": body["purposes"], "spi_categories": body.get("spi_categories", [])}
    individuals = str(form.get("approved_individuals") or "").strip()
    if individuals:
        if not _WHOLE.fullmatch(individuals):
            errors = {"approved_individuals": "Enter a whole number of individuals."}
            return await _mechanisms_page(request, signed, 422, errors=errors, error_for="new", values=values)
        body["approved_individuals"] = int(individuals)
    try:
        created = await Api(request, signed).json("POST", "/api/v1/mechanisms", json=body, refusals=True)
    except ApiFailed as failure:
        errors = field_errors(failure, MECHANISM_FIELDS)
        return await _mechanisms_page(
            request, signed, _status(failure), errors=errors, error_for="new", values=values
        )
    return RedirectResponse(
        f"/console/mechanisms?recorded={created['id']}#item-{created['id']}", status_code=303
    )


@router.post("/mechanisms/{evidence_id}/withdraw")
async def withdraw_mechanism(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    form = await form_of(request, signed)
    reason = str(form.get("reason") or "").strip()
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/mechanisms/{_q(evidence_id)}/withdraw", json={"reason": reason}, refusals=True
        )
    except ApiFailed as failure:
        errors = field_errors(failure, {"reason"})
        return await _mechanisms_page(
            request, signed, _status(failure), errors=errors, error_for=evidence_id, values={"reason": reason}
        )
    return RedirectResponse(f"/console/mechanisms#item-{evidence_id}", status_code=303)


@router.post("/mechanisms/{evidence_id}/document")
async def upload_document(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    """The filed document, from a file field, to the API with the file's type (at most 20 MiB)."""
    # The token travels in the action URL too, so a forged form is refused before its body is read.
    if not hmac.compare_digest(str(request.query_params.get("csrf") or ""), signed.csrf):
        raise FormExpired
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES + MAX_FORM_BYTES:
        raise FormTooLarge
    form = await read_multipart(request, MAX_DOCUMENT_BYTES + MAX_FORM_BYTES)
    try:
        if not hmac.compare_digest(str(form.get("csrf") or ""), signed.csrf):
            raise FormExpired
        upload = form.get("document")
        error = None
        if not isinstance(upload, UploadFile) or not upload.filename:
            error = "Choose the filed document (PDF, PNG or JPEG)."
        else:
            data = await upload.read(MAX_DOCUMENT_BYTES + 1)
            declared_type = (upload.content_type or "").split(";")[0].strip().lower()
            content_type = declared_type if declared_type in DOCUMENT_TYPES else ""
            if not content_type:
                error = "Choose the filed document (PDF, PNG or JPEG)."
            elif len(data) > MAX_DOCUMENT_BYTES:
                error = "The document is larger than 20 MiB."
            elif not data:
                error = "The file is empty."
    finally:
        await form.close()
    if error is None:
        try:
            await Api(request, signed).json(
                "PUT",
                f"/api/v1/mechanisms/{_q(evidence_id)}/document",
                content=data,
                headers={"Content-Type": content_type},
                refusals=True,
            )
        except ApiFailed as failure:
            error = api_message(str(failure.detail).removeprefix("document: "), failure.error)
            status = _status(failure)
    else:
        status = 422
    if error is not None:
        return await _mechanisms_page(
            request, signed, status, errors={"document": error}, error_for=evidence_id
        )
    return RedirectResponse(f"/console/mechanisms#item-{evidence_id}", status_code=303)


async def _download(request: Request, signed: Signed, path: str, filename: str | None = None) -> Response:
    response = await Api(request, signed).call("GET", path)
    if response.status_code != 200:
        raise PageNotFound
    headers = SECURITY_HEADERS | {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    extension = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}.get(
        response.headers.get("content-type", "").split(";")[0], "bin"
    )
    headers["Content-Disposition"] = f'attachment; filename="{filename or "evidence-document"}.{extension}"'
    if response.headers.get("x-content-sha256"):
        headers["X-Content-SHA256"] = response.headers["x-content-sha256"]
    return Response(response.content, media_type=response.headers.get("content-type"), headers=headers)


@router.get("/mechanisms/{evidence_id}/document")
async def mechanism_document(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    """The filed document, as the API checked it against its SHA-256."""
    return await _download(
        request, signed, f"/api/v1/mechanisms/{_q(evidence_id)}/document", f"evidence-{evidence_id[:8]}"
    )


@router.get("/mechanisms/{evidence_id}/filing-package.pdf")
async def filing_package(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    """A standard contract's filing annex as the bilingual PDF."""
    return await _download(
        request,
        signed,
        f"/api/v1/mechanisms/{_q(evidence_id)}/filing-package?format=pdf",
        f"filing-{evidence_id[:8]}.pdf",
    )


# -- obligations -----------------------------------------------------------------------------------
async def _obligations_page(
    request: Request, signed: Signed, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    params = request.query_params
    state = params.get("state", "open") if params.get("state", "open") in ("open", "met", "") else "open"
    overdue = params.get("overdue") == "true"
    query: dict[str, Any] = {"limit": 500}
    if state:
        query["state"] = state
    if overdue:
        query["overdue"] = "true"
    duties = await api.json("GET", "/api/v1/obligations", params=query)
    grants = await api.json("GET", "/api/v1/grants", params={"limit": 200})
    names = await org_names(api, signed)
    context = {"errors": {}, "error_for": None, "values": {}} | extra
    return render(
        request,
        "obligations.html",
        status_code=status_code,
        signed=signed,
        duties=duties,
        datasets={g["id"]: g["dataset_id"] for g in grants},
        names=names,
        filters={"state": state, "overdue": overdue},
        **context,
    )


@router.get("/obligations")
async def obligations_page(request: Request, signed: Anyone) -> Response:
    return await _obligations_page(request, signed)


@router.post("/obligations/{obligation_id}/met")
async def meet_obligation(request: Request, obligation_id: str, signed: Anyone) -> Response:
    form = await form_of(request, signed)
    body = {name: str(form.get(name) or "").strip() for name in ("reference", "date")}
    if not body["date"]:  # only a PIPIA names the date it was completed
        del body["date"]
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/obligations/{_q(obligation_id)}/met", json=body, refusals=True
        )
    except ApiFailed as failure:
        errors = field_errors(failure, {"reference", "date"})
        return await _obligations_page(
            request, signed, _status(failure), errors=errors, error_for=obligation_id, values=body
        )
    return RedirectResponse(f"/console/obligations#obligation-{obligation_id}", status_code=303)


# -- provider --------------------------------------------------------------------------------
@router.get("/provider")
async def provider_home(request: Request, signed: Provider) -> Response:
    api = Api(request, signed)
    page = await api.json(
        "GET",
        "/api/v1/datasets",
        params={
            "provider": signed.person.org_id,
            "limit": 100,
            "status": ["draft", "active", "deprecated", "retired"],
        },
    )
    datasets = []
    for item in page["items"]:
        runs = await api.json("GET", f"/api/v1/datasets/{item['id']}/ingestion-runs", params={"limit": 20})
        datasets.append({"dataset": item, "runs": runs})
    return render(request, "provider.html", signed=signed, datasets=datasets)


# -- compliance officer ------------------------------------------------------------------------
@router.get("/compliance")
async def compliance_home(request: Request, signed: Officer, rules: Rules) -> Response:
    api = Api(request, signed)
    routes = await api.json("GET", "/api/v1/compliance/transfers-by-route", params={"days": 30})
    counters = await api.json("GET", "/api/v1/compliance/counters")
    expiring = await api.json("GET", "/api/v1/compliance/mechanisms/expiring")
    checkpoint = await api.json("GET", "/api/v1/transfer-log/checkpoint")
    today = datetime.now(UTC).date()
    locale = locale_of(request)

    def t(text: str) -> str:
        return translate(text, locale)

    return render(
        request,
        "compliance.html",
        signed=signed,
        route_chart=charts.routes_over_time(routes, today, days=30, t=t),
        route_rows=routes,
        counter_chart=charts.counters_against_thresholds(counters, rules.threshold_lines(), t=t),
        counters=counters,
        expiring_chart=charts.expiring(expiring, horizon=rules.validity["expiry_warning_working_days"], t=t),
        expiring=expiring,
        checkpoint=checkpoint,
        verification=None,
    )


TRANSFER_FILTERS = (
    "origin",
    "destination",
    "outcome",
    "mechanism",
    "exporter",
    "recipient",
    "dataset",
    "since",
    "until",
    "transfer_mode",
)
#: What a logged transfer was (the API's ``transfer_mode``): a copy's three ways, or a DP release.
TRANSFER_MODES = ("download", "delta_sharing_query", "reissue", "release")


def _transfer_query(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    params = request.query_params
    filters = {name: params.get(name, "").strip()[:100] for name in TRANSFER_FILTERS}
    query = {k: v for k, v in filters.items() if v}
    for name in ("since", "until"):
        if name in query and len(query[name]) == 10:  # a date picked in the form: that day, UTC
            query[name] += "T00:00:00Z"
    return filters, query


@router.get("/compliance/transfers")
async def transfers_page(request: Request, signed: Officer) -> Response:
    filters, query = _transfer_query(request)
    errors: dict[str, str] = {}
    try:
        rows = await Api(request, signed).json("GET", "/api/v1/transfers", params=query | {"limit": 500})
    except ApiFailed as failure:
        errors, rows = field_errors(failure, set(TRANSFER_FILTERS)), []
    csv_link = "/console/compliance/transfers.csv" + (f"?{urlencode(query)}" if query else "")
    parties = await Api(request, signed).json("GET", "/api/v1/compliance/parties")
    return render(
        request,
        "transfers.html",
        status_code=422 if errors else 200,
        signed=signed,
        filters=filters,
        rows=rows,
        errors=errors,
        csv_link=csv_link,
        jurisdictions=JURISDICTIONS,
        outcomes=OUTCOMES,
        mechanisms=sorted({*OUTCOMES, *EVIDENCE_KINDS}),
        transfer_modes=TRANSFER_MODES,
        parties=parties,
    )


@router.get("/compliance/transfers.csv")
async def transfers_csv(request: Request, signed: Officer) -> Response:
    _, query = _transfer_query(request)
    response = await Api(request, signed).call(
        "GET", "/api/v1/transfers", params=query | {"format": "csv", "limit": 10_000}
    )
    if response.status_code != 200:
        raise PageNotFound
    return Response(
        response.content,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="gbadz-transfers.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/compliance/verify")
async def verify_log(request: Request, signed: Officer) -> Response:
    await form_of(request, signed)
    verification = await Api(request, signed).json("POST", "/api/v1/transfer-log/verifications")
    return render(request, "verify.html", signed=signed, verification=verification)


# -- errors ----------------------------------------------------------------------------------
def error_page(request: Request, status: int, title: str, message: str) -> Response:
    signed = getattr(request.state, "signed", None)
    return render(request, "error.html", status, signed=signed, title=title, message=message)


def install(app: FastAPI) -> None:
    from gbadz.console import (
        admin,
        analysis,
        officer,
        provider,
        startup,
    )  # their pages use this module's helpers: imported once both exist

    app.include_router(startup.router)  # first: its /requests/{id}/withdraw is not a review action
    app.include_router(officer.router)
    app.include_router(router)
    app.include_router(analysis.router)
    app.include_router(admin.router)
    app.include_router(provider.router)

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse("/console/login?" + urlencode({"next": exc.next_path}), status_code=303)

    async def api_failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiFailed)
        status = 503 if exc.status >= 500 else exc.status
        return error_page(request, status, "Something went wrong", api_message(exc.detail, exc.error))

    def page_for(status: int, title: str, message: str) -> Any:
        async def handler(request: Request, exc: Exception) -> Response:
            return error_page(request, status, title, message)

        return handler

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(ApiFailed, api_failed)
    for exc_class, status, title, message in (
        (PageNotFound, 404, "Not found", "There is no such page, or it is not yours to see."),
        (
            FormExpired,
            403,
            "Form expired",
            "This form expired or was not sent from this console. Go back, reload the page and try again.",
        ),
        (FormTooLarge, 413, "Form too large", "The form sent more than this page accepts."),
        (FormUnreadable, 400, "Form unreadable", "The form could not be read. Go back and send it again."),
    ):
        app.add_exception_handler(exc_class, page_for(status, title, message))
