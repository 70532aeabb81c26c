"""The analysis page of a grant over HTTP (issue #18), on both databases, against the real API,
S3, sandbox and transfer log: the startup estimates, runs, reads the table, the chart and the
meter; hostile queries, an exhausted budget, someone else's grant and a forged form are refused
as the party who would gain would try them; the page reads in the three languages."""

from __future__ import annotations

import html as html_text
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.access.models import AccessRequest
from gbadz.analysis.models import Analysis, AnalysisBudget
from gbadz.config import Settings
from gbadz.console import charts
from gbadz.console.i18n import CATALOG, LOCALES
from gbadz.translog.models import LogEntry
from tests.api import bearer, fetch_token, make_client
from tests.console.conftest import sign_in
from tests.console.world import Analysis as Granted
from tests.console.world import World, add_analysis_grant, add_person

SignedIn = Callable[[str], TestClient]
ANALYSIS = Path(__file__).resolve().parents[2] / "platform" / "gbadz" / "analysis"
#: A budget two queries exhaust: ε 1 in all, at most 0.6 per query.
SMALL_BUDGET = {"epsilon": 1.0, "delta": 1e-7, "max_epsilon_per_query": 0.6}
BY_DEPARTMENT = "SELECT department, COUNT(*) AS visits, AVG(fee_cny) AS mean_fee FROM outpatient_visits GROUP BY department"


@pytest.fixture(scope="module")
def granted(shared: tuple[FastAPI, Settings, World], tmp_path_factory: pytest.TempPathFactory) -> Granted:
    """The world's startup holds an analysis grant on the provider's hospital visits."""
    app, settings, world = shared
    return add_analysis_grant(app, settings, world, tmp_path_factory.mktemp("visits"), budget=SMALL_BUDGET)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _key(html: str) -> str:
    found = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _spent(app: FastAPI, grant: str) -> tuple[float, int, int]:
    """ε spent, analyses written and release entries logged for the grant."""
    with app.state.sessionmaker() as session:
        row = session.get(AnalysisBudget, grant)
        analyses = session.scalar(
            sa.select(sa.func.count()).select_from(Analysis).where(Analysis.grant_id == grant)
        )
        logged = session.scalar(
            sa.select(sa.func.count())
            .select_from(LogEntry)
            .where(LogEntry.grant_id == grant, LogEntry.kind == "release")
        )
    return (row.epsilon_spent if row is not None else 0.0), int(analyses or 0), int(logged or 0)


def _meter(html: str) -> tuple[float, float]:
    found = re.search(r'<meter id="budget-meter" min="0" max="([0-9.e-]+)" value="([0-9.e-]+)"', html)
    assert found is not None, "no budget meter"
    return float(found.group(2)), float(found.group(1))


