"""A startup's own pages (issue #19): one request (its decision, legal basis, history and what
happens next, with a withdrawal behind a confirmation) and one grant (columns, obligations,
expiry, why it was suspended or revoked, the deletion attestation).

Like every console page they call the JSON API in process as the signed-in person; the API
decides who may read or withdraw what. A withdrawal is a plain two-step form (a confirmation
page, then a POST), so it works with JavaScript off.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gbadz.console.routes import (
    Anyone,
    Api,
    ApiFailed,
    Consumer,
    PageNotFound,
    _q,
    _status,
    field_errors,
    form_of,
)
from gbadz.console.session import Signed
from gbadz.console.web import render
from gbadz.vocabulary import gba_sc_filing_authority

router = APIRouter(prefix="/console", include_in_schema=False)
#: States the requester can still withdraw from (the API's ``WITHDRAWABLE``).
OPEN_STATES = ("submitted", "under_provider_review", "under_compliance_review")
MAX_REASON = 500


def gba_sc_filings(decision: dict[str, Any], days: int) -> list[dict[str, Any]]:
    """Who files a GBA standard contract, and with whom: each party with its own authority
    (crossborder-rules.md §2.1-§2.2), as the grant's filing obligations name them."""
    facts = decision.get("facts") or {}
    return [
        {"role": role, "authority": gba_sc_filing_authority(facts.get(side)), "days": days}
        for role, side in (("exporter", "origin"), ("recipient", "dest"))
    ]


async def _request_page(
    request: Request, signed: Signed, request_id: str, template: str, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    found = await api.json("GET", f"/api/v1/access-requests/{_q(request_id)}")
    grant = None
    if found.get("grant_id"):
        # The grant's own status (active, suspended, revoked, expired) says what happens next.
        try:
            grant = await api.json("GET", f"/api/v1/grants/{_q(found['grant_id'])}")
        except PageNotFound:  # pragma: no cover - whoever sees the request sees its grant
            grant = None
    days = int(request.app.state.rules.validity["filing_working_days"])
    context = {"errors": {}, "values": {}} | extra
    return render(
        request,
        template,
        status_code=status_code,
        signed=signed,
        r=found,
        grant=grant,
        filings=gba_sc_filings(found["decision"], days),
        withdrawable=signed.person.role == "consumer"
        and signed.person.org_id == found["requester_org_id"]
        and found["state"] in OPEN_STATES,
        **context,
    )


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: str, signed: Anyone) -> Response:
    """One request: decision, legal basis, state history and what happens next."""
    return await _request_page(request, signed, request_id, "request.html")


@router.get("/requests/{request_id}/withdraw")
async def confirm_withdrawal(request: Request, request_id: str, signed: Consumer) -> Response:
    """The confirmation before a withdrawal (a page of its own: no script needed)."""
    return await _request_page(request, signed, request_id, "withdraw.html")


@router.post("/requests/{request_id}/withdraw")
async def withdraw(request: Request, request_id: str, signed: Consumer) -> Response:
    form = await form_of(request, signed)
    reason = str(form.get("reason") or "").strip()
    if len(reason) > MAX_REASON:
        errors = {"reason": "Keep the reason under 500 characters."}
        return await _request_page(
            request, signed, request_id, "withdraw.html", 422, errors=errors, values={"reason": reason}
        )
    try:
        await Api(request, signed).json(
            "POST",
            f"/api/v1/access-requests/{_q(request_id)}/withdraw",
            json={"reason": reason} if reason else {},
        )
    except ApiFailed as failure:
        errors = field_errors(failure, {"reason"})
        return await _request_page(
            request,
            signed,
            request_id,
            "withdraw.html",
            _status(failure),
            errors=errors,
            values={"reason": reason},
        )
    return RedirectResponse(f"/console/requests/{_q(request_id)}?done=withdrawn", status_code=303)


@router.get("/grants/{grant_id}")
async def grant_page(request: Request, grant_id: str, signed: Anyone) -> Response:
    """One grant: columns, obligations, expiry, state and why it was suspended or revoked."""
    api = Api(request, signed)
    grant = await api.json("GET", f"/api/v1/grants/{_q(grant_id)}")
    asked = await api.json("GET", f"/api/v1/access-requests/{_q(grant['request_id'])}")
    duties = await api.json("GET", "/api/v1/obligations", params={"grant_id": grant["id"], "limit": 1000})
    return render(
        request,
        "grant.html",
        signed=signed,
        g=grant,
        r=asked,
        duties=duties,
        form_key=secrets.token_urlsafe(12),
    )
