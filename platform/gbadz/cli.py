"""The ``gbadz`` command line: embedded services, the API server, migrations and the demo.

Expected failures print one line naming what failed and how to fix it, and exit 1; a
configuration error exits 2. Commands that scripts read take ``--json``.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from gbadz import db, embedded, log, storage
from gbadz.config import Settings, get_settings
from gbadz.errors import BadRequest, GbadzError, ServicesError, ServiceUnavailable

app = typer.Typer(
    name="gbadz",
    help="gbadz: the Greater Bay Area special data zone's data-sharing platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
services_app = typer.Typer(
    help="Embedded S3 server and SQLite database on loopback (state under .gbadz/).", no_args_is_help=True
)
db_app = typer.Typer(help="Catalog database schema.", no_args_is_help=True)
storage_app = typer.Typer(help="Object storage buckets.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
app.add_typer(storage_app, name="storage")
orgs_app = typer.Typer(help="Organisations taking part in the zone.", no_args_is_help=True)
clients_app = typer.Typer(help="OAuth clients of organisations.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
app.add_typer(clients_app, name="clients")
users_app = typer.Typer(help="People who sign in to the web console.", no_args_is_help=True)
app.add_typer(users_app, name="users")
contracts_app = typer.Typer(help="Data contracts (ODCS v3 + the gbadz block).", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
keys_app = typer.Typer(help="Keyring: key-encryption keys, data keys and signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(
    help="The tamper-evident transfer log: export and offline verification.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
cluster_app = typer.Typer(
    help="A production-shaped zone on this machine, on loopback: SeaweedFS cluster, PostgreSQL, "
    "Airflow with Celery workers, two API replicas (state under $GBADZ_HOME/cluster/<name>/).",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")

out = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@contextmanager
def _progress(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr, shown only to a person at a terminal: ``update(completed=…,
    total=…, description=…)``. Piped or redirected, nothing is drawn and stdout stays clean."""
    if not err.is_terminal:
        yield lambda **_: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    # Lines printed to stdout meanwhile go above the bar when both are the terminal, and straight
    # to stdout when it is a file or a pipe.
    with Progress(*columns, console=err, transient=True, redirect_stdout=out.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda **fields: bar.update(task, **fields)


def _settings() -> Settings:
    settings = get_settings()
    log.configure(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_json)
    return settings


def _resolved() -> Settings:
    return embedded.resolve_settings(_settings())


def _services(settings: Settings) -> embedded.EmbeddedServices:
    return embedded.EmbeddedServices(settings.home, bucket_settings=settings.s3)


def _table(*headers: str, whole: tuple[str, ...] = ()) -> Table:
    """A table whose columns never shrink to one character a line on a narrow terminal: each keeps
    at least its header's width (or 8), the ``whole`` ones (ids, versions) never wrap, the rest fold."""
    table = Table()
    for header in headers:
        keep = header in whole
        table.add_column(
            header, min_width=max(len(header), 8), no_wrap=keep, overflow="ellipsis" if keep else "fold"
        )
    return table


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def _status_payload(settings: Settings) -> dict[str, Any]:
    status = _services(settings).status()
    status["api"] = {"url": f"http://{settings.api.host}:{settings.api.port}"}
    return status


@services_app.command("up")
def services_up(as_json: JsonFlag = False) -> None:
    """Start the embedded services (idempotent: a running server is reused)."""
    settings = _settings()
    started_at = time.perf_counter()
    _, started = _services(settings).up(with_database=settings.db.url is None)
    resolved = embedded.resolve_settings(settings)
    engine = db.create_engine(resolved.db)
    revision = db.upgrade(engine)
    engine.dispose()
    payload = _status_payload(settings) | {"started": started, "schema": revision}
    if as_json:
        _print_json(payload)
        return
    verb = "started" if started else "already running"
    out.print(
        f"[green]S3[/green] {verb} at {payload['s3']['endpoint']} (pid {payload['s3']['pid']}) "
        f"in {time.perf_counter() - started_at:.1f}s"
    )
    out.print(f"[green]database[/green] {db.describe_url(resolved.db.url or '')} at schema {revision}")


@services_app.command("down")
def services_down(as_json: JsonFlag = False) -> None:
    """Stop what `services up` started (by PID); the data is kept."""
    stopped = _services(_settings()).down()
    if as_json:
        _print_json({"stopped": stopped})
    else:
        out.print("stopped the embedded S3 server" if stopped else "nothing was running")


@services_app.command("status")
def services_status(as_json: JsonFlag = False) -> None:
    """Show the embedded services and their endpoints."""
    payload = _status_payload(_settings())
    if as_json:
        _print_json(payload)
        return
    table = _table("service", "state", "where", whole=("service", "state"))
    s3 = payload["s3"]
    table.add_row("s3", "running" if s3["running"] else "stopped", s3["endpoint"] or "-")
    table.add_row(
        "database", "file" if payload["database"]["url"] else "-", payload["database"]["url"] or "-"
    )
    table.add_row("api", "-", payload["api"]["url"])
    out.print(table)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the catalog migrations."""
    engine = db.create_engine(_resolved().db)
    out.print(f"database at schema {db.upgrade(engine, revision)}")
    engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database."""
    engine = db.create_engine(_resolved().db)
    out.print(db.current_revision(engine) or "base (no schema)")
    engine.dispose()


@storage_app.command("init")
def storage_init() -> None:
    """Create the gbadz buckets on the configured S3 endpoint if they are missing."""
    settings = _resolved()
    created = storage.ensure_buckets(storage.make_client(settings.s3), settings.s3)
    out.print(f"created: {', '.join(created)}" if created else "all buckets exist")


@contextmanager
def _session() -> Iterator[Any]:
    settings = _resolved()
    engine = db.create_engine(settings.db)
    try:
        db.check_database(engine)
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _org_payload(org: Any) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "jurisdiction": org.jurisdiction,
        "registration_no": org.registration_no,
        "gba_registered": org.gba_registered,
        "ciio": org.ciio,
        "operator": org.operator,
        "created_at": org.created_at.isoformat(),
        "disabled_at": org.disabled_at.isoformat() if org.disabled_at else None,
    }


