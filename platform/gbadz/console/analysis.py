"""The analysis page of a grant (issue #18): what may be asked, an estimate, a run, the budget.

Like every console page it calls the JSON API in process as the signed-in person, so the
allow-list, the budget ledger, the transfer decision and the log are the API's alone. The page
adds what a person needs to use them well: the columns and bounds in plain words (the bounds
bias results, and the page says so), an example query, the noise before spending, refusals
translated beside the query box, the result as a table and a server-rendered bar chart, and
the budget as a meter. It works without JavaScript: two buttons of one plain form.

A run is POST-redirect-GET: the release is shown at ``?release=<id>``, so a reload shows it
again instead of spending again, and a double click sends one Idempotency-Key (one charge).
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gbadz.console import charts
from gbadz.console.i18n import translate
from gbadz.console.routes import (
    Api,
    ApiFailed,
    Consumer,
    PageNotFound,
    _q,
    _status,
    form_of,
)
from gbadz.console.session import Signed
from gbadz.console.web import locale_of, render

router = APIRouter(prefix="/console", include_in_schema=False)
#: The longest query the page sends (the API's own limit is larger; an allow-listed query is short).
MAX_SQL_CHARS = 4000
#: Earlier releases listed on the page (newest first).
HISTORY = 100
#: What the allow-list accepts besides columns, as the page lists it (gbadz.analysis.query).
AGGREGATES = ("COUNT(*)", "SUM(measure)", "AVG(measure)")
DATE_FUNCTIONS = (
    "year(d)",
    "quarter(d)",
    "month(d)",
    "extract(year|quarter|month FROM d)",
    "date_trunc('year'|'quarter'|'month'|'week'|'day', d)",
)
_RULE = re.compile(r"rule ([a-z][a-z-]*): (.*)", re.DOTALL)
_EXHAUSTED = re.compile(r"epsilon: ([0-9.e+-]+) asked, ([0-9.e+-]+) left of ([0-9.e+-]+)")
_RETRY = re.compile(r"try again in ([0-9]+) s")


def eps(value: Any) -> str:
    """ε or δ for people: at most six significant digits (the ledger keeps the exact value)."""
    if value is None:
        return "—"
    number = float(value)
    return f"{number:.6g}" if abs(number) >= 1e-4 or number == 0 else f"{number:.2g}"


def num(value: Any) -> str:
    """A released or contract number for people: thousands separated, no trailing ``.0``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{value:,}"


def suggested_epsilon(spec: dict[str, Any], budget: dict[str, Any] | None) -> str:
    """The ε the form suggests: one query's limit, or what is left if less (rounded down, so the
    suggestion never asks a hair more than is left)."""
    most = (spec.get("budget") or {}).get("max_epsilon_per_query")
    if most is None or budget is None:
        return ""
    value = math.floor(min(float(most), float(budget["epsilon_left"])) * 1e6) / 1e6
    return f"{value:g}" if value > 0 else ""


def example_query(spec: dict[str, Any], granted: set[str]) -> str:
    """A query the allow-list accepts, from the grant's own columns: a count and the mean of the
    first measure per value of the first dimension whose values are declared (no δ spent)."""
    dimensions = [d for d in spec.get("dimensions") or [] if d["name"] in granted]
    measures = [m for m in spec.get("measures") or [] if m["name"] in granted]
    public = [d for d in dimensions if d.get("known_values") is not None] or dimensions
    select, group = ["COUNT(*) AS n"], ""
    if measures:
        name = measures[0]["name"]
        select.append(f"AVG({name}) AS mean_{name}")
    if public:
        key = public[0]["name"]
        select.insert(0, key)
        group = f"\nGROUP BY {key}"
    return f"SELECT {', '.join(select)}\nFROM {spec.get('table', 'data')}{group}"


def _offer(grant: dict[str, Any], overview: dict[str, Any] | None) -> dict[str, Any]:
    """What the grant may ask, limited to the columns it covers. From the live spec when the grant
    is active; from the terms stored with the grant when it has ended (its history stays readable)."""
    granted = set(grant.get("columns") or [])
    if overview is not None:
        spec = dict(overview["spec"])
    else:
        terms = grant.get("analysis") or {}
        spec = {
            "table": None,
            "mode": terms.get("mode"),
            "dimensions": [
                {"name": d, "type": None, "known_values": None} for d in terms.get("dimensions", [])
            ],
            "measures": list(terms.get("measures") or []),
            "privacy_unit": terms.get("privacy_unit"),
            "max_rows_per_person": terms.get("max_rows_per_person"),
            "max_groups_per_person": terms.get("max_groups_per_person"),
            "min_group_size": terms.get("min_group_size"),
            "budget": terms.get("budget"),
        }
    spec["dimensions"] = [d for d in spec.get("dimensions") or [] if d["name"] in granted]
    spec["measures"] = [m for m in spec.get("measures") or [] if m["name"] in granted]
    return spec


