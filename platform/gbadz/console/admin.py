"""The administrator's pages (issue #19): organisations, OAuth clients and people.

Like every console page they call the JSON API in process as the signed-in person, whose token
holds exactly an admin client's scopes (``admin``, ``catalog:read``): the console adds no power
of its own, and every change is the API's, audited with the acting person. Every page and form
answers 404 to anyone but an administrator.

A new client's secret is shown once, after a POST-redirect-GET: the POST puts it in a short-lived
cookie sealed with AES-GCM under a keyring-derived key and bound to the session and the client;
the page that shows it deletes the cookie. A reload, a second visit, another browser or another
session finds no secret (nothing holds it server-side: only its hash is kept).
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gbadz.console.routes import (
    Administrator,
    Api,
    ApiFailed,
    PageNotFound,
    _q,
    _status,
    field_errors,
    form_of,
)
from gbadz.console.session import Signed
from gbadz.console.web import render
from gbadz.identity.people import PEOPLE_ROLES
from gbadz.identity.scopes import ROLES
from gbadz.vocabulary import JURISDICTIONS

router = APIRouter(prefix="/console/admin", include_in_schema=False)
ONCE_COOKIE = "__Host-gbadz_once"
ONCE_TTL_S = 120
ORG_FIELDS = {"name", "jurisdiction", "registration_no", "gba_registered", "ciio", "operator"}
CLIENT_FIELDS = {"org_id", "role", "name"}
PERSON_FIELDS = {"org_id", "username", "display_name", "role", "password"}


#: The choices a form needs before it goes to the API (a missing one is named beside its field).
CHOOSE = {
    "jurisdiction": "Choose the jurisdiction.",
    "org_id": "Choose the organisation.",
    "role": "Choose the role.",
}


def _unchosen(values: dict[str, Any], *names: str) -> dict[str, str]:
    return {name: CHOOSE[name] for name in names if not values.get(name)}


# -- the secret, once --------------------------------------------------------------------------
def _once_key(request: Request) -> bytes:
    key: bytes | None = getattr(request.app.state, "console_once_key", None)
    if key is None:
        provider = request.app.state.authorization_server.tokens.provider
        _, private = provider.signing_key("console-once")
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"gbadz one-time secret").derive(raw)
        request.app.state.console_once_key = key
    return key


def _bound(signed: Signed, client_id: str) -> bytes:
    return f"{signed.id_hash}|{client_id}".encode()


def seal(request: Request, signed: Signed, client_id: str, secret: str) -> str:
    """The secret with the time it was issued, sealed: the cookie's max-age is the browser's
    word only, so the age is checked inside the sealed data too (a replayed copy expires)."""
    nonce = secrets.token_bytes(12)
    plain = f"{int(time.time())}|{secret}".encode()
    sealed = AESGCM(_once_key(request)).encrypt(nonce, plain, _bound(signed, client_id))
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(request: Request, signed: Signed, client_id: str) -> str | None:
    value = request.cookies.get(ONCE_COOKIE, "")
    if not value or len(value) > 400:
        return None
    try:
        raw = base64.urlsafe_b64decode(value)
        plain = AESGCM(_once_key(request)).decrypt(raw[:12], raw[12:], _bound(signed, client_id)).decode()
        issued, _, secret = plain.partition("|")
        age = time.time() - int(issued)
    except (ValueError, InvalidTag):
        return None
    if not secret or not -5 <= age <= ONCE_TTL_S:
        return None
    return secret


def _forget_once(response: Response) -> Response:
    response.delete_cookie(ONCE_COOKIE, secure=True, httponly=True, samesite="strict", path="/")
    return response


# -- organisations --------------------------------------------------------------------------------
async def _organizations(api: Api) -> list[dict[str, Any]]:
    orgs: list[dict[str, Any]] = await api.json("GET", "/api/v1/organizations")
    return orgs


async def _org_page(request: Request, signed: Signed, status_code: int = 200, **extra: Any) -> Response:
    orgs = await _organizations(Api(request, signed))
    context = {"errors": {}, "values": {}} | extra
    return render(
        request,
        "admin_organizations.html",
        status_code=status_code,
        signed=signed,
        orgs=orgs,
        jurisdictions=JURISDICTIONS,
        **context,
    )


@router.get("/organizations")
async def organizations_page(request: Request, signed: Administrator) -> Response:
    return await _org_page(request, signed)


@router.post("/organizations")
async def create_organization(request: Request, signed: Administrator) -> Response:
    form = await form_of(request, signed)
    values = {name: str(form.get(name) or "").strip() for name in ("name", "jurisdiction", "registration_no")}
    flags = {name: form.get(name) == "true" for name in ("gba_registered", "ciio", "operator")}
    body: dict[str, Any] = {"name": values["name"], "jurisdiction": values["jurisdiction"], **flags}
    if values["registration_no"]:
        body["registration_no"] = values["registration_no"]
    if errors := _unchosen(values, "jurisdiction"):
        return await _org_page(request, signed, 422, errors=errors, values=values | flags)
    try:
        created = await Api(request, signed).json("POST", "/api/v1/organizations", json=body)
    except ApiFailed as failure:
        return await _org_page(
            request, signed, _status(failure), errors=field_errors(failure, ORG_FIELDS), values=values | flags
        )
    return RedirectResponse(f"/console/admin/organizations?created={created['id']}#org-{created['id']}", 303)


async def _org_of(request: Request, signed: Signed, org_id: str) -> dict[str, Any]:
    _q(org_id)
    for org in await _organizations(Api(request, signed)):
        if org["id"] == org_id:
            return org
    raise PageNotFound


@router.get("/organizations/{org_id}/disable")
async def confirm_disable(request: Request, org_id: str, signed: Administrator) -> Response:
    """What disabling does, and the button that does it (no JavaScript confirm dialog)."""
    org = await _org_of(request, signed, org_id)
    return render(request, "admin_disable.html", signed=signed, org=org, errors={})


@router.post("/organizations/{org_id}/disable")
async def disable_organization(request: Request, org_id: str, signed: Administrator) -> Response:
    await form_of(request, signed)
    try:
        await Api(request, signed).json("POST", f"/api/v1/organizations/{_q(org_id)}/disable")
    except ApiFailed as failure:
        org = await _org_of(request, signed, org_id)
        errors = {"form": str(failure.detail).removeprefix("org_id: ")}
        return render(request, "admin_disable.html", _status(failure), signed=signed, org=org, errors=errors)
    return RedirectResponse(f"/console/admin/organizations#org-{org_id}", 303)


# -- clients ------------------------------------------------------------------------------------------
async def _clients_page(request: Request, signed: Signed, status_code: int = 200, **extra: Any) -> Response:
    api = Api(request, signed)
    orgs = await _organizations(api)
    chosen = request.query_params.get("org", "")
    params = {"org_id": chosen} if chosen in {o["id"] for o in orgs} else {}
    clients = await api.json("GET", "/api/v1/clients", params=params)
    context = {"errors": {}, "values": {}, "error_for": None} | extra
    return render(
        request,
        "admin_clients.html",
        status_code=status_code,
        signed=signed,
        clients=clients,
        orgs=orgs,
        names={o["id"]: o["name"] for o in orgs},
        chosen=params.get("org_id", ""),
        roles=ROLES,
        **context,
    )


@router.get("/clients")
async def clients_page(request: Request, signed: Administrator) -> Response:
    return await _clients_page(request, signed)


@router.post("/clients")
async def create_client(request: Request, signed: Administrator) -> Response:
    form = await form_of(request, signed)
    values = {name: str(form.get(name) or "").strip() for name in CLIENT_FIELDS}
    body: dict[str, Any] = {"org_id": values["org_id"], "role": values["role"]}
    if values["name"]:
        body["name"] = values["name"]
    if errors := _unchosen(values, "org_id", "role"):
        return await _clients_page(request, signed, 422, errors=errors, error_for="new", values=values)
    try:
        created = await Api(request, signed).json("POST", "/api/v1/clients", json=body)
    except ApiFailed as failure:
        errors = field_errors(failure, CLIENT_FIELDS)
        return await _clients_page(
            request, signed, _status(failure), errors=errors, error_for="new", values=values
        )
    client_id = created["client_id"]
    response = RedirectResponse(f"/console/admin/clients/{client_id}/created", 303)
    response.set_cookie(
        ONCE_COOKIE,
        seal(request, signed, client_id, created["client_secret"]),
        max_age=ONCE_TTL_S,
        secure=True,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


@router.get("/clients/{client_id}/created")
async def client_created(request: Request, client_id: str, signed: Administrator) -> Response:
    """The new client's secret, this once: the cookie that carried it is deleted by this answer."""
    _q(client_id)
    listed = await Api(request, signed).json("GET", "/api/v1/clients")
    client = next((c for c in listed if c["client_id"] == client_id), None)
    if client is None:
        raise PageNotFound
    secret = unseal(request, signed, client_id)
    issuer = request.app.state.settings.oauth.issuer
    page = render(
        request, "admin_client_created.html", signed=signed, client=client, secret=secret, issuer=issuer
    )
    return _forget_once(page)


