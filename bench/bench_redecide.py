"""Deciding again when data leaves (issue #15), against the work it guards.

1. A 1,000,000-row delivery: the grant's copy materialised (decrypt, mask, write, upload: the
   floor, `materialise`) vs the re-decision every delivery now runs first (`redecide`: current
   contract, the version's counted individuals de-duplicated against the exporter's counters in
   one anti-join, other grants' reservations, evidence on the Asia/Shanghai date).
   Goal: re-deciding adds under 5%.
2. A request decision with live counters and reservations (`assess`), 100,000 individuals
   already counted for the exporter and 50 undelivered grants holding reservations, vs the
   engine's decision alone on the same facts. Goal: p99 under 20 ms.

Runs on the embedded SQLite database and a real SeaweedFS; prints ratios and peak RSS.
"""

from __future__ import annotations

import contextlib
import resource
import secrets
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import embedded  # bench/embedded.py
import pyarrow.csv as pacsv
import sqlalchemy as sa
import yaml

from gbadz.access import service as access_service
from gbadz.access.models import AccessRequest, Grant
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.compliance.counters import counter_year
from gbadz.compliance.models import CountedSubject, CounterTotal
from gbadz.contract import Contract
from gbadz.delivery.service import materialise
from gbadz.identity.models import Organization
from gbadz.identity.service import Viewer
from gbadz.ingest import pipeline, samples
from gbadz.law.engine import TransferFacts, decide
from gbadz.law.rules import default_rules

ROWS = 1_000_000
COUNTED = 100_000
RESERVING_GRANTS = 50
REQUESTS = 300
ROUNDS = 3
REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["delivery_id", "recipient_id", "recipient_phone", "district", "parcel_weight_kg", "status"]


def _contract() -> Contract:
    doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["gbadz"]["origin"] = "CN-SZ"
    doc["gbadz"]["provider"]["organization"] = "Bench exporter (Shenzhen)"
    return Contract.model_validate(doc)


def _grant(
    session: sa.orm.Session, contract: Contract, exporter: str, consumer: str, **extra: object
) -> Grant:
    now = datetime.now(UTC)
    request = AccessRequest(
        id=str(uuid.uuid4()),
        dataset_id=contract.id,
        requester_org_id=consumer,
        provider_org_id=exporter,
        requested_by="bench",
        purpose="trade_transport_academic_mfg_marketing",
        purpose_text="benchmark",
        columns=COLUMNS,
        destination="HK",
        onward_transfer="none",
        duration_days=30,
        state="approved",
        decision={"outcome": "HUMAN_REVIEW", "rule_id": "bench"},
        licence_findings=[],
        findings={},
    )
    session.add(request)
    session.flush()
    grant = Grant(
        id=str(uuid.uuid4()),
        request_id=request.id,
        dataset_id=contract.id,
        grantee_org_id=consumer,
        provider_org_id=exporter,
        purpose=request.purpose,
        columns=COLUMNS,
        decision=request.decision,
        granted_at=now,
        expires_at=now + timedelta(days=30),
        **extra,
    )
    session.add(grant)
    return grant