def _accuracy(items: Any) -> list[dict[str, Any]]:
    """The API's per-aggregate noise as a list of {name, function, accuracy, scale}."""
    if isinstance(items, dict):  # tolerate a mapping name -> details
        return [{"name": k} | (v if isinstance(v, dict) else {"accuracy": v}) for k, v in items.items()]
    return [dict(item) for item in items or []]


def refusal(failure: ApiFailed, locale: str, spec: dict[str, Any] | None) -> dict[str, str]:
    """The API's refusal as the page shows it, translated, beside the field it concerns.

    Keys: ``sql``, ``epsilon`` or ``form``; ``detail`` holds the API's own English text (it
    names rules and columns, never a value) for a person who wants the exact reason."""

    def t(text: str, **params: Any) -> str:
        label = translate(text, locale)
        return label.format(**params) if params else label

    detail = failure.detail
    if isinstance(detail, list):  # payload validation (422): which field, in our words
        fields = {str(part) for item in detail for part in item.get("loc", [])}
        if "epsilon" in fields:
            return {"epsilon": t("Enter ε as a number, such as 0.5.")}
        return {"sql": t("Enter a query of at most {n} characters.", n=MAX_SQL_CHARS)}
    text = str(detail or "")
    error = failure.error or ""
    if error == "QueryRefused":
        found = _RULE.search(text)
        rule = found.group(1) if found else "unknown"
        explained = translate(f"rule:{rule}", locale)
        if explained == f"rule:{rule}":
            explained = t("The query breaks a rule of the allow-list.")
        return {"sql": f"{explained} ({t('rule')} {rule})", "detail": text.removeprefix("sql: ")}
    if error == "BudgetExhausted":
        numbers = _EXHAUSTED.search(text)
        if numbers:
            asked, left, total = (eps(float(n)) for n in numbers.groups())
            message = t(
                "The privacy budget cannot pay for this query: ε {asked} asked, ε {left} left of {total}.",
                asked=asked,
                left=left,
                total=total,
            )
        else:
            message = t("The privacy budget cannot pay for this query.")
        return {"epsilon": message, "detail": text}
    if error == "EpsilonRefused":
        most = ((spec or {}).get("budget") or {}).get("max_epsilon_per_query")
        return {
            "epsilon": t("ε must be a positive number, at most {most} for one query.", most=eps(most)),
            "detail": text,
        }
    if error == "AnalysisRateLimited":
        wait = _RETRY.search(text)
        return {
            "form": t(
                "This grant ran as many analyses as its limit allows; try again in {s} s.", s=wait.group(1)
            )
            if wait
            else t("This grant ran as many analyses as its limit allows; try again later."),
        }
    if error == "AnalysisStopped":
        return {
            "sql": t("The analysis stopped inside the zone after reading the data; its ε stays spent."),
            "detail": text,
        }
    if error == "AnalysisFailed":
        return {"sql": t("The analysis failed inside the zone; its ε was refunded."), "detail": text}
    if error in ("ComputeUnavailable", "StorageUnavailable") or failure.status >= 500:
        return {
            "form": t("The zone could not run the analysis just now; nothing was spent. Try again later.")
        }
    if error == "TooLargeForSync":
        return {"form": t("This dataset is too large for an analysis answered at once."), "detail": text}
    if error in ("GrantInactive", "GrantSuspended", "DatasetRetired", "NoAnalyses", "NoPublishedVersion"):
        return {"form": t("This grant accepts no new analyses."), "detail": text}
    if error == "ObligationsOpen":
        return {
            "form": t("The provider has not yet met what the law requires before anything leaves."),
            "detail": text,
        }
    if error == "AnalysisInProgress":
        return {"form": t("This analysis is still running; reload the page in a moment.")}
    field = failure.field if failure.field in ("sql", "epsilon") else "form"
    return {field: text.removeprefix(f"{field}: ")}


