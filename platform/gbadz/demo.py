"""``gbadz demo``: the platform's main job on embedded defaults, told step by step.

It brings the services up, applies the schema, shows object storage and the database
doing real work, then has three providers publish their datasets through the ingest DAG
and shows a rejected upload with its reasons; each later capability extends the story.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from gbadz import audit, db, embedded, storage
from gbadz.app import create_app
from gbadz.config import Settings


def run(settings: Settings, console: Console | None) -> dict[str, Any]:
    def say(message: str) -> None:
        if console is not None:
            console.print(message)

    report: dict[str, Any] = {}
    t0 = time.perf_counter()
    if settings.s3.endpoint_url is None or settings.db.url is None:
        services = embedded.EmbeddedServices(settings.home, bucket_settings=settings.s3)
        _, started = services.up(with_database=settings.db.url is None)
        say(
            f"[bold]1. services[/bold] embedded S3 {'started' if started else 'already running'} "
            f"({time.perf_counter() - t0:.1f}s)"
        )
    resolved = embedded.resolve_settings(settings)
    report["s3_endpoint"] = resolved.s3.endpoint_url

    engine = db.create_engine(resolved.db)
    revision = db.upgrade(engine)
    report["database"] = {"url": db.describe_url(resolved.db.url or ""), "schema": revision}
    say(f"[bold]2. database[/bold] {report['database']['url']} migrated to schema {revision}")

    client = storage.make_client(resolved.s3)
    storage.ensure_buckets(client, resolved.s3)
    store = storage.ObjectStore(client, resolved.s3)
    payload = json.dumps({"demo": "gbadz", "at": time.time()}).encode()
    written = store.put_bytes(resolved.s3.curated_bucket, "_demo/roundtrip.json", payload, "application/json")
    read_back = store.get_bytes(written.bucket, written.key, written.version_id)
    assert hashlib.sha256(read_back).hexdigest() == written.sha256, "S3 returned different bytes"
    report["storage"] = {
        "bucket": written.bucket,
        "key": written.key,
        "sha256": written.sha256,
        "version_id": written.version_id,
        "buckets": list(resolved.s3.buckets),
    }
    say(
        f"[bold]3. storage[/bold] wrote and read back s3://{written.bucket}/{written.key} "
        f"(version {written.version_id}, sha256 {written.sha256[:16]}…, identical)"
    )

    factory = db.make_sessionmaker(engine)
    with db.session_scope(factory) as session:
        event = audit.record(
            session,
            actor="gbadz-demo",
            action="demo.run",
            subject_type="platform",
            subject_id="demo",
            details={"s3_object": written.key, "sha256": written.sha256},
        )
        event_id = event.id
    with db.session_scope(factory) as session:
        history = audit.AuditRepository(session).for_subject("platform", "demo")
        report["audit"] = {"event_id": event_id, "events_for_demo": len(history)}
    engine.dispose()
    say(f"[bold]4. audit[/bold] recorded event #{event_id}; the demo has run {len(history)} time(s) here")

    api = create_app(resolved)
    transport = httpx.ASGITransport(app=api)

    async def probe() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://gbadz.local") as http:
            return await http.get("/readyz")

    import anyio

    response = anyio.run(probe)
    report["readyz"] = {"status_code": response.status_code, "body": response.json()}
    say(f"[bold]5. api[/bold] GET /readyz → {response.status_code} {response.json().get('checks')}")
    if response.status_code != 200:
        raise RuntimeError(f"the API is not ready: {response.text}")
    organisations = _register_organisations(resolved)
    report["ingest"] = _publish_samples(resolved, say)
    report["catalog"] = _catalog(resolved, organisations, say)
    startup = _token(resolved, organisations["Victoria Harbour Analytics (startup)"], "consumer")
    report["requests"] = _requests(resolved, startup, say)
    report["compliance"] = _deliveries_and_compliance(
        resolved, organisations, startup, report["requests"], say
    )
    report["people"] = _people(resolved, organisations)
    say("[bold]13. console[/bold] people who can sign in at /console/ (demo passwords, loopback only):")
    for person in report["people"]:
        say(f"   {person['username']:<14} {person['password']:<24} {person['role']:<18} {person['org']}")
    report["api_client"] = recipe = _recipe(resolved, organisations)
    say(
        f"[bold]14. API client[/bold] a ready client for {recipe['org']} ({recipe['role']}: {recipe['scope']}):"
    )
    if console is not None:  # as plain text, never wrapped: these lines are for copying
        for line in (
            f"   client_id     {recipe['client_id']}",
            f"   client_secret {recipe['client_secret']}",
            f"   {recipe['curl']}",
            f'   then: curl -s -H "Authorization: Bearer <access_token>" {resolved.oauth.issuer}/api/v1/datasets',
        ):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    say(
        "\n[green]gbadz works.[/green] Run the API and console with `gbadz serve` "
        f"({resolved.oauth.issuer}/console/); stop the embedded services "
        "with `gbadz services down` (data is kept)."
    )
    return report


DEMO_PEOPLE = (
    ("hk-startup", "Mei Chan", "consumer", "Victoria Harbour Analytics (startup)"),
    ("sz-hospital", "Li Wei", "provider", "Shenzhen Harbour Hospital Group"),
    ("officer", "Ho Ka-yan", "compliance_officer", "Special Data Zone Compliance Office"),
    # Every other demo organisation with a role in the journeys (issue #19): the Shenzhen port's
    # person reviews the GBA-contract request the demo leaves waiting on it.
    ("hk-logistics", "Wong Siu-ming", "provider", "Harbour Logistics Limited"),
    ("mo-tourism", "Leong Ka-man", "provider", "Macao Tourism Board"),
    ("sz-port", "Zhang Min", "provider", "Shenzhen Western Port Authority"),
    ("gz-startup", "Chen Jie", "consumer", "Pearl River Insights (startup)"),
    ("admin", "Chan Tai-man", "admin", "Special Data Zone Operator"),
)


def _people(settings: Settings, orgs: dict[str, str]) -> list[dict[str, str]]:
    """One person per role for the console, created once (re-running the demo keeps them)."""
    import sqlalchemy as sa

    from gbadz.identity import people
    from gbadz.identity.models import User

    engine = db.create_engine(settings.db)
    result = []
    try:
        with db.make_sessionmaker(engine).begin() as session:
            for username, name, role, org in DEMO_PEOPLE:
                password = f"demo-{username}-pass"
                if session.scalar(sa.select(User.id).where(User.username == username)) is None:
                    people.create_user(
                        session,
                        actor="gbadz-demo",
                        org_id=orgs[org],
                        username=username,
                        display_name=name,
                        role=role,
                        password=password,
                    )
                result.append({"username": username, "password": password, "role": role, "org": org})
    finally:
        engine.dispose()
    return result


def _publish_samples(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """Providers publish the three sample datasets through the ingest DAG; one bad upload is rejected."""
    import pyarrow.csv as pacsv

    from gbadz.ingest import runner, samples

    contracts = runner.default_contracts_folder()
    dags = runner.default_dags_folder()
    folder = settings.home / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    say(
        "[bold]6. ingest[/bold] providers publish their datasets through the Airflow DAG (dag.test(), no scheduler)"
    )
    for contract_id in samples.GENERATORS:
        path = folder / f"{contract_id}.csv"
        if not path.exists():  # seeded, so the same bytes every time: re-running the demo reuses versions
            pacsv.write_csv(samples.generate(contract_id), path)
        outcome = runner.run(settings, contracts / f"{contract_id}.yaml", path, dags)
        results[contract_id] = {
            "accepted": outcome.accepted,
            "version": outcome.version,
            "summary": outcome.summary,
        }
        say(f"   {contract_id}: version {outcome.version} - {outcome.summary}")
    bad = folder / "sz-hospital-outpatient-visits.bad.csv"
    if not bad.exists():
        table = samples.generate("sz-hospital-outpatient-visits")
        pacsv.write_csv(samples.corrupt(table, "sz-hospital-outpatient-visits"), bad)
    outcome = runner.run(settings, contracts / "sz-hospital-outpatient-visits.yaml", bad, dags)
    results["rejected"] = {"accepted": outcome.accepted, "summary": outcome.summary}
    say(f"[bold]7. rejected upload[/bold] the hospital's corrupted file: {outcome.summary}")
    return results


PROVIDERS = {
    "Shenzhen Harbour Hospital Group": "CN-SZ",
    "Harbour Logistics Limited": "HK",
    "Macao Tourism Board": "MO",
    "Shenzhen Western Port Authority": "CN-SZ",
}
STARTUPS = {"Victoria Harbour Analytics (startup)": "HK", "Pearl River Insights (startup)": "CN-GZ"}
OFFICE = {"Special Data Zone Compliance Office": "CN-SZ"}
#: The zone's operator: its people administer organisations, clients and people (issue #19).
OPERATOR = {"Special Data Zone Operator": "CN-SZ"}


def _register_organisations(settings: Settings) -> dict[str, str]:
    """The providers and two startups, registered once (re-running the demo reuses them)."""
    import sqlalchemy as sa

    from gbadz.identity import service
    from gbadz.identity.models import Organization

    engine = db.create_engine(settings.db)
    try:
        with db.make_sessionmaker(engine).begin() as session:
            ids: dict[str, str] = {}
            for name, jurisdiction in {**PROVIDERS, **STARTUPS, **OFFICE, **OPERATOR}.items():
                org = session.scalar(sa.select(Organization).where(Organization.name == name))
                if org is None:
                    org = service.create_organization(
                        session,
                        actor="gbadz-demo",
                        name=name,
                        jurisdiction=jurisdiction,
                        # Registered in a GBA city, Hong Kong or Macao (not CN or OTHER).
                        gba_registered=jurisdiction not in ("CN", "OTHER"),
                        operator=name in OPERATOR,
                    )
                ids[name] = org.id
            return ids
    finally:
        engine.dispose()


def _token(settings: Settings, org_id: str, role: str, purpose: str = "") -> str:
    """A token for the demo's caller (client credentials), from its named demo client."""
    client_id, secret = _demo_client(settings, org_id, role, purpose)
    answer = _call(
        "POST", "/oauth/token", settings, data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return str(answer["access_token"])


def _demo_client(settings: Settings, org_id: str, role: str, purpose: str = "") -> tuple[str, str]:
    """The demo's client for this organisation, role and purpose (a second office of one
    organisation, for four eyes, is a client of its own): created once and kept, with its secret,
    in ``<home>/demo-clients.json`` (owner-only), so re-running the demo does not pile up clients.
    A client that was revoked, or a file that was lost, gets a new client."""
    import sqlalchemy as sa

    from gbadz.identity import service
    from gbadz.identity.models import OAuthClient, Organization

    path = settings.home / "demo-clients.json"
    try:
        kept: dict[str, dict[str, str]] = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    key = f"{org_id}/{role}/{purpose}"
    engine = db.create_engine(settings.db)
    try:
        with db.make_sessionmaker(engine).begin() as session:
            entry = kept.get(key, {})
            row = session.get(OAuthClient, entry.get("client_id", ""))
            if (
                row is not None
                and row.revoked_at is None
                and service.secret_matches(row, entry.get("secret", ""))
            ):
                return row.client_id, entry["secret"]
            org_name = session.scalar(sa.select(Organization.name).where(Organization.id == org_id)) or ""
            issued = service.create_client(
                session,
                actor="gbadz-demo",
                org_id=org_id,
                role=role,
                name=f"gbadz demo: {org_name[:50]} {purpose or role}",
            )
            client_id, secret = issued.client.client_id, issued.client_secret or ""
    finally:
        engine.dispose()
    kept[key] = {"client_id": client_id, "secret": secret}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(kept, indent=2))
    return client_id, secret


