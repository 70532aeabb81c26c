"""The provider's publishing pages (issue #19): register and change a contract, upload a version
and watch its ingestion run, deprecate and retire with the consequences stated first; and the
compliance officer's listing review that lets a registered dataset be seen.

Like every console page these call the JSON API in process as the signed-in person: the
contract lint, semver, ownership, the upload limit and the classification review are the API's
rules, enforced once. Everything works without JavaScript: plain forms (a file field sends a
multipart body, streamed on to the API), and a run page that refreshes itself with a meta
refresh while the run is queued or running.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from gbadz.console.routes import (
    Api,
    ApiFailed,
    FormExpired,
    Officer,
    PageNotFound,
    Provider,
    _q,
    _status,
    form_of,
)
from gbadz.console.session import Signed
from gbadz.console.web import FormTooLarge, read_multipart, render

router = APIRouter(prefix="/console", include_in_schema=False)
#: A contract, as the API takes it (gbadz.contract.MAX_CONTRACT_BYTES is 1 MiB).
MAX_CONTRACT_BYTES = 1024 * 1024
#: Slack for the multipart framing and the form's small fields around the file.
FRAMING_BYTES = 1024 * 1024
CHUNK = 1024 * 1024
UPLOAD_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
#: A run in one of these states is not over: its page refreshes itself.
PENDING = ("queued", "running")
#: The DAG's tasks in the order they run (the branch takes publish or quarantine).
TASKS = ("land", "validate", "route", "publish", "quarantine")
_RUN_ID = re.compile(r"[0-9]{1,18}")

TEMPLATE = """\
# A data contract: the Open Data Contract Standard v3 with the gbadz block.
# Change the id, name, columns and licence to your dataset's; every column is classified.
apiVersion: v3.0.2
kind: DataContract
id: my-visitor-arrivals
name: Visitor arrivals by market
version: 1.0.0
status: active
description:
  purpose: Daily visitor arrivals by source market, for tourism research.
tags: [tourism, statistics]
schema:
  - name: visitor_arrivals
    properties:
      - {{name: arrival_date, logicalType: date, required: true}}
      - name: source_market
        logicalType: string
        required: true
        quality: [{{rule: validValues, validValues: [Mainland China, Hong Kong, Macao, Other]}}]
      - {{name: arrivals, logicalType: integer, required: true, logicalTypeOptions: {{minimum: 0}}}}
gbadz:
  provider: {{organization: {organisation}}}
  origin: MO  # your organisation's registered jurisdiction
  category: general
  columns:
    arrival_date: {{pi: false}}
    source_market: {{pi: false}}
    arrivals: {{pi: false}}
  licence:
    permitted_purposes: [trade_transport_academic_mfg_marketing, statutory_duty]
    max_grant_duration: P1Y
    onward_transfer_allowed: false
"""


# -- contract: register and change ------------------------------------------------------------------
def _problems(response: Any) -> list[dict[str, str]]:
    """The API's lint problems, each with its field path (or the one message it gave)."""
    try:
        body = response.json()
    except ValueError:
        return [{"field": "", "message": f"the service answered {response.status_code}"}]
    if not isinstance(body, dict):
        return [{"field": "", "message": str(body)}]
    listed = body.get("problems")
    if isinstance(listed, list) and listed:
        return [{"field": str(p.get("field", "")), "message": str(p.get("message", ""))} for p in listed]
    detail = body.get("detail")
    if isinstance(detail, list):  # payload validation
        return [
            {"field": ".".join(str(x) for x in d.get("loc", [])), "message": str(d.get("msg"))}
            for d in detail
        ]
    field = str(body.get("field") or "")
    return [{"field": field, "message": str(detail or "").removeprefix(f"{field}: ")}]


async def _contract_text(request: Request, signed: Signed) -> tuple[str, dict[str, str]]:
    """The contract a form sent: the chosen file if any, else the text box. Errors by field."""
    if not hmac.compare_digest(str(request.query_params.get("csrf") or ""), signed.csrf):
        raise FormExpired
    form = await read_multipart(request, MAX_CONTRACT_BYTES * 2 + FRAMING_BYTES, max_fields=10)
    try:
        if not hmac.compare_digest(str(form.get("csrf") or ""), signed.csrf):
            raise FormExpired
        text = str(form.get("contract_text") or "")
        upload = form.get("contract_file")
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(MAX_CONTRACT_BYTES + 1)
            if len(data) > MAX_CONTRACT_BYTES:
                return text, {"contract_file": "The contract file is larger than 1 MiB."}
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return text, {"contract_file": "The contract file is not UTF-8 text (YAML or JSON)."}
    finally:
        await form.close()
    if not text.strip():
        return text, {"contract_text": "Paste the contract, or choose its YAML file."}
    if len(text.encode()) > MAX_CONTRACT_BYTES:
        return text, {"contract_text": "The contract is larger than 1 MiB."}
    return text, {}


