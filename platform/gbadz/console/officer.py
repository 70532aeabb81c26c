"""A compliance officer's pages (issue #19): every grant with filters and a revocation per row,
and the amend form of a mechanism on file (prefilled; the amendment is a new version).

Like every console page they call the JSON API in process as the signed-in person: the filters
are the API's (a filter it cannot read comes back named, and is shown beside its field), and
an amendment is the API's ``/mechanisms/{id}/amend`` (the parties stay, the old item is kept).
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gbadz.console.routes import (
    _WHOLE,
    MECHANISM_FIELDS,
    Api,
    ApiFailed,
    Officer,
    PageNotFound,
    Reviewer,
    _mechanism_body,
    _q,
    _status,
    field_errors,
    form_of,
    org_names,
)
from gbadz.console.session import Signed
from gbadz.console.web import render
from gbadz.vocabulary import (
    AUTHORITIES,
    EVIDENCE_KINDS,
    EVIDENCE_VARIANTS,
    GRANT_KINDS,
    PURPOSES,
    SECTORS,
    SPI_CATEGORIES,
)

router = APIRouter(prefix="/console", include_in_schema=False)
GRANT_FILTERS = ("status", "dataset_id", "grantee_org_id", "kind", "expires_before")
GRANT_STATUSES = ("active", "suspended", "expired", "revoked")


# -- every grant -------------------------------------------------------------------------------
def _grant_query(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    params = request.query_params
    filters = {name: params.get(name, "").strip()[:120] for name in GRANT_FILTERS}
    query = {k: v for k, v in filters.items() if v}
    picked = query.get("expires_before", "")
    if len(picked) == 10:
        # A date picked in the form: the start of that day on the law's calendar (Asia/Shanghai,
        # invariant 7), not UTC's. A date that does not parse goes as typed: the API names it.
        try:
            day = date.fromisoformat(picked)
        except ValueError:
            pass
        else:
            zone = request.app.state.rules.zone
            query["expires_before"] = datetime.combine(day, time(), tzinfo=zone).isoformat()
    return filters, query


async def _grants_page(request: Request, signed: Signed, status_code: int = 200, **extra: Any) -> Response:
    api = Api(request, signed)
    filters, query = _grant_query(request)
    errors: dict[str, str] = {}
    try:
        grants = await api.json("GET", "/api/v1/grants", params=query | {"limit": 500})
    except ApiFailed as failure:
        errors, grants = field_errors(failure, set(GRANT_FILTERS)), []
    names = await org_names(api, signed)
    # The grantee filter offers every organisation holding a grant (not only the filtered ones).
    every = grants if not query else await api.json("GET", "/api/v1/grants", params={"limit": 500})
    grantees = sorted({g["grantee_org_id"] for g in every}, key=lambda o: names.get(o, "~" + o).lower())
    context = {"error_for": None, "row_errors": {}, "values": {}} | extra
    return render(
        request,
        "grants.html",
        status_code=status_code if not errors else 422,
        signed=signed,
        grants=grants,
        filters=filters,
        errors=errors,
        names=names,
        grantees=grantees,
        statuses=GRANT_STATUSES,
        kinds=GRANT_KINDS,
        # A revocation keeps the list as filtered: on its errors and after it.
        keep=urlencode({k: v for k, v in filters.items() if v}),
        **context,
    )


@router.get("/compliance/grants")
async def grants_page(request: Request, signed: Officer) -> Response:
    """Every grant, filtered by status, dataset, grantee, kind and expiry; each revocable with a reason."""
    return await _grants_page(request, signed)


@router.post("/compliance/grants/{grant_id}/revoke")
async def revoke(request: Request, grant_id: str, signed: Officer) -> Response:
    form = await form_of(request, signed)
    reason = str(form.get("reason") or "").strip()
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/grants/{_q(grant_id)}/revoke", json={"reason": reason}, refusals=True
        )
    except ApiFailed as failure:
        return await _grants_page(
            request,
            signed,
            _status(failure),
            row_errors=field_errors(failure, {"reason"}),
            error_for=grant_id,
            values={"reason": reason},
        )
    keep = {k: v for k, v in request.query_params.items() if k in GRANT_FILTERS}
    query = urlencode(keep | {"done": "revoked"})
    return RedirectResponse(f"/console/compliance/grants?{query}#grant-{_q(grant_id)}", status_code=303)


# -- amending a mechanism --------------------------------------------------------------------------
def _prefill(item: dict[str, Any]) -> dict[str, Any]:
    """The amend form's values: the item as it is on file."""
    values: dict[str, Any] = {
        name: "" if item.get(name) is None else str(item[name])
        for name in (
            "exporter_org_id",
            "recipient_org_id",
            "kind",
            "reference",
            "issued",
            "valid_to",
            "effective_date",
            "filing_date",
            "variant",
            "authority",
            "authority_name",
            "sector",
            "approved_individuals",
        )
    }
    values["purposes"] = list(item.get("purposes") or [])
    values["spi_categories"] = list(item.get("spi_categories") or [])
    values["dataset_ids"] = ", ".join(item.get("dataset_ids") or [])
    return values


async def _amend_page(
    request: Request, signed: Signed, evidence_id: str, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    items = await api.json("GET", "/api/v1/mechanisms")
    item = next((m for m in items if m["id"] == evidence_id), None)
    mine = item is not None and (
        signed.person.role == "compliance_officer" or item["exporter_org_id"] == signed.person.org_id
    )
    if item is None or not mine:
        raise PageNotFound
    names = await org_names(api, signed)
    context = {"errors": {}, "values": _prefill(item)} | extra
    return render(
        request,
        "amend.html",
        status_code=status_code,
        signed=signed,
        item=item,
        names=names,
        kinds=EVIDENCE_KINDS,
        variants=EVIDENCE_VARIANTS,
        authorities=AUTHORITIES,
        sectors=[s for s in SECTORS if s != "none"],
        purposes=PURPOSES,
        spi_categories=SPI_CATEGORIES,
        **context,
    )


@router.get("/mechanisms/{evidence_id}/amend")
async def amend_form(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    """The item's fields, prefilled, to correct (a missing date, a wrong reference, ...)."""
    return await _amend_page(request, signed, evidence_id)


@router.post("/mechanisms/{evidence_id}/amend")
async def amend(request: Request, evidence_id: str, signed: Reviewer) -> Response:
    form = await form_of(request, signed)
    body = _mechanism_body(form)
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if k != "csrf"}
    values |= {"purposes": body["purposes"], "spi_categories": body.get("spi_categories", [])}
    individuals = str(form.get("approved_individuals") or "").strip()
    if individuals:
        if not _WHOLE.fullmatch(individuals):
            errors = {"approved_individuals": "Enter a whole number of individuals."}
            return await _amend_page(request, signed, evidence_id, 422, errors=errors, values=values)
        body["approved_individuals"] = int(individuals)
    try:
        created = await Api(request, signed).json(
            "POST", f"/api/v1/mechanisms/{_q(evidence_id)}/amend", json=body, refusals=True
        )
    except ApiFailed as failure:
        errors = field_errors(failure, MECHANISM_FIELDS | {"state"})
        return await _amend_page(request, signed, evidence_id, _status(failure), errors=errors, values=values)
    return RedirectResponse(
        f"/console/mechanisms?recorded={created['id']}#item-{created['id']}", status_code=303
    )