def _recipe(settings: Settings, orgs: dict[str, str]) -> dict[str, str]:
    """One ready API client: the Hong Kong startup's, with a curl that gets a token for it."""
    from gbadz.identity.scopes import ROLE_SCOPES

    org, role = "Victoria Harbour Analytics (startup)", "consumer"
    client_id, secret = _demo_client(settings, orgs[org], role)
    scope = " ".join(sorted(ROLE_SCOPES[role]))
    token_url = f"{settings.oauth.issuer}/oauth/token"
    curl = (
        f"curl -s -u {client_id}:{secret} -d grant_type=client_credentials "
        f'--data-urlencode "scope={scope}" {token_url}'
    )
    # The recipe is tried before it is printed: the same request, to the same endpoint.
    _call(
        "POST",
        "/oauth/token",
        settings,
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, secret),
    )
    return {
        "org": org,
        "role": role,
        "scope": scope,
        "client_id": client_id,
        "client_secret": secret,
        "token_url": token_url,
        "curl": curl,
    }


def _on_file(settings: Settings, headers: dict[str, str], item: dict[str, Any]) -> dict[str, Any]:
    """The evidence item with this kind and reference, recorded (with its filed document)
    unless it is on file already."""
    found = next(
        (
            known
            for known in _call("GET", "/api/v1/mechanisms", settings, headers=headers)
            if (known["kind"], known["reference"]) == (item["kind"], item["reference"])
            and not known["withdrawn_at"]
        ),
        None,
    ) or _call("POST", "/api/v1/mechanisms", settings, json=item, headers=headers)
    if not found.get("document_sha256"):
        found = _call(
            "PUT",
            f"/api/v1/mechanisms/{found['id']}/document",
            settings,
            content=_receipt(item),
            headers=headers | {"Content-Type": "application/pdf"},
        )
    return dict(found)