def _contract_page(
    request: Request,
    signed: Signed,
    *,
    dataset: dict[str, Any] | None,
    text: str,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    problems: list[dict[str, str]] | None = None,
    etag: str = "",
) -> Response:
    return render(
        request,
        "provider_contract.html",
        status_code=status_code,
        signed=signed,
        dataset=dataset,
        text=text,
        errors=errors or {},
        problems=problems or [],
        etag=etag,
    )


#: An entity tag (RFC 9110): printable ASCII in quotes, weak or strong; the page's ``?etag=``.
ETAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e]{0,98}"')
BAD_ETAG = "etag: the contract's version tag in the address is not valid; open the contract page again."


@router.get("/provider/datasets/new")
async def new_dataset(request: Request, signed: Provider) -> Response:
    organisation = yaml.safe_dump(signed.person.org_name, default_style='"').strip()
    return _contract_page(request, signed, dataset=None, text=TEMPLATE.format(organisation=organisation))


@router.post("/provider/datasets")
async def register_dataset(request: Request, signed: Provider) -> Response:
    text, errors = await _contract_text(request, signed)
    if errors:
        return _contract_page(request, signed, dataset=None, text=text, status_code=422, errors=errors)
    response = await Api(request, signed).call(
        "POST", "/api/v1/datasets", content=text.encode(), headers={"Content-Type": "application/yaml"}
    )
    if response.status_code != 201:
        if response.status_code == 401:
            raise PageNotFound
        problems = _problems(response)
        return _contract_page(
            request,
            signed,
            dataset=None,
            text=text,
            status_code=_status(ApiFailed(response.status_code, None)),
            errors={"contract_text": "The contract has problems; each is listed with its field."},
            problems=problems,
        )
    created = response.json()
    return RedirectResponse(f"/console/provider/datasets/{_q(created['id'])}?registered=1", status_code=303)


async def _owned(api: Api, dataset_id: str) -> tuple[dict[str, Any], str]:
    """The provider's own dataset (contract included) and its contract ETag; others' look missing."""
    response = await api.call("GET", f"/api/v1/datasets/{_q(dataset_id)}")
    if response.status_code != 200:
        raise PageNotFound
    dataset = response.json()
    if dataset.get("contract") is None:  # listed, but not this organisation's
        raise PageNotFound
    return dataset, response.headers.get("x-contract-etag", "")


@router.get("/provider/datasets/{dataset_id}/contract")
async def edit_contract(request: Request, dataset_id: str, signed: Provider) -> Response:
    dataset, etag = await _owned(Api(request, signed), dataset_id)
    text = yaml.safe_dump(dataset["contract"], sort_keys=False, allow_unicode=True)
    return _contract_page(request, signed, dataset=dataset, text=text, etag=etag)


@router.post("/provider/datasets/{dataset_id}/contract")
async def change_contract(request: Request, dataset_id: str, signed: Provider) -> Response:
    api = Api(request, signed)
    etag = str(request.query_params.get("etag") or "")
    text, errors = await _contract_text(request, signed)
    dataset, current = await _owned(api, dataset_id)
    if etag and not ETAG.fullmatch(etag):
        # It goes into the If-Match header: only an entity tag as the API writes one (ASCII).
        return _contract_page(
            request,
            signed,
            dataset=dataset,
            text=text,
            status_code=422,
            errors={"contract_text": BAD_ETAG},
            etag=current,
        )
    if errors:
        return _contract_page(
            request, signed, dataset=dataset, text=text, status_code=422, errors=errors, etag=etag
        )
    headers = {"Content-Type": "application/yaml"} | ({"If-Match": etag} if etag else {})
    response = await api.call(
        "PUT", f"/api/v1/datasets/{_q(dataset_id)}", content=text.encode(), headers=headers
    )
    if response.status_code != 200:
        if response.status_code == 404:
            raise PageNotFound
        return _contract_page(
            request,
            signed,
            dataset=dataset,
            text=text,
            status_code=_status(ApiFailed(response.status_code, None)),
            errors={"contract_text": "The contract has problems; each is listed with its field."},
            problems=_problems(response),
            etag=etag,
        )
    return RedirectResponse(f"/console/provider/datasets/{_q(dataset_id)}?changed=1", status_code=303)