def main() -> None:
    contract = _contract()
    rules = default_rules()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "upload.csv"
        pacsv.write_csv(samples.generate(contract.id, ROWS), source)
        with embedded.services(work) as settings:
            ctx = pipeline.IngestContext.from_settings(settings)
            now = datetime.now(UTC)
            with ctx.sessions.begin() as session:
                exporter = Organization(
                    id=str(uuid.uuid4()), name=contract.gbadz.provider.organization, jurisdiction="CN-SZ"
                )
                consumer = Organization(id=str(uuid.uuid4()), name="Bench startup", jurisdiction="HK")
                session.add_all([exporter, consumer])
                year = counter_year(now, rules)
                session.execute(
                    sa.insert(CountedSubject),
                    [
                        {
                            "exporter_id": exporter.id,
                            "counter_year": year,
                            "basis": "mechanism",
                            "kind": "pi",
                            "subject": "p" + secrets.token_hex(16),
                            "first_counted_at": now,
                        }
                        for _ in range(COUNTED)
                    ],
                )
                session.add(
                    CounterTotal(
                        exporter_id=exporter.id,
                        counter_year=year,
                        basis="mechanism",
                        kind="pi",
                        individuals=COUNTED,
                    )
                )
            started = time.perf_counter()
            assert pipeline.ingest(ctx, contract, "bench", source).accepted
            print(
                f"published {ROWS:,} rows and counted their individuals in {time.perf_counter() - started:.1f}s"
            )
            with ctx.sessions.begin() as session:
                exporter_id, consumer_id = exporter.id, consumer.id
                listed = session.get(Dataset, contract.id)
                assert listed is not None
                listed.classification_state = "approved"  # the listing review, signed off
                grant = _grant(session, contract, exporter_id, consumer_id)
                for _ in range(RESERVING_GRANTS):
                    _grant(session, contract, exporter_id, consumer_id, reserved_pi=1_000, reserved_year=year)
                grant_id = grant.id

            session = ctx.sessions()
            dataset = session.get(Dataset, contract.id)
            version = session.scalars(
                sa.select(DatasetVersion).where(DatasetVersion.dataset_id == contract.id)
            ).one()
            grant_row = session.get(Grant, grant_id)
            assert dataset is not None
            assert grant_row is not None
            print(f"  the version holds {version.individuals:,} individuals; {COUNTED:,} already counted")

            floors, ours = [], []
            for n in range(ROUNDS):
                started = time.perf_counter()
                materialise(ctx.client, settings, ctx.provider, grant_row, dataset, version, f"bench-{n}")
                floors.append(time.perf_counter() - started)
                started = time.perf_counter()
                try:
                    decided = access_service.redecide(
                        session, grant_row, dataset, version.version, now, rules
                    )
                    outcome = decided.decision.outcome
                except access_service.SuspendGrant as stop:  # the work is done either way
                    outcome = stop.redecision.decision.outcome
                ours.append(time.perf_counter() - started)
            floor, mine = statistics.median(floors), statistics.median(ours)
            # The rare case: the estimate would stop the grant, so the exact anti-join runs first.
            grant_row.decision = {"outcome": "EXEMPT", "rule_id": "bench"}
            exact = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                with contextlib.suppress(access_service.SuspendGrant):
                    access_service.redecide(session, grant_row, dataset, version.version, now, rules)
                exact.append(time.perf_counter() - started)
            print(f"1. delivery of {ROWS:,} rows, median of {ROUNDS}")
            print(f"  materialise (floor)                    {floor:7.3f} s")
            print(
                f"  re-decide ({outcome:>11}, typical)      {mine:7.3f} s  -> +{mine / floor:.1%} (goal: under 5%)"
            )
            print(
                f"  re-decide when it would suspend (exact) {statistics.median(exact):7.3f} s  "
                f"-> +{statistics.median(exact) / floor:.1%} (rare: only when the outcome turns stricter)"
            )

            viewer = Viewer(consumer_id, "HK")
            ask = access_service.Ask(
                dataset_id=contract.id,
                purpose="trade_transport_academic_mfg_marketing",
                purpose_text="",
                columns=tuple(COLUMNS),
                duration_days=30,
                processing_location=None,
                onward_transfer="none",
            )
            latencies, engine = [], []
            for _ in range(REQUESTS):
                started = time.perf_counter()
                assessment = access_service.assess(session, viewer, ask, rules=rules)
                latencies.append(time.perf_counter() - started)
                facts = assessment.decision.facts
                started = time.perf_counter()
                decide(
                    TransferFacts(
                        origin="CN-SZ",
                        dest="HK",
                        has_pi=True,
                        pi_ytd_after=int(facts["pi_ytd_after"]),
                        spi_ytd_after=int(facts["spi_ytd_after"]),
                    ),
                    rules,
                )
                engine.append(time.perf_counter() - started)
            session.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"2. request decision with live counters and {RESERVING_GRANTS} reservations, {REQUESTS} requests")
    print(f"  engine alone (floor) p50 {statistics.median(engine) * 1e3:7.3f} ms")
    print(
        f"  assess               p50 {p50 * 1e3:7.3f} ms  p99 {p99 * 1e3:7.3f} ms (goal: p99 under 20 ms)"
        f"  -> {p50 / statistics.median(engine):.0f}x the engine"
    )
    print(f"  pi_ytd_after seen: {assessment.decision.facts['pi_ytd_after']:,}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