def _receipt(item: dict[str, Any]) -> bytes:
    """A one-page PDF standing in for the filed document (the demo has no scanner)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for line in (
        f"{item['kind']} {item['reference']}",
        f"Authority: {item.get('authority_name') or item.get('authority') or 'per the filing'}",
        f"Effective {item.get('effective_date') or item.get('issued')}; filed {item.get('filing_date') or '-'}",
        "Demo document recorded by gbadz demo",
    ):
        pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _call(method: str, path: str, settings: Settings, **kwargs: Any) -> Any:
    import anyio

    api = create_app(settings)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://gbadz.local") as http:
            return await http.request(method, path, **kwargs)

    response = anyio.run(go)
    if response.status_code >= 400 and response.status_code != 409:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def _catalog(settings: Settings, orgs: dict[str, str], say: Callable[[str], None]) -> dict[str, Any]:
    """A port authority registers an important dataset by API; two startups search the catalog."""
    from gbadz.ingest import runner

    provider = _token(settings, orgs["Shenzhen Western Port Authority"], "provider")
    for name in ("sz-port-berth-schedules", "sz-ev-charging-sessions"):
        _call(
            "POST",
            "/api/v1/datasets",
            settings,
            content=(runner.default_contracts_folder() / "registered" / f"{name}.yaml").read_bytes(),
            headers={"Authorization": f"Bearer {provider}", "Content-Type": "application/yaml"},
        )
    say(
        "[bold]8. catalog[/bold] the Shenzhen Western Port Authority registers an [italic]important[/italic] "
        "dataset and an EV-charging dataset with personal data through the API (POST /api/v1/datasets)"
    )
    # Listing review: nobody else sees a dataset until the compliance office signs off how
    # every column is classified (ADR 0015).
    officer = {
        "Authorization": f"Bearer {_token(settings, orgs['Special Data Zone Compliance Office'], 'compliance_officer')}"
    }
    waiting = _call("GET", "/api/v1/classification-reviews?limit=500", settings, headers=officer)
    for item in waiting:
        sensitive = sorted(c["name"] for c in item["columns"] if c["classification"] == "spi")
        _call(
            "POST",
            f"/api/v1/datasets/{item['id']}/classification-review",
            settings,
            json={
                "approve": True,
                "note": "every column classified; sensitive: " + (", ".join(sensitive) or "none"),
                "contract_sha256": item["contract_sha256"],
            },
            headers=officer,
        )
    say(
        f"   the zone's compliance office signs off the classification of {len(waiting)} dataset(s); "
        "only then are they listed to other organisations"
    )
    views: dict[str, Any] = {}
    for startup, jurisdiction in STARTUPS.items():
        token = _token(settings, orgs[startup], "consumer")
        page = _call(
            "GET", "/api/v1/datasets?sort=name", settings, headers={"Authorization": f"Bearer {token}"}
        )
        views[startup] = {"total": page["total"], "datasets": [item["id"] for item in page["items"]]}
        say(f"   {startup} ({jurisdiction}) sees {page['total']} dataset(s):")
        for item in page["items"]:
            version = (
                f"v{item['current_version']}, {item['row_count']:,} rows"
                if item["current_version"]
                else "no data yet"
            )
            pi = "personal data" if item["has_pi"] else "no personal data"
            say(
                f"     - {item['id']}: {item['name']} [{item['origin']}, {item['category']}, {pi}, {version}; "
                f"licence: {', '.join(item['licence_purposes'])}]"
            )
    hk = views["Victoria Harbour Analytics (startup)"]["datasets"]
    say(
        "   the important Shenzhen dataset is listed to the Guangzhou startup only; to Hong Kong it does not exist"
        + (" (404)" if "sz-port-berth-schedules" not in hk else " [bold red](visible: a bug)[/bold red]")
    )
    return views


REQUESTS: tuple[tuple[str, str, list[str]], ...] = (
    ("mo-tourism-visitor-arrivals", "Visitor flow model for retail site selection in Macao", []),
    ("sz-ev-charging-sessions", "Charging-demand forecast for a Bay Area charging network", []),
    (
        "sz-hospital-outpatient-visits",
        "Outpatient demand forecast for a clinic chain",
        # No diagnosis, names or phones; still health data (the sector overlay): sensitive PI.
        ["visit_id", "patient_id", "visit_date", "department", "fee_cny"],
    ),
)


def _requests(settings: Settings, token: str, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """The Hong Kong startup (GBA-registered) asks for three datasets; each is decided with its legal basis."""
    say(
        "[bold]9. access requests[/bold] Victoria Harbour Analytics (HK, GBA-registered) asks for three datasets:"
    )
    results = []
    for dataset, purpose_text, columns in REQUESTS:
        body = _call(
            "POST",
            f"/api/v1/datasets/{dataset}/access-requests",
            settings,
            json={
                "purpose": "trade_transport_academic_mfg_marketing",
                "purpose_text": purpose_text,
                "duration_days": 180,
                "columns": columns,
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        decision = body["decision"]
        results.append(
            {
                "dataset": dataset,
                "id": body["id"],
                "state": body["state"],
                "outcome": decision["outcome"],
                "rule_id": decision["rule_id"],
                "legal_basis": decision["legal_basis"],
                "evidence_required": decision["evidence_required"],
                "grant_id": body["grant_id"],
            }
        )
        needs = f"; needs {', '.join(decision['evidence_required'])}" if decision["evidence_required"] else ""
        say(
            f"   {dataset}: [bold]{body['state']}[/bold] - {decision['outcome']} (rule {decision['rule_id']}{needs})"
        )
        say(f"      legal basis: {decision['legal_basis']}")
    return results


def _deliveries_and_compliance(
    settings: Settings,
    orgs: dict[str, str],
    startup_token: str,
    requests: list[dict[str, Any]],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Two transfers happen; the compliance officer sees them, the counters and a verified log."""
    import tempfile
    from pathlib import Path

    from gbadz.crypto.keys import provider_from_settings
    from gbadz.translog.log import TransferLog, export, verify_export

    startup = {"Authorization": f"Bearer {startup_token}"}
    hospital = {
        "Authorization": f"Bearer {_token(settings, orgs['Shenzhen Harbour Hospital Group'], 'provider')}"
    }
    officer = {
        "Authorization": f"Bearer {_token(settings, orgs['Special Data Zone Compliance Office'], 'compliance_officer')}"
    }
    by_dataset = {r["dataset"]: r for r in requests}
    review = by_dataset["sz-hospital-outpatient-visits"]["id"]
    _call(
        "POST",
        f"/api/v1/access-requests/{review}/approve",
        settings,
        json={"reason": "aggregate use only"},
        headers=hospital,
    )
    # The sector rule adds to the general regime (M12: the GBA standard contract, both parties
    # in the area). The hospital's data office (not the person who took the provider step)
    # records the contract's filing and the health regulator's approval; the zone's compliance
    # office then determines the transfer with them: four eyes on every step.
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    effective = today - timedelta(days=30)
    data_office = {
        "Authorization": f"Bearer {_token(settings, orgs['Shenzhen Harbour Hospital Group'], 'provider', 'data office')}"
    }
    pair = {
        "exporter_org_id": orgs["Shenzhen Harbour Hospital Group"],
        "recipient_org_id": orgs["Victoria Harbour Analytics (startup)"],
    }
    reference = "GBA-SC-440300-2026-0042"
    gba_sc = _on_file(
        settings,
        data_office,
        pair
        | {
            "kind": "GBA_SC",
            "reference": reference,
            "effective_date": effective.isoformat(),
            "filing_date": (effective + timedelta(days=6)).isoformat(),
            "purposes": ["trade_transport_academic_mfg_marketing"],
        },
    )
    sector = _on_file(
        settings,
        data_office,
        pair
        | {
            "kind": "SECTOR",
            "sector": "health",
            "reference": "YUE-WJW-2026-DATA-118",
            "authority_name": "Health Commission of Guangdong Province",
            "issued": (today - timedelta(days=45)).isoformat(),
            "valid_to": (today + timedelta(days=320)).isoformat(),
            "dataset_ids": ["sz-hospital-outpatient-visits"],
        },
    )
    approved = _call(
        "POST",
        f"/api/v1/access-requests/{review}/approve",
        settings,
        json={
            "determination": {
                "note": "Pseudonymised, no names, phones or diagnoses leave; GBA standard contract filed "
                "with the Guangdong CAC on time; health commission approval covers this dataset.",
                "evidence_id": gba_sc["id"],
                "sector_evidence_id": sector["id"],
                "pipia_reference": "PIPIA-SZH-2026-017",
                "pipia_date": (today - timedelta(days=12)).isoformat(),
                "consent_reference": "SZH notice v3 (Art.39) and separate-consent records, batch 2026-10",
            }
        },
        headers=officer,
    )
    decision = approved.get("decision") or {
        "rule_id": "?",
        "outcome": "?",
        "reviewed": {"rule_id": "?"},
        "legal_basis": approved.get("detail"),
    }
    say(
        "[bold]10. determine[/bold] the hospital's step, then the zone's compliance office: "
        f"{approved['state']} as {decision['rule_id']} {decision['outcome']} "
        f"(reviewed as {decision['reviewed']['rule_id']}), mechanism {reference}, PIPIA PIPIA-SZH-2026-017, "
        f"two approvers: {decision['legal_basis']}"
    )
    delivered = []
    for dataset in ("mo-tourism-visitor-arrivals", "sz-hospital-outpatient-visits"):
        grants = _call("GET", "/api/v1/grants", settings, headers=startup)
        grant = next(g for g in grants if g["dataset_id"] == dataset and g["status"] == "active")
        body = _call("POST", f"/api/v1/grants/{grant['id']}/deliveries", settings, headers=startup)
        rows = sum(f["rows"] for f in body["files"])
        delivered.append({"dataset": dataset, "log_index": body["log_index"], "rows": rows})
        say(
            f"   delivered {dataset}: {rows:,} rows, columns {', '.join(body['columns'][:4])}…, "
            f"logged as transfer #{body['log_index']} before the {len(body['files'])} URL(s) were issued"
        )
    analysis = _analysis(settings, startup, hospital, officer, sector["id"], say)
    say("[bold]12. compliance[/bold] what the zone's compliance officer sees:")
    transfers = _call("GET", "/api/v1/transfers?limit=5", settings, headers=officer)
    for row in transfers[:3]:
        e = row["entry"]
        what = (
            f"ε {e['release']['epsilon']:g} spent, query {e['release']['query_sha256'][:12]}…"
            if e.get("transfer_mode") == "release"
            else f"{e['n_individuals']:,} individuals"
        )
        say(
            f"   #{row['index']} {e['transfer_mode']} {e['origin']} → {e['destination']} {e['dataset_id']}: "
            f"{e['decision_outcome']} ({e['rule_id']}) - {e['legal_basis']}; {what}; approved by "
            + ", ".join(a["step"] for a in e.get("approvers") or [])
        )
    counts = _call("GET", "/api/v1/compliance/counters", settings, headers=officer)
    for c in counts:
        say(
            f"   {c['exporter'] or c['exporter_org_id']} ({c['basis']}, {c['year']}): {c['pi_individuals']:,} individuals, "
            f"{c['spi_individuals']:,} sensitive - next thresholds {_threshold(c['next_threshold']['pi'])} "
            f"individuals / {_threshold(c['next_threshold']['spi'])} sensitive"
        )
    checkpoint = _call("GET", "/api/v1/transfer-log/checkpoint?fresh=true", settings, headers=officer)
    engine = db.create_engine(settings.db)
    try:
        with tempfile.TemporaryDirectory() as tmp, db.make_sessionmaker(engine)() as session:
            target = Path(tmp) / "transfer-log.jsonl"
            export(session, TransferLog(provider_from_settings(settings)), target)
            verdict = verify_export(target)
    finally:
        engine.dispose()
    say(
        f"   signed checkpoint: {checkpoint['tree_size']} entries, root {checkpoint['root_hash'][:16]}…; "
        + (
            f"offline verification of the export: [green]verified[/green] {verdict.entries} entries, "
            f"{verdict.checkpoints} checkpoints"
            if verdict.ok
            else f"[bold red]NOT VERIFIED[/bold red]: {verdict.problem}"
        )
    )
    return {
        "delivered": delivered,
        "analysis": analysis,
        "determination": {
            "state": approved.get("state"),
            "rule_id": decision.get("rule_id"),
            "outcome": decision.get("outcome"),
            "reviewed": (decision.get("reviewed") or {}).get("rule_id"),
        },
        "logged": [
            {
                "dataset": row["entry"]["dataset_id"],
                "transfer_mode": row["entry"].get("transfer_mode"),
                "outcome": row["entry"]["decision_outcome"],
                "rule_id": row["entry"]["rule_id"],
                "mechanism": row["entry"].get("mechanism"),
                "approvers": [a["step"] for a in row["entry"].get("approvers") or []],
            }
            for row in transfers
        ],
        "transfers": len(transfers),
        "counters": counts,
        "checkpoint": checkpoint["tree_size"],
        "verified": verdict.ok,
    }