class TestTheStartupsAnalysis:
    def test_estimate_run_table_chart_meter_then_exhaustion(
        self, app: FastAPI, granted: Granted, signed_in: SignedIn
    ) -> None:
        """The startup reads what it may ask, estimates (nothing spent), runs (the meter drops, the
        table, chart and log entry appear, a double click is one charge), then is told what is left."""
        client = signed_in("consumer")
        page_url = f"/console/grants/{granted.grant}/analysis"
        page = client.get(page_url)
        assert 200 == page.status_code, page.text[:500]
        html = page.text
        for shown in ("<code>department</code>", "<code>cardiology</code>", "<code>fee_cny</code>", "5,000"):
            assert shown in html, shown
        assert "Each person counts at most 5 rows" in html
        assert "Groups whose noisy count is under 20 are not released." in html
        assert "These bounds bias results." in html
        assert "date_trunc(" in html
        assert "patient_id" in html  # named as the privacy unit, never offered as a column
        assert "<code>patient_id</code>" not in html
        assert (1.0, 1.0) == _meter(html)
        example = re.search(r'<textarea id="sql" name="sql"[^>]*>([^<]+)</textarea>', html)
        assert example is not None
        assert "GROUP BY department" in example.group(1)
        assert 'value="0.6"' in html  # the suggested ε: one query's limit
        form = {"csrf": _csrf(html), "sql": example.group(1), "epsilon": "0.6", "idempotency_key": _key(html)}

        estimated = client.post(f"{page_url}/estimate", data=form)
        assert 200 == estimated.status_code, estimated.text[:500]
        assert "Estimate: nothing was spent" in estimated.text
        assert re.search(r"± [0-9,]+\.[0-9]{2}", estimated.text)  # the count's noise at 95%
        assert "the noise of its sum divided by the group&#39;s count" in estimated.text  # the mean's
        assert (0.0, 0, 0) == _spent(app, granted.grant)

        ran = client.post(f"{page_url}/run", data=form)
        assert 303 == ran.status_code, ran.text[:500]
        assert ran.headers["location"].startswith(f"{page_url}?release=")
        again = client.post(f"{page_url}/run", data=form)  # a double click: the same release
        assert ran.headers["location"] == again.headers["location"]
        assert (pytest.approx(0.6), 1, 1) == _spent(app, granted.grant)
        result = client.get(ran.headers["location"])
        assert 200 == result.status_code
        html = result.text
        assert (pytest.approx(0.4), 1.0) == _meter(html)
        table = re.search(r'<table class="release">(.*?)</table>', html, re.DOTALL)
        assert table is not None
        assert "<code>mean_fee_cny</code>" in table.group(1)
        assert len(re.findall(r"<tr>", table.group(1))) >= 2  # the header and released groups
        assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2  # n and mean_fee_cny
        assert 'aria-labelledby="release-0-title"' in html
        with app.state.sessionmaker() as session:
            row = session.scalars(sa.select(Analysis).where(Analysis.grant_id == granted.grant)).one()
        assert row.query_sha256 in html
        assert f"<dt>Transfer-log entry</dt><dd>{row.log_index}</dd>" in html
        assert f'id="release-{row.id}" class="highlight"' in html  # listed among earlier releases

        form |= {"csrf": _csrf(html), "idempotency_key": _key(html), "epsilon": "0.5"}
        warned = client.post(f"{page_url}/estimate", data=form)
        assert "The budget left cannot pay for this query: running it would be refused." in warned.text
        exhausted = client.post(f"{page_url}/run", data=form)
        assert 409 == exhausted.status_code, exhausted.text[:500]
        error = re.search(r'<p class="error" id="epsilon-error" role="alert">([^<]+)', exhausted.text)
        assert error is not None
        assert "ε 0.5 asked, ε 0.4 left of 1." in error.group(1)
        assert 'aria-describedby="epsilon-help epsilon-error" aria-invalid="true"' in exhausted.text
        assert (pytest.approx(0.6), 1, 1) == _spent(app, granted.grant)

        # The officer sees the release in the log beside copies, and in the exporter's counters.
        officer = signed_in("compliance_officer")
        log = officer.get(f"/console/compliance/transfers?transfer_mode=release&dataset={granted.dataset}")
        assert 200 == log.status_code, log.text[:500]
        rows = re.findall(r"<tr><th scope=\"row\">(\d+)</th>(.*?)</tr>", log.text, re.DOTALL)
        assert [str(row.log_index)] == [index for index, _ in rows]
        assert "DP release (aggregates)" in rows[0][1]
        assert "ε 0.6" in rows[0][1]
        assert row.query_sha256[:12] in rows[0][1]
        assert 'value="release" selected' in log.text
        dashboard = officer.get("/console/compliance").text
        assert "1 (ε 0.6)" in dashboard

    @pytest.mark.parametrize(
        ("sql", "rule"),
        [
            ("SELECT * FROM outpatient_visits", "star"),
            ("SELECT patient_id, COUNT(*) AS n FROM outpatient_visits GROUP BY patient_id", "privacy-unit"),
            ("SELECT fee_cny FROM outpatient_visits", "raw-column"),
            ("SELECT COUNT(*) AS n FROM read_parquet('/etc/passwd')", "table-function"),
            (
                "SELECT department, COUNT(*) AS n FROM outpatient_visits JOIN outpatient_visits "
                "USING (visit_id) GROUP BY department",
                "no-join",
            ),
            ("SELECT COUNT(*) AS n FROM outpatient_visits; DROP TABLE outpatient_visits", "one-statement"),
        ],
    )
    def test_a_hostile_query_is_refused_beside_the_box_naming_the_rule(
        self, app: FastAPI, granted: Granted, signed_in: SignedIn, sql: str, rule: str
    ) -> None:
        """The startup tries to read rows or files: 400, the rule named and explained beside the
        query box (the query kept), nothing charged, nothing logged."""
        client = signed_in("consumer")
        page_url = f"/console/grants/{granted.grant}/analysis"
        html = client.get(page_url).text
        before = _spent(app, granted.grant)
        for action in ("estimate", "run"):
            form = {"csrf": _csrf(html), "sql": sql, "epsilon": "0.1", "idempotency_key": _key(html)}
            refused = client.post(f"{page_url}/{action}", data=form)
            assert 400 == refused.status_code, refused.text[:500]
            error = re.search(r'<p class="error" id="sql-error" role="alert">([^<]+)', refused.text)
            assert error is not None
            assert f"(rule {rule})" in error.group(1)
            assert CATALOG[f"rule:{rule}"]["en"] in html_text.unescape(error.group(1))
            assert 'aria-describedby="sql-help sql-error" aria-invalid="true"' in refused.text
            assert re.search(r'<textarea id="sql"[^>]*>([^<]*)</textarea>', refused.text).group(1).strip()  # type: ignore[union-attr]
        assert before == _spent(app, granted.grant)

    def test_bad_form_values_are_named_without_calling_the_api(
        self, app: FastAPI, granted: Granted, signed_in: SignedIn
    ) -> None:
        """An empty query, a non-numeric or infinite ε, or ε over the per-query limit: 422 beside the field."""
        client = signed_in("consumer")
        page_url = f"/console/grants/{granted.grant}/analysis"
        html = client.get(page_url).text
        before = _spent(app, granted.grant)
        for sql, epsilon, field in (
            ("", "0.1", "sql"),
            (BY_DEPARTMENT, "lots", "epsilon"),
            (BY_DEPARTMENT, "inf", "epsilon"),
            (BY_DEPARTMENT, "0.9", "epsilon"),  # over the contract's 0.6 per query: the API's 422
        ):
            refused = client.post(
                f"{page_url}/run", data={"csrf": _csrf(html), "sql": sql, "epsilon": epsilon}
            )
            assert 422 == refused.status_code, (sql, epsilon, refused.text[:300])
            assert f'id="{field}-error"' in refused.text, (sql, epsilon)
        assert "ε must be a positive number, at most 0.6 for one query." in refused.text
        assert before == _spent(app, granted.grant)