# -- the provider's page of one dataset ----------------------------------------------------------------
async def _manage_page(
    request: Request, signed: Signed, dataset_id: str, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    dataset, _ = await _owned(api, dataset_id)
    runs = await api.json("GET", f"/api/v1/datasets/{_q(dataset_id)}/ingestion-runs", params={"limit": 20})
    grants = await api.json("GET", "/api/v1/grants", params={"dataset_id": dataset_id, "limit": 200})
    context = {"errors": {}} | extra
    return render(
        request,
        "provider_dataset.html",
        status_code=status_code,
        signed=signed,
        dataset=dataset,
        runs=runs,
        grants=grants,
        max_upload=request.app.state.settings.api.max_upload_bytes,
        flash=next(
            (k for k in ("registered", "changed", "deprecated", "retired") if k in request.query_params), None
        ),
        **context,
    )


@router.get("/provider/datasets/{dataset_id}")
async def manage_dataset(request: Request, dataset_id: str, signed: Provider) -> Response:
    return await _manage_page(request, signed, dataset_id)


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("/provider/datasets/{dataset_id}/uploads")
async def upload_version(request: Request, dataset_id: str, signed: Provider) -> Response:
    """A new version's file from a plain file field, streamed on to the API (never read whole
    into memory: Starlette spools the part to disk, and the API gets it chunk by chunk)."""
    # The token travels in the action URL too, so a forged form is refused before its body is read.
    if not hmac.compare_digest(str(request.query_params.get("csrf") or ""), signed.csrf):
        raise FormExpired
    limit = request.app.state.settings.api.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit + FRAMING_BYTES:
        raise FormTooLarge
    form = await read_multipart(request, limit + FRAMING_BYTES, max_fields=5)
    try:
        if not hmac.compare_digest(str(form.get("csrf") or ""), signed.csrf):
            raise FormExpired
        upload = form.get("file")
        error = None
        suffix = ""
        if isinstance(upload, UploadFile) and upload.filename:
            suffix = "." + upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else ""
        if not isinstance(upload, UploadFile) or not upload.filename:
            error = "Choose the file to upload (CSV or Parquet)."
        elif suffix not in UPLOAD_TYPES:
            error = "Choose a CSV (.csv) or Parquet (.parquet) file."
        elif not upload.size:
            error = "The file is empty."
        if error is not None:
            return await _manage_page(request, signed, dataset_id, 422, errors={"file": error})
        assert isinstance(upload, UploadFile)
        response = await Api(request, signed).call(
            "POST",
            f"/api/v1/datasets/{_q(dataset_id)}/uploads",
            content=_chunks(upload),
            headers={"Content-Type": UPLOAD_TYPES[suffix]},
        )
    finally:
        await form.close()
    if response.status_code in (403, 404):
        raise PageNotFound
    if response.status_code != 202:
        problems = _problems(response)
        message = problems[0]["message"] if problems else "The upload was refused."
        return await _manage_page(
            request,
            signed,
            dataset_id,
            _status(ApiFailed(response.status_code, None)),
            errors={"file": message},
        )
    accepted = response.json()
    return RedirectResponse(
        f"/console/provider/datasets/{_q(dataset_id)}/runs/{accepted['id']}?size={accepted['size']}",
        status_code=303,
    )


@router.get("/provider/datasets/{dataset_id}/runs/{run_id}")
async def run_page(request: Request, dataset_id: str, run_id: str, signed: Provider) -> Response:
    """One ingestion run: queued, running (the DAG's tasks), then published or rejected with why."""
    if not _RUN_ID.fullmatch(run_id):
        raise PageNotFound
    api = Api(request, signed)
    run = await api.json("GET", f"/api/v1/datasets/{_q(dataset_id)}/ingestion-runs/{run_id}")
    dataset, _ = await _owned(api, dataset_id)
    states = run.get("task_states") or {}
    tasks = [{"name": name, "state": states.get(name)} for name in TASKS if name in states]
    pending = run["status"] in PENDING
    response = render(
        request, "provider_run.html", signed=signed, dataset=dataset, run=run, tasks=tasks, pending=pending
    )
    if pending:  # no script needed: the browser reloads the page until the run is over
        response.headers["Refresh"] = "3"
    return response


# -- deprecate and retire ---------------------------------------------------------------------------------
ENDINGS = ("deprecate", "retire")


async def _consequences(api: Api, dataset_id: str) -> dict[str, Any]:
    return await api.json("GET", f"/api/v1/datasets/{_q(dataset_id)}/retirement-preview")  # type: ignore[no-any-return]


async def _ending_page(
    request: Request, signed: Signed, dataset_id: str, action: str, status_code: int = 200, **extra: Any
) -> Response:
    api = Api(request, signed)
    dataset, _ = await _owned(api, dataset_id)
    context = {"errors": {}, "values": {}} | extra
    return render(
        request,
        "provider_ending.html",
        status_code=status_code,
        signed=signed,
        dataset=dataset,
        action=action,
        preview=await _consequences(api, dataset_id),
        **context,
    )


@router.get("/provider/datasets/{dataset_id}/{action}")
async def ending_page(request: Request, dataset_id: str, action: str, signed: Provider) -> Response:
    """What deprecating or retiring does to this dataset's grants and copies, before confirming."""
    if action not in ENDINGS:
        raise PageNotFound
    return await _ending_page(request, signed, dataset_id, action)


@router.post("/provider/datasets/{dataset_id}/{action}")
async def end_dataset(request: Request, dataset_id: str, action: str, signed: Provider) -> Response:
    if action not in ENDINGS:
        raise PageNotFound
    form = await form_of(request, signed)
    reason = str(form.get("reason") or "").strip()
    if action == "retire" and form.get("confirm") != "on":
        errors = {"confirm": "Tick the box to confirm that you understand what retiring does."}
        return await _ending_page(
            request, signed, dataset_id, action, 422, errors=errors, values={"reason": reason}
        )
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/datasets/{_q(dataset_id)}/{action}", json={"reason": reason}, refusals=True
        )
    except ApiFailed as failure:
        errors = {"reason": _reason_error(failure)}
        return await _ending_page(
            request, signed, dataset_id, action, _status(failure), errors=errors, values={"reason": reason}
        )
    done = "deprecated" if action == "deprecate" else "retired"
    return RedirectResponse(f"/console/provider/datasets/{_q(dataset_id)}?{done}=1", status_code=303)