@router.post("/clients/{client_id}/revoke")
async def revoke_client(request: Request, client_id: str, signed: Administrator) -> Response:
    await form_of(request, signed)
    try:
        await Api(request, signed).json("POST", f"/api/v1/clients/{_q(client_id)}/revoke")
    except ApiFailed as failure:
        errors = {"form": str(failure.detail)}
        return await _clients_page(request, signed, _status(failure), errors=errors, error_for=client_id)
    return RedirectResponse(f"/console/admin/clients#client-{client_id}", 303)


# -- people ----------------------------------------------------------------------------------------------
async def _people_page(request: Request, signed: Signed, status_code: int = 200, **extra: Any) -> Response:
    api = Api(request, signed)
    orgs = await _organizations(api)
    everyone = await api.json("GET", "/api/v1/people")
    context = {"errors": {}, "values": {}, "error_for": None} | extra
    return render(
        request,
        "admin_people.html",
        status_code=status_code,
        signed=signed,
        everyone=everyone,
        orgs=orgs,
        names={o["id"]: o["name"] for o in orgs},
        roles=PEOPLE_ROLES,
        **context,
    )


@router.get("/people")
async def people_page(request: Request, signed: Administrator) -> Response:
    return await _people_page(request, signed)


@router.post("/people")
async def create_person(request: Request, signed: Administrator) -> Response:
    form = await form_of(request, signed)
    body = {
        name: str(form.get(name) or "").strip() for name in ("org_id", "username", "display_name", "role")
    }
    body["password"] = str(form.get("password") or "")
    if errors := _unchosen(body, "org_id", "role"):
        values = {k: v for k, v in body.items() if k != "password"}
        return await _people_page(request, signed, 422, errors=errors, error_for="new", values=values)
    try:
        created = await Api(request, signed).json("POST", "/api/v1/people", json=body)
    except ApiFailed as failure:
        errors = field_errors(failure, PERSON_FIELDS)
        values = {k: v for k, v in body.items() if k != "password"}  # a password is never sent back
        return await _people_page(
            request, signed, _status(failure), errors=errors, error_for="new", values=values
        )
    return RedirectResponse(f"/console/admin/people?created={created['id']}#person-{created['id']}", 303)


@router.post("/people/{person_id}/disable")
async def disable_person(request: Request, person_id: str, signed: Administrator) -> Response:
    await form_of(request, signed)
    try:
        await Api(request, signed).json("POST", f"/api/v1/people/{_q(person_id)}/disable")
    except ApiFailed as failure:
        errors = {"form": str(failure.detail)}
        return await _people_page(request, signed, _status(failure), errors=errors, error_for=person_id)
    return RedirectResponse(f"/console/admin/people#person-{person_id}", 303)