class TestAnEndedGrant:
    def test_a_revoked_grant_keeps_its_history_and_takes_no_query(
        self, shared: tuple[FastAPI, Settings, World], signed_in: SignedIn, tmp_path: Path
    ) -> None:
        """The provider revokes an analysis grant: its page still lists what was released, offers
        no query box, says why, and a run posted anyway is refused (410) and spends nothing."""
        app, settings, world = shared
        ended = add_analysis_grant(app, settings, world, tmp_path, rows=300)
        http = TestClient(app)
        revoked = http.post(
            f"/api/v1/grants/{ended.grant}/revoke",
            json={"reason": "The hospital withdrew the dataset from research use"},
            headers=bearer(fetch_token(http, world.clients["provider"])),
        )
        assert 200 == revoked.status_code, revoked.text
        client = signed_in("consumer")
        page_url = f"/console/grants/{ended.grant}/analysis"
        page = client.get(page_url)
        assert 200 == page.status_code, page.text[:500]
        assert "This grant accepts no new analyses." in page.text
        assert "the grant is revoked" in page.text
        assert 'name="sql"' not in page.text
        assert "No releases yet." in page.text
        answer = client.post(f"{page_url}/run", data={"csrf": _csrf(page.text), "sql": BY_DEPARTMENT})
        assert 410 == answer.status_code, answer.text[:500]
        assert (0.0, 0, 0) == _spent(app, ended.grant)


class TestWhoMaySeeIt:
    def test_someone_elses_grant_looks_missing(
        self, app: FastAPI, world: World, granted: Granted, browser_client: Callable[[], TestClient]
    ) -> None:
        """Another startup (its own session and CSRF token) gets the console's 404 for the page and
        both buttons, and spends nothing; the provider's people have no such page either."""
        other_org = make_client(app, "consumer", "HK").org_id
        rival = sign_in(
            browser_client(), add_person(app, "consumer", other_org, f"rival-{secrets.token_hex(3)}")
        )
        csrf = _csrf(rival.get("/console/catalog").text)
        before = _spent(app, granted.grant)
        page_url = f"/console/grants/{granted.grant}/analysis"
        assert 404 == rival.get(page_url).status_code
        for action in ("estimate", "run"):
            answer = rival.post(f"{page_url}/{action}", data={"csrf": csrf, "sql": BY_DEPARTMENT})
            assert 404 == answer.status_code
            assert "Not found" in answer.text
        provider = sign_in(browser_client(), world.people["provider"])
        assert 404 == provider.get(page_url).status_code
        for crafted in ("%2e%2e", "x%3Fy", "no-such-grant"):
            assert 404 == rival.get(f"/console/grants/{crafted}/analysis").status_code
        assert before == _spent(app, granted.grant)

    def test_a_form_without_the_sessions_csrf_token_is_refused(
        self, app: FastAPI, granted: Granted, signed_in: SignedIn
    ) -> None:
        """A run posted from elsewhere (no token, or a forged one) is refused as expired; nothing is spent."""
        client = signed_in("consumer")
        before = _spent(app, granted.grant)
        for data in ({"sql": BY_DEPARTMENT}, {"sql": BY_DEPARTMENT, "csrf": "forged"}):
            for action in ("estimate", "run"):
                answer = client.post(f"/console/grants/{granted.grant}/analysis/{action}", data=data)
                assert 403 == answer.status_code
                assert "Form expired" in answer.text
        assert before == _spent(app, granted.grant)