def _reason_error(failure: ApiFailed) -> str:
    if isinstance(failure.detail, list):
        return "Give a reason of 3 to 1,000 characters."
    return (
        str(failure.detail or "").removeprefix(f"{failure.field}: ") if failure.field else str(failure.detail)
    )


# -- the compliance officer's listing review ---------------------------------------------------------------
async def _classifications_page(
    request: Request, signed: Signed, status_code: int = 200, **extra: Any
) -> Response:
    items = await Api(request, signed).json("GET", "/api/v1/classification-reviews", params={"limit": 100})
    context = {"errors": {}, "error_for": None, "values": {}} | extra
    return render(
        request, "classifications.html", status_code=status_code, signed=signed, items=items, **context
    )


@router.get("/compliance/classifications")
async def classifications(request: Request, signed: Officer) -> Response:
    return await _classifications_page(request, signed)


@router.post("/compliance/classifications/{dataset_id}")
async def review_classification(request: Request, dataset_id: str, signed: Officer) -> Response:
    form = await form_of(request, signed)
    decision = str(form.get("decision") or "")
    note = str(form.get("note") or "").strip()
    values = {"note": note}
    if decision not in ("approve", "return"):
        errors = {"decision": "Choose to sign off or to return the classification."}
        return await _classifications_page(
            request, signed, 422, errors=errors, error_for=dataset_id, values=values
        )
    body = {
        "approve": decision == "approve",
        "note": note,
        "contract_sha256": str(form.get("contract_sha256") or "")[:64],
    }
    try:
        await Api(request, signed).json(
            "POST", f"/api/v1/datasets/{_q(dataset_id)}/classification-review", json=body, refusals=True
        )
    except ApiFailed as failure:
        if isinstance(failure.detail, list):
            errors = {"note": "Write a note of 3 to 2,000 characters."}
        elif failure.field in ("note",):
            errors = {"note": str(failure.detail).removeprefix("note: ")}
        else:
            errors = {"form": str(failure.detail)}
        return await _classifications_page(
            request, signed, _status(failure), errors=errors, error_for=dataset_id, values=values
        )
    return RedirectResponse(f"/console/compliance/classifications?done={_q(dataset_id)}", status_code=303)