def _show(headers: list[str], rows: list[list[str]], ids: int = 1) -> None:
    """A table whose first ``ids`` columns are whole ids, never cut with an ellipsis. When the
    terminal is too narrow for the whole table, each row is printed as its own short block
    instead (the id on a line of its own, then one field a line), so nothing is ever cut."""
    table = Table()
    for index, header in enumerate(headers):
        if index < ids:
            table.add_column(header, no_wrap=True, overflow="fold")
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    needed = Measurement.get(out, out.options.update_width(10_000), table).maximum
    if needed <= out.width:
        out.print(table)
        return
    label = max(len(h) for h in headers)
    for row in rows:
        out.print(row[0], soft_wrap=True, highlight=False)
        for header, value in zip(headers[1:], row[1:], strict=True):
            out.print(f"  {header:<{label}}  {value}", soft_wrap=True, highlight=False)


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Option(help="Legal name.")],
    jurisdiction: Annotated[
        str, typer.Option(help="CN-GZ CN-SZ CN-ZH CN-FS CN-HZ CN-DG CN-ZS CN-JM CN-ZQ CN HK MO OTHER")
    ],
    registration_no: Annotated[
        str | None, typer.Option(help="USCC, HK BR or Macao registration number.")
    ] = None,
    gba_registered: Annotated[
        bool, typer.Option("--gba-registered", help="Registered in a GBA city, HK or MO.")
    ] = False,
    ciio: Annotated[
        bool, typer.Option("--ciio", help="A critical information infrastructure operator.")
    ] = False,
    operator: Annotated[
        bool, typer.Option("--operator", help="The zone's operator: its people may be administrators.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register an organisation; prints it with its id."""
    from gbadz.identity import service

    with _session() as session:
        org = service.create_organization(
            session,
            actor="cli:admin",
            name=name,
            jurisdiction=jurisdiction,
            registration_no=registration_no,
            gba_registered=gba_registered,
            ciio=ciio,
            operator=operator,
        )
        payload = _org_payload(org)
    if as_json:
        _print_json(payload)
    else:
        out.print(f"organisation {payload['id']} {payload['name']} ({payload['jurisdiction']})")


@orgs_app.command("list")
def orgs_list(as_json: JsonFlag = False) -> None:
    """List organisations."""
    from gbadz.identity import service

    with _session() as session:
        payload = [_org_payload(o) for o in service.list_organizations(session)]
    if as_json:
        _print_json(payload)
        return
    _show(
        ["id", "name", "jurisdiction", "GBA", "CIIO", "operator", "state"],
        [
            [
                o["id"],
                o["name"],
                o["jurisdiction"],
                "yes" if o["gba_registered"] else "no",
                "yes" if o["ciio"] else "no",
                "yes" if o["operator"] else "no",
                "disabled" if o["disabled_at"] else "active",
            ]
            for o in payload
        ],
    )


@orgs_app.command("disable")
def orgs_disable(
    org_id: Annotated[str, typer.Argument(help="The organisation's id (see `gbadz orgs list`).")],
) -> None:
    """Disable an organisation: its people and clients stop working at once; its grants and records stay."""
    from gbadz.identity import service

    with _session() as session:
        service.disable_organization(session, actor="cli:admin", actor_org_id="", org_id=org_id)
    out.print(f"disabled organisation {org_id}")


@clients_app.command("create")
def clients_create(
    org: Annotated[str, typer.Option(help="Organisation id (see `gbadz orgs list`).")],
    role: Annotated[str, typer.Option(help="provider, consumer, compliance_officer or admin.")],
    jwks_file: Annotated[
        Path | None, typer.Option(help="Public JWKS file: register for private_key_jwt instead of a secret.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="What the client is for (at most 100 characters).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register an OAuth client; prints client_id and a one-time client_secret."""
    from gbadz.identity import service
    from gbadz.identity.scopes import ROLE_SCOPES

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequest(f"--jwks-file {jwks_file}: {exc}") from None
    with _session() as session:
        issued = service.create_client(
            session,
            actor="cli:admin",
            org_id=org,
            role=role,
            auth_method="private_key_jwt" if jwks is not None else "client_secret",
            jwks=jwks,
            name=name,
        )
        scopes = sorted(ROLE_SCOPES[issued.client.role])
        payload: dict[str, Any] = {
            "client_id": issued.client.client_id,
            "client_secret": issued.client_secret,
            "org_id": issued.client.org_id,
            "role": issued.client.role,
            "auth_method": issued.client.auth_method,
            "scopes": scopes,
        }
    if as_json:
        _print_json(payload)
    else:
        out.print(f"client_id     {payload['client_id']}")
        if payload["client_secret"]:
            out.print(f"client_secret {payload['client_secret']}  (shown once; store it now)")
        out.print(f"scopes        {' '.join(scopes)}")


@users_app.command("create")
def users_create(
    org: Annotated[str, typer.Option(help="Organisation id (see `gbadz orgs list`).")],
    role: Annotated[
        str,
        typer.Option(help="provider, consumer, compliance_officer or admin (operator organisations only)."),
    ],
    username: Annotated[str, typer.Option(help="3-64 characters: a-z 0-9 . _ -")],
    display_name: Annotated[str, typer.Option(help="The name shown in the console.")],
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file (else asked for, not echoed).")
    ] = None,
) -> None:
    """Create a person who signs in to the web console (password hashed with Argon2id)."""
    from gbadz.identity import people

    if password_file is not None:
        try:
            password = password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise BadRequest(f"--password-file {password_file}: {exc}") from None
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _session() as session:
        user = people.create_user(
            session,
            actor="cli:admin",
            org_id=org,
            username=username,
            display_name=display_name,
            role=role,
            password=password,
        )
        out.print(f"created {user.username} ({user.role}) in organisation {user.org_id}")


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="The person to disable.")]) -> None:
    """Disable a person: their console sessions end at their next request and their tokens are refused."""
    from gbadz.identity import people

    with _session() as session:
        people.disable_user(session, actor="cli:admin", username=username)
    out.print(f"disabled {username}")


@clients_app.command("list")
def clients_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation's clients.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List OAuth clients (never a secret: only its hash is kept)."""
    from gbadz.identity import service
    from gbadz.identity.scopes import ROLE_SCOPES

    with _session() as session:
        payload: list[dict[str, Any]] = [
            {
                "client_id": c.client_id,
                "org_id": c.org_id,
                "role": c.role,
                "name": c.name,
                "auth_method": c.auth_method,
                "scopes": sorted(ROLE_SCOPES[c.role]),
                "created_at": c.created_at.isoformat(),
                "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
            }
            for c in service.list_clients(session, org)
        ]
    if as_json:
        _print_json(payload)
        return
    _show(
        ["client_id", "org_id", "role", "name", "state"],
        [
            [
                c["client_id"],
                c["org_id"],
                c["role"],
                c["name"] or "",
                "revoked" if c["revoked_at"] else "active",
            ]
            for c in payload
        ],
        ids=2,
    )


@users_app.command("list")
def users_list(
    org: Annotated[str | None, typer.Option(help="Only this organisation's people.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List people who sign in to the console."""
    from gbadz.identity import people

    with _session() as session:
        payload: list[dict[str, Any]] = [
            {
                "id": u.id,
                "username": u.username,
                "display_name": u.display_name,
                "org_id": u.org_id,
                "role": u.role,
                "created_at": u.created_at.isoformat(),
                "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
            }
            for u in people.list_users(session, org)
        ]
    if as_json:
        _print_json(payload)
        return
    _show(
        ["username", "org_id", "role", "state"],
        [
            [u["username"], u["org_id"], u["role"], "disabled" if u["disabled_at"] else "active"]
            for u in payload
        ],
        ids=2,
    )


@clients_app.command("revoke")
def clients_revoke(client_id: Annotated[str, typer.Argument(help="The client to revoke.")]) -> None:
    """Revoke a client: its credentials and all its tokens stop working."""
    from gbadz.identity import service

    with _session() as session:
        service.revoke_client(session, actor="cli:admin", client_id=client_id)
    out.print(f"revoked {client_id}")


def _provider(settings: Settings) -> Any:
    from gbadz.crypto.keys import provider_from_settings

    return provider_from_settings(settings)


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """List key-encryption keys (ids, versions, how many data keys each wraps) and signing keys.

    Key material is never printed.
    """
    provider = _provider(_settings())
    keks = provider.list_keks()
    signing = provider.public_keys()
    if as_json:
        _print_json(
            {
                "keks": [k.__dict__ for k in keks],
                "signing": [{"name": s.name, "key_id": s.key_id, "created": s.created} for s in signing],
                "destroyed_datasets": provider.destroyed_datasets(),
            }
        )
        return
    table = _table("kek", "classification", "version", "data keys", "created", whole=("version", "data keys"))
    for k in keks:
        table.add_row(k.kek_id, k.classification, str(k.primary_version), str(k.data_keys), k.created)
    out.print(table)
    for s in signing:
        out.print(f"signing key [bold]{s.name}[/bold] id {s.key_id} (Ed25519, created {s.created})")


@keys_app.command("rotate")
def keys_rotate(
    kek_id: Annotated[str | None, typer.Argument(help="KEK id as shown by `gbadz keys list`.")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Rotate every KEK.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Rotate key-encryption keys: re-wrap their data keys under a new version; data is not rewritten."""
    provider = _provider(_settings())
    if (kek_id is None) == (not all_keys):
        raise BadRequest("name one KEK id or pass --all")
    targets = [k.kek_id for k in provider.list_keks()] if all_keys else [kek_id]
    rotated = {target: provider.rotate(target) for target in targets if target is not None}
    if as_json:
        _print_json({"rotated": rotated})
    else:
        for target, version in rotated.items():
            out.print(f"rotated {target} to version {version}")
        if not rotated:
            out.print("no key-encryption keys yet")


@keys_app.command("rotate-signing")
def keys_rotate_signing(
    name: Annotated[
        str, typer.Argument(help="Signing key name, e.g. oauth-access-token.")
    ] = "oauth-access-token",
    as_json: JsonFlag = False,
) -> None:
    """Replace a signing key; its public half stays published until what it signed expires."""
    provider = _provider(_settings())
    old = next((k.key_id for k in provider.public_keys() if k.name == name), None)
    new = provider.rotate_signing_key(name)
    if as_json:
        _print_json({"name": name, "previous_key_id": old, "key_id": new})
    else:
        out.print(
            f"{name}: new key {new}"
            + (f" (previous {old} stays in the JWKS until its tokens expire)" if old else "")
        )


@keys_app.command("export-public")
def keys_export_public(
    name: Annotated[str, typer.Option(help="Signing key name.")] = "transfer-log",
    fmt: Annotated[str, typer.Option("--format", help="pem or jwk.")] = "pem",
) -> None:
    """Print a signing key's public half (creating the key on first use) for offline verification."""
    from gbadz.crypto import signing

    if fmt not in {"pem", "jwk"}:
        raise BadRequest(f"unknown format {fmt!r}: use pem or jwk")
    provider = _provider(_settings())
    provider.signing_key(name)
    info = next(k for k in provider.public_keys() if k.name == name)
    if fmt == "pem":
        sys.stdout.write(signing.to_pem(info))
    else:
        _print_json(signing.to_jwk(info))


def _contract_files(paths: list[Path]) -> list[Path]:
    """The files named, with each folder replaced by its *.yaml and *.yml files (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
            if not found:
                raise BadRequest(f"{path}: no *.yaml or *.yml contract in this folder")
            files.extend(found)
        else:
            files.append(path)
    return files


@contracts_app.command("lint")
def contracts_lint(
    paths: Annotated[
        list[Path], typer.Argument(help="Contract files or folders (every *.yaml, *.yml inside).")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Validate contracts; every problem is printed as FILE: FIELD: REASON; exit 1 on any."""
    from gbadz.contract import ContractError, load_contract

    problems: list[str] = []
    valid: list[str] = []
    files = _contract_files(paths)
    failed = 0
    for path in files:
        try:
            contract = load_contract(path)
            valid.append(f"{path}: {contract.id} {contract.version}")
        except ContractError as exc:
            problems.extend(exc.lines())
            failed += 1
    if as_json:
        _print_json({"valid": valid, "problems": problems})
    else:
        for line in valid:
            out.print(f"[green]ok[/green] {escape(line)}", highlight=False, soft_wrap=True)
        for line in problems:
            err.print(escape(line), highlight=False, soft_wrap=True)
        if len(files) > 1:
            summary = f"{len(files)} contract(s): {len(valid)} valid, {failed} with problems"
            (err if failed else out).print(summary, highlight=False)
    if problems:
        raise typer.Exit(1)


@contextmanager
def _ingest_progress(what: str) -> Iterator[None]:
    """A bar over the run's steps (land, validate, publish or quarantine), with the rows once counted."""
    from gbadz.ingest import progress

    rows: list[int] = []
    with _progress(f"{what}: starting Airflow", total=progress.STEPS) as update:

        def step(name: str, counted: int | None) -> None:
            if counted is not None:
                rows.append(counted)
            size = f", {rows[-1]:,} rows" if rows else ""
            update(advance=1, description=f"{what}: {name} done{size}")

        with progress.listening(step):
            yield


@app.command("ingest")
def ingest(
    contract: Annotated[Path, typer.Argument(help="The data contract (contracts/*.yaml).")],
    datafile: Annotated[Path, typer.Argument(help="The upload: CSV or Parquet.")],
    dags_folder: Annotated[
        Path | None, typer.Option(help="Folder holding gbadz_ingest.py (default: ./dags).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one upload through the ingest DAG (Airflow dag.test(), no scheduler); exit 1 if rejected."""
    from gbadz.contract import load_contract
    from gbadz.ingest import runner

    load_contract(contract)  # a bad contract fails here, in one line, before Airflow starts
    if not datafile.is_file():
        raise BadRequest(f"{datafile}: no such file (the upload to ingest)")
    settings = _resolved()
    with _ingest_progress(f"ingesting {datafile.name}"):
        outcome = runner.run(settings, contract, datafile, dags_folder or runner.default_dags_folder())
    payload = {
        "accepted": outcome.accepted,
        "version": outcome.version,
        "summary": outcome.summary,
        "dag_state": outcome.dag_state,
        "tasks": outcome.task_states,
    }
    if as_json:
        _print_json(payload | {"report": outcome.report})
    elif outcome.accepted:
        out.print(f"[green]published[/green] version {outcome.version}: {outcome.summary}")
    else:
        out.print(f"[red]rejected[/red]: {outcome.summary}", soft_wrap=True)
    if not outcome.accepted:
        raise typer.Exit(1)


@app.command("ingest-upload")
def ingest_upload(
    run_id: Annotated[int, typer.Argument(min=1, help="The upload's ingestion run id.")],
    dags_folder: Annotated[
        Path | None, typer.Option(help="Folder holding gbadz_ingest.py (default: ./dags).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one landed upload (queued, or claimed by the embedded worker) through the ingest DAG."""
    from gbadz.ingest import runner

    settings = _resolved()
    try:
        outcome = runner.run_upload(settings, run_id, dags_folder or runner.default_dags_folder())
    except ServicesError as exc:
        if as_json:
            _print_json({"upload": run_id, "error": str(exc)[:500], "tasks": getattr(exc, "tasks", {})})
        raise
    payload = {
        "upload": run_id,
        "accepted": outcome.accepted,
        "version": outcome.version,
        "summary": outcome.summary,
        "dag_state": outcome.dag_state,
        "tasks": outcome.task_states,
    }
    if as_json:
        _print_json(payload)
    else:
        verdict = f"published version {outcome.version}" if outcome.accepted else "rejected"
        out.print(f"upload {run_id}: {verdict}: {outcome.summary}", soft_wrap=True)


@app.command("ingest-requeue")
def ingest_requeue(
    run_id: Annotated[int, typer.Argument(min=1, help="The failed ingestion run's id.")],
    as_json: JsonFlag = False,
) -> None:
    """Queue a failed upload again (its landed file is reused as it is); audited."""
    from gbadz.ingest.worker import requeue

    with _session() as session:
        run = requeue(session, run_id, actor="cli:admin")
        payload = {"upload": run.id, "dataset": run.dataset_id, "status": run.status}
    if as_json:
        _print_json(payload)
    else:
        out.print(f"upload {run_id} of {payload['dataset']}: queued again", soft_wrap=True)


@app.command("ingest-queued")
def ingest_queued(
    dags_folder: Annotated[
        Path | None, typer.Option(help="Folder holding gbadz_ingest.py (default: ./dags).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run every upload the API landed and queued through the ingest DAG, oldest first."""
    from gbadz.ingest import runner

    settings = _resolved()
    results = []
    for run_id in runner.claimed_uploads(settings):
        with _ingest_progress(f"ingesting upload {run_id}"):
            outcome = runner.run_upload(settings, run_id, dags_folder or runner.default_dags_folder())
        results.append(
            {
                "upload": run_id,
                "accepted": outcome.accepted,
                "version": outcome.version,
                "summary": outcome.summary,
            }
        )
        if not as_json:
            verdict = (
                f"[green]published[/green] version {outcome.version}"
                if outcome.accepted
                else "[red]rejected[/red]"
            )
            out.print(f"upload {run_id}: {verdict}: {outcome.summary}", soft_wrap=True)
    if as_json:
        _print_json({"uploads": results})
    elif not results:
        out.print("no queued uploads")


@audit_app.command("export")
def audit_export(
    target: Annotated[Path, typer.Argument(help="File to write (JSON lines).")],
    checkpoint: Annotated[bool, typer.Option(help="Sign a checkpoint for the current size first.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Write every transfer-log entry, every signed checkpoint and the public keys to one file."""
    from gbadz.crypto.keys import provider_from_settings
    from gbadz.translog.log import TransferLog, export

    settings = _resolved()
    engine = db.create_engine(settings.db)
    try:
        log = TransferLog(provider_from_settings(settings))
        sessions = db.make_sessionmaker(engine)
        if checkpoint:
            with sessions.begin() as session:
                log.checkpoint(session)
        with sessions() as session, _progress(f"exporting to {target.name}", total=None) as update:
            entries, checkpoints = export(
                session, log, target, lambda done, total: update(completed=done, total=total)
            )
    finally:
        engine.dispose()
    if as_json:
        _print_json({"file": str(target), "entries": entries, "checkpoints": checkpoints})
    else:
        out.print(f"wrote {entries:,} entries and {checkpoints:,} signed checkpoints to {target}")


@audit_app.command("verify")
def audit_verify(
    source: Annotated[Path, typer.Argument(help="An export written by `gbadz audit export`.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(help="Trusted Ed25519 public key (PEM), obtained out of band; repeatable."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute every entry's hash, every checkpoint's root and signature, offline; exit 1 on any mismatch."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gbadz.translog.log import verify_export

    trusted = None
    if public_key:
        trusted = []
        for path in public_key:
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except OSError as exc:
                raise BadRequest(f"--public-key {path}: {exc.strerror or exc}") from None
            except ValueError:
                raise BadRequest(f"--public-key {path}: not a PEM public key") from None
            if not isinstance(key, Ed25519PublicKey):
                err.print(f"{path}: not an Ed25519 public key")
                raise typer.Exit(2)
            trusted.append(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    size = source.stat().st_size if source.is_file() else None
    with _progress(f"verifying {source.name}", total=size) as update:
        verdict = verify_export(source, trusted, lambda read: update(completed=read))
    if as_json:
        _print_json(verdict.__dict__)
    elif verdict.ok:
        out.print(
            f"[green]verified[/green] {verdict.entries:,} entries against {verdict.checkpoints} signed checkpoints"
        )
    else:
        where = (
            f" (first bad index: {verdict.first_bad_index})" if verdict.first_bad_index is not None else ""
        )
        err.print(f"[red]NOT VERIFIED[/red]: {verdict.problem}{where}", soft_wrap=True)
    if not verdict.ok:
        raise typer.Exit(1)


@app.command("sweep-grants")
def sweep_grants(as_json: JsonFlag = False) -> None:
    """Delete the delivery copies of every grant that ended (revoked or expired); the API does
    this on a timer too. Safe to run on several machines at once."""
    from gbadz import db, storage
    from gbadz.delivery.service import sweep_ended_grants

    settings = _resolved()
    engine = db.create_engine(settings.db)
    try:
        with err.status("deleting the copies of ended grants…"):
            swept = sweep_ended_grants(
                db.make_sessionmaker(engine), storage.make_client(settings.s3, retries=1), settings
            )
    finally:
        engine.dispose()
    if as_json:
        _print_json({"grants_swept": swept})
    else:
        out.print(f"deleted the delivery copies of {swept} ended grant(s)")


@app.command("check")
def check(as_json: JsonFlag = False) -> None:
    """Check that the database and S3 are usable; exit 1 naming every problem on one line."""
    settings = _resolved()
    problems: list[str] = []
    engine = db.create_engine(settings.db)
    revision = None
    try:
        revision = db.check_database(engine)
    except GbadzError as exc:
        problems.append(exc.detail)
    finally:
        engine.dispose()
    try:
        storage.check_storage(storage.make_client(settings.s3, retries=0), settings.s3)
    except GbadzError as exc:
        problems.append(exc.detail)
    if problems:
        raise ServiceUnavailable("; ".join(problems))
    db_url = db.describe_url(settings.db.url or "")
    payload = {
        "database": {"url": db_url, "schema": revision},
        "s3": {"endpoint": settings.s3.endpoint_url, "buckets": list(settings.s3.buckets)},
    }
    if as_json:
        _print_json(payload)
    else:
        out.print(f"[green]ok[/green] database {db_url} (schema {revision}); S3 {settings.s3.endpoint_url}")


def serve_urls(host: str, port: int) -> list[str]:
    """What `gbadz serve` tells a person to open: the console and the API docs."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    return [f"console   {base}/console/", f"API docs  {base}/docs", f"OpenAPI   {base}/openapi.json"]


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
) -> None:
    """Run the API against the configured (or embedded) services."""
    import uvicorn

    from gbadz.app import create_app
    from gbadz.limits import server_options

    settings = _resolved()
    if "worker" not in settings.ingest.model_fields_set:  # uploads run without an operator
        settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"worker": True})})
    log.configure(settings.log_level, settings.log_json)
    application = create_app(settings)
    bind_host, bind_port = host or settings.api.host, port or settings.api.port
    for line in serve_urls(bind_host, bind_port):
        out.print(line, highlight=False, soft_wrap=True)
    sys.stdout.flush()  # before uvicorn's banner, even when stdout is a pipe
    config = uvicorn.Config(
        application,
        host=bind_host,
        port=bind_port,
        log_level="info",
        **server_options(settings),
    )
    log.quiet_server_errors()  # after uvicorn configured its loggers
    # What start-up built (about 230,000 objects: the app and every library it imports) lives as
    # long as the process. Out of the collector's sight, a full collection no longer walks it:
    # one took 0.26-0.36 s with every thread stopped, the event loop included (issue #20).
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()


@app.command("samples")
def samples_command(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the sample files.")],
    rows: Annotated[int, typer.Option(min=1, max=10_000_000)] = 100_000,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Write the seeded sample dataset of each contract (and a corrupted one) for trying uploads."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from gbadz.ingest import samples

    if fmt not in {"csv", "parquet"}:
        raise BadRequest(f"--format {fmt!r}: use csv or parquet")
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 2 * rows * len(samples.GENERATORS)  # each contract's sample and its corrupted twin
    with _progress("writing samples", total=total) as update:
        for contract_id in samples.GENERATORS:
            update(description=f"generating {contract_id}")
            table = samples.generate(contract_id, rows)
            twins = ((contract_id, table), (f"{contract_id}.bad", samples.corrupt(table, contract_id)))
            for name, data in twins:
                path = out_dir / f"{name}.{fmt}"
                update(description=f"writing {path.name}")
                if fmt == "csv":
                    pacsv.write_csv(data, path)
                else:
                    pq.write_table(data, path)
                update(advance=rows)
                out.print(f"wrote {path} ({data.num_rows:,} rows)")


@app.command("demo")
def demo(as_json: JsonFlag = False) -> None:
    """The main job on embedded defaults: services up, schema, storage and database at work."""
    from gbadz import demo as demo_module
    from gbadz.ingest import progress

    # The long steps are the DAG runs: the bar says which step of which upload is done.
    with _progress("demo", total=None) as update:

        def step(name: str, rows: int | None) -> None:
            update(description=f"demo: ingest {name} done" + (f" ({rows:,} rows)" if rows else ""))

        with progress.listening(step):
            report = demo_module.run(_settings(), console=None if as_json else out)
    if as_json:
        _print_json(report)


ClusterName = Annotated[
    str, typer.Option("--name", help="The cluster's name (a-z, 0-9; in its databases' names).")
]


def _cluster(name: str) -> Any:
    from gbadz.cluster.manager import Cluster

    return Cluster(_settings().home, name)


def _cluster_urls(payload: dict[str, Any]) -> list[str]:
    urls, login = payload["urls"], payload["airflow_login"]
    return [
        f"API replica A  {urls['api_a']}  (console {urls['api_a']}/console/)",
        f"API replica B  {urls['api_b']}",
        f"Airflow UI     {urls['airflow']}  (user {login['username']}, password in {login['password_file']})",
        f"S3 endpoint    {urls['s3']}  (keys in {payload['folder']}/secrets/secrets.json)",
    ]


@cluster_app.command("up")
def cluster_up(
    name: ClusterName = "local",
    workers: Annotated[
        int | None, typer.Option(min=1, max=8, help="Celery workers (default 1, then as recorded).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=10, max=3600, help="Seconds to wait for health.")] = 300,
    postgres: Annotated[
        str, typer.Option(help="PostgreSQL to create the cluster's two databases in (trust auth).")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    redis: Annotated[
        str, typer.Option(help="Redis broker (shared: the cluster keeps a key prefix of its own).")
    ] = ("redis://127.0.0.1:6379/0"),
    as_json: JsonFlag = False,
) -> None:
    """Start every part of the cluster that is not running and wait until all are healthy
    (idempotent: a cluster already up is left as it is)."""
    cluster = _cluster(name)
    began = time.perf_counter()
    with _progress(f"cluster {name}", total=None) as update:
        _, started = cluster.up(
            workers=workers,
            timeout_s=timeout,
            postgres_url=postgres,
            redis_url=redis,
            progress=lambda what: update(description=f"cluster {name}: {what}"),
        )
    elapsed = time.perf_counter() - began
    payload = cluster.status()
    if as_json:
        _print_json(payload | {"started": started, "seconds": round(elapsed, 1)})
        return
    if started:
        out.print(f"cluster {name} up: started {len(started)} process(es) in {elapsed:.1f}s", highlight=False)
    else:
        out.print(f"cluster {name} is already up", highlight=False)
    for line in _cluster_urls(payload):
        out.print(line, highlight=False, soft_wrap=True)


@cluster_app.command("down")
def cluster_down(
    name: ClusterName = "local",
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete its data, databases and Redis keys.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop the processes `cluster up` started (by PID: SIGTERM, then SIGKILL); the data is kept."""
    stopped = _cluster(name).down(purge=purge)
    if as_json:
        _print_json({"stopped": stopped, "purged": purge})
        return
    verb = "stopped " + ", ".join(stopped) if stopped else "nothing was running"
    out.print(f"cluster {name}: {verb}" + ("; data purged" if purge else "; data kept"), soft_wrap=True)


@cluster_app.command("status")
def cluster_status(name: ClusterName = "local", as_json: JsonFlag = False) -> None:
    """Show each process of the cluster: alive, ports, health, memory; and where its login is."""
    payload = _cluster(name).status()
    if as_json:
        _print_json(payload)
        if not payload["up"]:
            raise typer.Exit(1)
        return
    table = _table("part", "pid", "state", "ports", "RSS MiB", whole=("part", "pid", "state"))
    for part in payload["parts"]:
        state = "healthy" if part["healthy"] else ("unhealthy" if part["alive"] else "stopped")
        ports = " ".join(str(p) for p in part["ports"].values()) or "-"
        table.add_row(part["name"], str(part["pid"] or "-"), state, ports, f"{part['rss_bytes'] / 2**20:.0f}")
    out.print(table)
    out.print(f"total RSS {payload['rss_bytes'] / 2**20:.0f} MiB", highlight=False)
    for line in _cluster_urls(payload):
        out.print(line, highlight=False, soft_wrap=True)
    if not payload["up"]:
        raise typer.Exit(1)


def _config_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = "__".join(str(p) for p in error.get("loc", ()) if p != "__root__")
        name = f"GBADZ_{loc.upper()}" if loc else "settings"
        parts.append(f"{name}: {error.get('msg', '')}")
    return "configuration error: " + "; ".join(parts)


def _one_line(message: str) -> None:
    # Escaped: a field path such as columns[name] is text, not Rich markup.
    err.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def main() -> None:
    from pydantic_settings import SettingsError

    from gbadz.contract import ContractError

    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)  # click returns typer.Exit codes when not in standalone mode
    except GbadzError as exc:
        _one_line(exc.detail)
        sys.exit(1)
    except ValidationError as exc:
        _one_line(_config_error(exc))
        sys.exit(2)
    except SettingsError as exc:
        # A GBADZ_* variable pydantic-settings could not even parse (e.g. malformed JSON).
        group = re.search(r'field "(\w+)"', str(exc))
        name = f"GBADZ_{group.group(1).upper()}__*" if group else "a GBADZ_* variable"
        _one_line(f"configuration error: {name}: a value could not be parsed (lists and objects are JSON)")
        sys.exit(2)
    except ContractError as exc:
        # A missing or invalid contract: FILE: FIELD: REASON, every problem on the one line.
        _one_line(str(exc))
        sys.exit(1)
    except OSError as exc:
        # A file named on the command line that cannot be read or written.
        where = f"{exc.filename}: " if exc.filename else ""
        _one_line(f"{where}{exc.strerror or exc}")
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)


if __name__ == "__main__":
    main()