class TestLanguagesAndLinks:
    def test_the_page_reads_in_three_languages_and_refuses_in_each(
        self, granted: Granted, signed_in: SignedIn
    ) -> None:
        """English, 简体中文 and 繁體中文 (Hong Kong's 私隱 for privacy): the page and a refusal."""
        client = signed_in("consumer")
        page_url = f"/console/grants/{granted.grant}/analysis"
        for code, words, refusal in (
            (
                "zh-Hans",
                ["隐私预算", "这些界限会使结果产生偏差", "估算（不消耗预算）"],
                "请写明列名：不允许使用 *。",
            ),
            (
                "zh-Hant",
                ["私隱預算", "這些界限會令結果產生偏差", "執行（消耗 ε）"],
                "請寫明欄名：不允許使用 *。",
            ),
            ("en", ["Privacy budget", "These bounds bias results.", "Run (spends ε)"], "Name the columns"),
        ):
            assert page_url == client.get(f"/console/lang?to={code}&next={page_url}").headers["location"]
            page = client.get(page_url)
            assert f'<html lang="{code}">' in page.text
            for word in words:
                assert word in page.text, (code, word)
            refused = client.post(
                f"{page_url}/estimate",
                data={"csrf": _csrf(page.text), "sql": "SELECT * FROM outpatient_visits"},
            )
            assert refusal in refused.text, code
            # The language switch on the answered form returns to the page, not to the form's address.
            back = client.get(f"{page_url}/estimate")
            assert (303, page_url) == (back.status_code, back.headers["location"])

    def test_the_grants_list_links_analysis_grants_and_the_dataset_offers_analysis(
        self, app: FastAPI, world: World, granted: Granted, signed_in: SignedIn
    ) -> None:
        """The startup's grants list says "Analyse" for the analysis grant; the hospital's dataset
        page offers an analysis beside a copy (the deliveries' does not), and asking sends kind analysis."""
        client = signed_in("consumer")
        grants = client.get("/console/requests").text
        assert f'href="/console/grants/{granted.grant}/analysis" class="button">Analyse' in grants
        plain = client.get(f"/console/datasets/{world.dataset}").text
        assert 'name="kind"' not in plain
        hospital = client.get(f"/console/datasets/{granted.dataset}")
        assert 'type="radio" name="kind" value="analysis"' in hospital.text
        assert "<code>department</code>" in hospital.text
        asked = client.post(
            f"/console/datasets/{granted.dataset}/request",
            data={
                "csrf": _csrf(hospital.text),
                "kind": "analysis",
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Mean fee per clinic city, for a pricing benchmark",
                "duration_days": "30",
            },
        )
        assert 303 == asked.status_code, asked.text[:500]
        created = asked.headers["location"].split("created=")[1].split("#")[0]
        with app.state.sessionmaker() as session:
            row = session.get(AccessRequest, created)
            assert row is not None
            assert "analysis" == row.kind
        wrong = client.post(
            f"/console/datasets/{granted.dataset}/request",
            data={
                "csrf": _csrf(hospital.text),
                "kind": "rows",
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Every visit, for a model of our own",
            },
        )
        assert 422 == wrong.status_code
        assert 'id="kind-error"' in wrong.text


