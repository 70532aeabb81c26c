"""The rules file is the only source of the thresholds, the counting time zone and the GBA
standard contract's conditions: change it, and the engine, the compliance report and the
console's chart all change with it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.compliance import counters
from gbadz.config import OAuthSettings, Settings, TransferSettings
from gbadz.identity import people
from gbadz.law.engine import TransferFacts, decide, gba_sc_findings
from gbadz.law.rules import default_rules, parse_rules
from tests.api import bearer, fetch_token, make_client
from tests.console.conftest import BASE, sign_in
from tests.console.world import Person

PACKAGED = (resources.files("gbadz.law") / "rules" / "crossborder.yaml").read_bytes()
#: The SPI threshold raised from 10,000 to 20,000 individuals, nothing else changed.
RAISED = PACKAGED.replace(b"spi_assessment_from: 10000", b"spi_assessment_from: 20000")
SPI_15K = TransferFacts(
    origin="CN-SZ", dest="HK", has_pi=True, has_spi=True, pi_ytd_after=15_000, spi_ytd_after=15_000
)


@pytest.fixture
def raised_rules_file(tmp_path: Path) -> Path:
    assert RAISED != PACKAGED
    path = tmp_path / "crossborder.yaml"
    path.write_bytes(RAISED)
    return path


@pytest.fixture
def app(settings: Settings, raised_rules_file: Path) -> FastAPI:
    """The API and console deciding by the raised rules file."""
    return create_app(
        settings.model_copy(
            update={
                "oauth": OAuthSettings(issuer=BASE),
                "transfer": TransferSettings(rules_file=raised_rules_file),
            }
        )
    )


class TestThresholdsLiveInTheRulesFile:
    def test_the_engine_follows_the_file(self) -> None:
        """15,000 sensitive individuals need a CAC assessment at 10,000, not once the file says 20,000."""
        assert "ASSESSMENT" == decide(SPI_15K, parse_rules(PACKAGED)).outcome
        assert "ASSESSMENT" != decide(SPI_15K, parse_rules(RAISED)).outcome
        assert {"spi": (20_000,), "pi": (100_000, 1_000_000)} == parse_rules(RAISED).threshold_lines()

    def test_the_report_and_the_chart_follow_the_file(self, app: FastAPI, settings: Settings) -> None:
        """The compliance report's thresholds and the dashboard's threshold lines come from the loaded file."""
        http = TestClient(app, base_url=BASE)
        officer = make_client(app, "compliance_officer", "CN-SZ")
        exporter = make_client(app, "provider", "CN-SZ")
        with app.state.sessionmaker.begin() as session:
            snapshot = counters.record(
                session,
                exporter_id=exporter.org_id,
                basis="mechanism",
                subjects=["p1", "p2"],
                at=datetime.now(UTC),
            )
            # The officer's report reads the counters the signed transfer entries state (#20),
            # as a delivery writes them beside its counting.
            app.state.transfer_log.append(
                session,
                {
                    "exporter": {"org_id": exporter.org_id},
                    "counter_year": snapshot.year,
                    "counter_basis": snapshot.basis,
                    "pi_ytd_before": snapshot.pi_before,
                    "pi_ytd_after": snapshot.pi_after,
                    "spi_ytd_before": snapshot.spi_before,
                    "spi_ytd_after": snapshot.spi_after,
                },
                kind="download",
            )
            people.create_user(
                session,
                actor="test",
                org_id=officer.org_id,
                username="officer-raised",
                display_name="Officer",
                role="compliance_officer",
                password="correct horse battery staple",
            )
        report = http.get("/api/v1/compliance/counters", headers=bearer(fetch_token(http, officer))).json()
        mine = [row for row in report if row["exporter_org_id"] == exporter.org_id]
        assert [{"spi": [20_000], "pi": [100_000, 1_000_000]}] == [row["thresholds"] for row in mine]
        assert 20_000 == mine[0]["next_threshold"]["spi"]

        person = Person(
            "officer-raised", "correct horse battery staple", "compliance_officer", officer.org_id
        )
        page = sign_in(
            TestClient(app, base_url=BASE, follow_redirects=False), person, "/console/compliance"
        ).get("/console/compliance")
        assert 200 == page.status_code
        lines = re.findall(r">([\d,]+ (?:SPI|PI))</text>", page.text)
        assert ["20,000 SPI", "100,000 PI", "1,000,000 PI"] == lines

    def test_a_broken_rules_file_stops_the_app_with_the_setting_named(
        self, settings: Settings, tmp_path: Path
    ) -> None:
        """A rules file that does not parse is a configuration error naming the setting, not a later 500."""
        broken = tmp_path / "broken.yaml"
        broken.write_bytes(PACKAGED.replace(b"pi_exempt_below: 100000", b"pi_exempt_below: lots"))
        with pytest.raises(Exception, match="GBADZ_TRANSFER__RULES_FILE: thresholds"):
            create_app(settings.model_copy(update={"transfer": TransferSettings(rules_file=broken)}))


class TestGbaContractConditionsLiveInTheRulesFile:
    def test_the_area_and_the_recipient_clause_come_from_the_file(self) -> None:
        """Onward transfer outside the GBA is refused under a GBA SC until the file's recipient clause allows it."""
        facts = TransferFacts(
            origin="CN-SZ",
            dest="HK",
            has_pi=True,
            recipient_gba_registered=True,
            exporter_gba_registered=True,
            gba_sc_opt_in=True,
        )
        packaged = default_rules()
        decision = decide(facts, packaged)
        assert "GBA_SC" == decision.outcome
        assert [] == list(gba_sc_findings(decision, onward_outside_gba=False, rules=packaged))
        assert 1 == len(gba_sc_findings(decision, onward_outside_gba=True, rules=packaged))
        relaxed = parse_rules(PACKAGED.replace(b"onward_outside_area: false", b"onward_outside_area: true"))
        assert [] == list(gba_sc_findings(decide(facts, relaxed), onward_outside_gba=True, rules=relaxed))

    def test_the_counting_year_follows_the_files_time_zone(self) -> None:
        """New Year in Beijing is still the old year in UTC; the counters follow the rules' zone."""
        instant = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)  # 01:30 on 1 January 2027 in Beijing
        assert 2027 == counters.counter_year(instant, default_rules())
        utc = parse_rules(PACKAGED.replace(b"timezone: Asia/Shanghai", b"timezone: UTC"))
        assert 2026 == counters.counter_year(instant, utc)