async def _page(
    request: Request,
    signed: Signed,
    grant_id: str,
    status_code: int = 200,
    failure: ApiFailed | None = None,
    **extra: Any,
) -> Response:
    """The page; ``failure`` is an API refusal of the form just sent, shown beside its field."""
    api = Api(request, signed)
    path = f"/api/v1/grants/{_q(grant_id)}"
    grant = await api.json("GET", path)
    # Only the grantee's people, and only an analysis grant, have this page (else: missing).
    if grant.get("kind") != "analysis" or grant.get("grantee_org_id") != signed.person.org_id:
        raise PageNotFound
    overview, closed = None, None
    try:
        overview = await api.json("GET", f"{path}/analysis")
    except ApiFailed as stopped:  # ended, suspended, retired: no new analyses; the history stays
        closed = refusal(stopped, locale_of(request), None)
    releases = await api.json("GET", f"{path}/analyses", params={"limit": HISTORY})
    shown = None
    wanted = request.query_params.get("release", "")
    if wanted:
        shown = next((r for r in releases if r["id"] == wanted), None)
        if shown is None:
            shown = await api.json("GET", f"{path}/analyses/{_q(wanted)}")
    try:
        dataset = await api.json("GET", f"/api/v1/datasets/{_q(grant['dataset_id'])}")
        name = str(dataset["name"])
    except PageNotFound:  # retired or no longer listed: the id still names it
        name = str(grant["dataset_id"])
    spec = _offer(grant, overview)
    budget = overview["budget"] if overview else (releases[0].get("budget") if releases else None)
    locale = locale_of(request)

    def t(text: str) -> str:
        return translate(text, locale)

    result = None
    if shown is not None and shown.get("state") == "released":
        accuracy = _accuracy(shown.get("accuracy"))
        result = {
            "release": shown,
            "accuracy": accuracy,
            "charts": charts.release_bars(shown.get("columns") or [], shown.get("rows") or [], accuracy, t=t),
        }
    estimate = extra.pop("estimate", None)
    if estimate is not None:
        estimate = estimate | {"accuracy": _accuracy(estimate.get("accuracy"))}
    values = extra.pop("values", None) or {}
    if "sql" not in values:
        values["sql"] = shown["sql"] if shown else example_query(spec, set(grant.get("columns") or []))
    if "epsilon" not in values:
        values["epsilon"] = suggested_epsilon(spec, budget)
    if failure is not None:
        extra["errors"] = refusal(failure, locale, overview["spec"] if overview else None)
    context = {"errors": {}} | extra
    return render(
        request,
        "analysis.html",
        status_code=status_code,
        signed=signed,
        grant=grant,
        dataset_name=name,
        spec=spec,
        budget=budget,
        closed=closed,
        releases=releases,
        shown=shown,
        result=result,
        estimate=estimate,
        values=values,
        aggregates=AGGREGATES,
        date_functions=DATE_FUNCTIONS,
        form_key=secrets.token_urlsafe(16),
        eps=eps,
        num=num,
        **context,
    )


@router.get("/grants/{grant_id}/analysis")
async def analysis_page(request: Request, grant_id: str, signed: Consumer) -> Response:
    return await _page(request, signed, grant_id)


def _ask(form: Any, locale: str) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The form as the API's body, or the fields it gets wrong (checked here, named, translated)."""
    sql = str(form.get("sql") or "").strip()
    text = str(form.get("epsilon") or "").strip()
    values = {"sql": sql, "epsilon": text}
    errors: dict[str, str] = {}
    if not sql:
        errors["sql"] = translate("Enter a query.", locale)
    elif len(sql) > MAX_SQL_CHARS:
        errors["sql"] = translate("Enter a query of at most {n} characters.", locale).format(n=MAX_SQL_CHARS)
    body: dict[str, Any] = {"sql": sql}
    if text:
        try:
            epsilon = float(text)
        except ValueError:
            epsilon = math.nan
        if not math.isfinite(epsilon) or len(text) > 32:
            errors["epsilon"] = translate("Enter ε as a number, such as 0.5.", locale)
        else:
            body["epsilon"] = epsilon
    return body, errors, values


@router.post("/grants/{grant_id}/analysis/estimate")
async def estimate(request: Request, grant_id: str, signed: Consumer) -> Response:
    """What the query would cost and how noisy it would be: spends nothing."""
    form = await form_of(request, signed)
    locale = locale_of(request)
    body, errors, values = _ask(form, locale)
    if errors:
        return await _page(request, signed, grant_id, 422, errors=errors, values=values)
    try:
        found = await Api(request, signed).json(
            "POST", f"/api/v1/grants/{_q(grant_id)}/analyses/estimate", json=body
        )
    except ApiFailed as failure:
        return await _page(request, signed, grant_id, _status(failure), failure=failure, values=values)
    return await _page(request, signed, grant_id, estimate=found, values=values)


@router.post("/grants/{grant_id}/analysis/run")
async def run(request: Request, grant_id: str, signed: Consumer) -> Response:
    """Run the query inside the zone (spends ε), then show its release at its own address."""
    form = await form_of(request, signed)
    locale = locale_of(request)
    body, errors, values = _ask(form, locale)
    if errors:
        return await _page(request, signed, grant_id, 422, errors=errors, values=values)
    key = str(form.get("idempotency_key") or "")[:200]
    headers = {"Idempotency-Key": key} if key else {}
    try:
        released = await Api(request, signed).json(
            "POST", f"/api/v1/grants/{_q(grant_id)}/analyses", json=body, headers=headers
        )
    except ApiFailed as failure:
        return await _page(request, signed, grant_id, _status(failure), failure=failure, values=values)
    return RedirectResponse(
        f"/console/grants/{_q(grant_id)}/analysis?release={_q(str(released['id']))}#result", status_code=303
    )


@router.get("/grants/{grant_id}/analysis/{action}")
async def back_to_the_page(request: Request, grant_id: str, action: str, signed: Consumer) -> Response:
    """A GET of a form's address (the language switch on a page a form answered, a bookmark)
    goes back to the page itself; nothing is estimated or run."""
    if action not in ("estimate", "run"):
        raise PageNotFound
    return RedirectResponse(f"/console/grants/{_q(grant_id)}/analysis", status_code=303)