class TestPieces:
    def test_every_allow_list_rule_is_explained_in_three_languages(self) -> None:
        """Each rule the allow-list can name has a translated explanation for the page."""
        source = "".join(p.read_text() for p in ANALYSIS.glob("*.py"))
        rules = set(re.findall(r'QueryRefused\(\s*"([a-z-]+)"', source))
        from gbadz.analysis.query import _CLAUSES

        rules |= set(_CLAUSES.values())
        assert len(rules) > 30
        missing = sorted(r for r in rules if set(CATALOG.get(f"rule:{r}", {})) != set(LOCALES))
        assert [] == missing

    def test_every_kind_of_transfer_and_analysis_state_is_translated(self) -> None:
        """The log's kinds of transfer and an analysis's states have all three languages."""
        from gbadz.console.routes import TRANSFER_MODES

        keys = [f"mode:{m}" for m in TRANSFER_MODES]
        keys += [f"analysis:{s}" for s in ("charged", "released", "refunded")]
        assert [] == [k for k in keys if set(CATALOG.get(k, {})) != set(LOCALES)]

    @pytest.mark.parametrize(
        ("error", "status", "detail", "field", "key", "said"),
        [
            ("QueryRefused", 400, "sql: rule no-cte: WITH is not allowed", "sql", "sql", "不允許使用 WITH"),
            ("QueryRefused", 400, "sql: rule brand-new: something", "sql", "sql", "查詢違反了白名單規則"),
            ("BudgetExhausted", 409, "epsilon: 1 asked, 0.25 left of 3", "epsilon", "epsilon", "剩餘 ε 0.25"),
            ("EpsilonRefused", 422, "epsilon: 2 is more than one query may spend", "epsilon", "epsilon", "1"),
            (
                "AnalysisRateLimited",
                429,
                "grant: at most 60 analyses; try again in 42 s",
                "grant",
                "form",
                "42",
            ),
            ("AnalysisFailed", 422, "analysis: memory; nothing was spent", "sql", "sql", "已退回"),
            ("ComputeUnavailable", 503, "compute: down", None, "form", "未消耗任何預算"),
            ("StorageUnavailable", 503, "storage: down", None, "form", "未消耗任何預算"),
            ("TooLargeForSync", 413, "dataset: too large", "dataset", "form", "過大"),
            ("GrantSuspended", 410, "grant: suspended", "grant", "form", "不再接受新的分析"),
            ("ObligationsOpen", 409, "grant: the PIPIA is open", "grant", "form", "法律要求"),
            ("AnalysisInProgress", 409, "Idempotency-Key: charged", "Idempotency-Key", "form", "仍在執行"),
            ("Something", 409, "sql: a new refusal", "sql", "sql", "a new refusal"),
        ],
    )
    def test_each_refusal_is_placed_and_translated(
        self, error: str, status: int, detail: str, field: str | None, key: str, said: str
    ) -> None:
        """Every refusal the API can give a run lands beside its field (or on top), in Traditional Chinese."""
        from gbadz.console.analysis import refusal
        from gbadz.console.routes import ApiFailed

        spec = {"budget": {"epsilon": 3.0, "delta": 0.0, "max_epsilon_per_query": 1.0}}
        placed = refusal(ApiFailed(status, detail, field, error), "zh-Hant", spec)
        assert said in placed[key], placed

    def test_release_bars_draw_noise_negatives_and_escape_labels(self) -> None:
        """The chart: a bar per group and a ± whisker where noise is stated, a negative noisy sum
        left of zero, an empty mean as a dash, and a label from the data escaped."""
        columns = ["department", "visits", "total", "mean_fee"]
        rows = [["<b>ent</b>", 40, -12.5, None], ["general", 60, 300.0, 412.5]]
        accuracy = [
            {"name": "visits", "function": "count", "accuracy": 30.4, "scale": 10.0},
            {"name": "total", "function": "sum", "accuracy": 900.0, "scale": 300.0},
            {"name": "mean_fee", "function": "avg", "accuracy": None, "scale": None},
        ]
        drawn = charts.release_bars(columns, rows, accuracy)
        assert 3 == len(drawn)
        assert "&lt;b&gt;ent&lt;/b&gt;: 40 ± 30.40" in drawn[0]
        assert "<b>" not in drawn[0]
        assert 2 == drawn[0].count("<path ")  # a whisker per group
        assert "&lt;b&gt;ent&lt;/b&gt;: -12.50 ± 900" in drawn[1]
        assert ">—</text>" in drawn[2]  # no mean: a dash, no bar
        assert 1 == drawn[2].count("<rect ")
        assert "no group was released" in charts.release_bars(columns, [], accuracy)[0]