ANALYSIS_SQL = (
    "SELECT department, date_trunc('month', visit_date) AS month, COUNT(*) AS visits, "
    "AVG(fee_cny) AS avg_fee FROM outpatient_visits GROUP BY department, month ORDER BY department, month"
)


def _analysis(
    settings: Settings,
    startup: dict[str, str],
    hospital: dict[str, str],
    officer: dict[str, str],
    sector_id: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Compute-to-data (ADR 0022): the Hong Kong startup learns the average fee per department
    and month from the hospital's visits, which never leave the zone; one DP release, logged."""
    asked = _call(
        "POST",
        "/api/v1/datasets/sz-hospital-outpatient-visits/access-requests",
        settings,
        json={
            "kind": "analysis",
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Average outpatient fee per department and month, for a clinic chain's pricing",
            "duration_days": 90,
        },
        headers=startup,
    )
    decision = asked["decision"]
    say(
        "[bold]11. analysis[/bold] the startup asks to analyse the hospital's visits without receiving them: "
        f"{asked['state']} ({decision['rule_id']} {decision['outcome']})"
    )
    review = f"/api/v1/access-requests/{asked['id']}/approve"
    _call(
        "POST",
        review,
        settings,
        json={"reason": "aggregates only, under the contract's budget"},
        headers=hospital,
    )
    approved = _call(
        "POST",
        review,
        settings,
        json={
            "findings": {"dp_release": True, "dp_evaluation_ref": "DP-EVAL-SZH-2026-004"},
            "determination": {
                "note": "Releases are differentially private aggregates under the contract's budget "
                "(ε 3 per grant, at most 5 visits per patient): anonymised, not personal information.",
                "sector_evidence_id": sector_id,
            },
        },
        headers=officer,
    )
    grant = approved["grant_id"]
    say(
        f"   the hospital's step, then the compliance office's finding and determination: {approved['state']} "
        f"as {approved['decision']['rule_id']} {approved['decision']['outcome']} - {approved['decision']['legal_basis']}"
    )
    ask = {"sql": ANALYSIS_SQL, "epsilon": 1.0}
    estimate = _call("POST", f"/api/v1/grants/{grant}/analyses/estimate", settings, json=ask, headers=startup)
    noise = ", ".join(
        f"{a['name']} ±{a['accuracy']:,.0f}" for a in estimate["accuracy"] if a.get("accuracy") is not None
    )
    say(f"   estimate (nothing spent): ε {estimate['epsilon']:g}; noise at 95%: {noise}")
    released = _call(
        "POST",
        f"/api/v1/grants/{grant}/analyses",
        settings,
        json=ask,
        headers=startup | {"Idempotency-Key": f"demo-{asked['id']}"},
    )
    rows = released["rows"] or []
    say(
        f"   released {len(rows)} group(s) (ε {released['epsilon']:g} spent, "
        f"{released['budget']['epsilon_left']:g} of {released['budget']['epsilon_total']:g} left), "
        f"logged as transfer #{released['log_index']}; the first rows:"
    )
    for row in rows[:4]:
        say(
            "      "
            + ", ".join(
                f"{c}={v:,.1f}" if isinstance(v, float) else f"{c}={v}"
                for c, v in zip(released["columns"], row, strict=False)
            )
        )
    return {
        "rule_id": approved["decision"]["rule_id"],
        "grant_id": grant,
        "groups": len(rows),
        "epsilon": released["epsilon"],
        "epsilon_left": released["budget"]["epsilon_left"],
        "log_index": released["log_index"],
    }


def _threshold(value: int | None) -> str:
    return f"{value:,}" if value is not None else "all passed"
