"""Catalog search and get-by-id with 10,000 datasets, next to a trivial route of the same app.

The API runs in its own process (``gbadz serve``: uvicorn, one worker) on loopback and wrk
(a C load generator, one thread) drives it with 32 keep-alive connections of real HTTP. Each round drives the trivial ``/healthz``, a search (``q`` drawn from the catalog's
vocabulary, with and without filters) and a get-by-id (random dataset), interleaved over
several rounds; the median round of each is reported. The database is SQLite on local disk
(embedded mode) unless ``--database-url`` names a PostgreSQL database.

Goals (issue #6): search p99 under 50 ms; get-by-id at least 50% of the trivial route's throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gbadz import db
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import listing_fields
from gbadz.config import DatabaseSettings, apply_environment
from gbadz.contract import Contract
from gbadz.identity import service as identity_service

DATASETS = 10_000
CONCURRENCY = 32
DURATION_S = 8
ROUNDS = 3
WORDS = [
    "port",
    "berth",
    "vessel",
    "cargo",
    "container",
    "freight",
    "logistics",
    "delivery",
    "parcel",
    "courier",
    "hospital",
    "clinic",
    "outpatient",
    "visit",
    "diagnosis",
    "pharmacy",
    "tourism",
    "visitor",
    "arrival",
    "hotel",
    "occupancy",
    "retail",
    "payment",
    "merchant",
    "energy",
    "grid",
    "traffic",
    "metro",
    "bus",
    "ferry",
    "airport",
    "passenger",
    "weather",
    "rainfall",
    "air",
    "quality",
    "school",
    "enrolment",
    "housing",
    "rent",
    "trade",
    "export",
    "import",
    "customs",
    "finance",
    "loan",
    "insurance",
    "claims",
    "population",
    "census",
    "labour",
    "wages",
]
ORIGINS = ("CN-SZ", "CN-GZ", "CN-ZH", "HK", "MO", "CN")


def _contract(i: int, rng: random.Random, org_name: str, origin: str) -> Contract:
    words = rng.sample(WORDS, 6)
    columns = [{"name": f"{w}_{j}", "logicalType": "string"} for j, w in enumerate(rng.sample(WORDS, 8))]
    columns.append({"name": "subject_id", "logicalType": "string", "required": True})
    pi = rng.random() < 0.4
    return Contract.model_validate(
        {
            "apiVersion": "v3.0.2",
            "kind": "DataContract",
            "id": f"bench-{i:05d}",
            "name": f"{words[0].title()} {words[1]} {words[2]} {i}",
            "version": "1.0.0",
            "status": "active",
            "description": {"purpose": f"Records of {words[3]} and {words[4]} for {words[5]} planning."},
            "tags": rng.sample(WORDS, 3),
            "schema": [{"name": "records", "properties": columns}],
            "gbadz": {
                "provider": {"organization": org_name},
                "origin": origin,
                "category": "important" if rng.random() < 0.2 else "general",
                "columns": {
                    "subject_id": {"pi": True, "subject_identifier": True, "protection": "pseudonymise"}
                }
                if pi
                else {},
                "licence": {
                    "permitted_purposes": rng.sample(["trade_transport_academic_mfg_marketing", "other"], 1),
                    "max_grant_duration": "P1Y",
                },
            },
        }
    )


def seed(url: str) -> tuple[str, str]:
    """10,000 datasets from 12 providers; returns a Hong Kong consumer's client id and secret."""
    engine = db.create_engine(DatabaseSettings(url=url))
    db.upgrade(engine)
    sessions = db.make_sessionmaker(engine)
    rng = random.Random(2026)
    with sessions.begin() as session:
        suffix = f"{time.time_ns()}"
        orgs = []
        for n in range(12):
            origin = ORIGINS[n % len(ORIGINS)]
            orgs.append(
                identity_service.create_organization(
                    session, actor="bench", name=f"bench-provider-{n}-{suffix}", jurisdiction=origin
                )
            )
        for i in range(DATASETS):
            org = orgs[i % len(orgs)]
            contract = _contract(i, rng, org.name, org.jurisdiction)
            fields = listing_fields(contract, f"{i:064d}") | {"classification_state": "approved"}
            session.add(Dataset(id=contract.id, provider_org_id=org.id, **fields))
        consumer_org = identity_service.create_organization(
            session, actor="bench", name=f"bench-consumer-{suffix}", jurisdiction="HK"
        )
        issued = identity_service.create_client(
            session, actor="bench", org_id=consumer_org.id, role="consumer"
        )
    engine.dispose()
    return issued.client.client_id, issued.client_secret or ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


WRK_SCRIPT = """
local paths = {}
local n = 0
local headers = {}
function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    paths[n] = line
  end
  if args[2] ~= nil and args[2] ~= "" then
    headers[args[2]] = args[3]
  end
  math.randomseed(os.time() + n)
end
function request()
  return wrk.format("GET", paths[math.random(n)], headers)
end
function response(status, headers, body)
  if status ~= 200 then
    error("unexpected status " .. status)
  end
end
"""


def _unit(value: str) -> float:
    """A wrk latency such as 812.00us, 1.23ms or 1.05s, in milliseconds."""
    for suffix, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * scale
    raise ValueError(value)


def wrk(
    base: str, paths: list[str], token: str, workdir: Path, header: tuple[str, str] | None = None
) -> dict[str, float]:
    """Drive ``paths`` (drawn at random) with wrk: one thread, 32 connections, fixed duration.

    Requests carry ``Authorization: Bearer <token>`` when a token is given, else ``header``.
    """
    name, value = ("Authorization", f"Bearer {token}") if token else header or ("", "")
    script = workdir / "paths.lua"
    script.write_text(WRK_SCRIPT)
    listing = workdir / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONCURRENCY}",
            f"-d{DURATION_S}s",
            "--latency",
            "-s",
            str(script),
            base,
            "--",
            str(listing),
            name,
            value,
        ],
        capture_output=True,
        text=True,
        timeout=DURATION_S + 60,
        check=True,
    )
    out = result.stdout
    if "Non-2xx" in out or "error" in result.stderr.lower():
        raise SystemExit(f"wrk saw failed requests:\n{out}\n{result.stderr}")
    stats: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        stats[f"p{q}"] = _unit(re.search(rf"\s{q}%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return stats


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    return sorted(results, key=lambda r: r["rps"])[len(results) // 2]


def scenarios(base: str, client_id: str, secret: str) -> tuple[str, dict[str, list[str]]]:
    rng = random.Random(7)
    token = httpx.post(
        f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    searches = []
    for _ in range(5000):
        q = "+".join(rng.sample(WORDS, rng.choice((1, 1, 2))))
        extra = rng.choice(("", "&origin=HK", "&has_pi=true", "&category=general", "&sort=name"))
        searches.append(f"/api/v1/datasets?q={q}&limit=20{extra}")
    visible = httpx.get(f"{base}/api/v1/datasets?limit=1", headers=auth).json()["total"]
    print(f"  a Hong Kong consumer sees {visible:,} of {DATASETS:,} datasets (the rest are restricted)")
    # A restricted dataset is a 404 for this consumer: get-by-id draws from the ones it may see.
    allowed: list[str] = []
    cursor = None
    while len(allowed) < 3000:
        params: dict[str, Any] = {"limit": 100, "sort": "name"}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{base}/api/v1/datasets", params=params, headers=auth, timeout=30).json()
        allowed += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return token, {
        "trivial": ["/healthz"],
        "search": searches,
        "get": [f"/api/v1/datasets/{d}" for d in allowed],
    }


@contextlib.contextmanager
def _database(base: str | None, tmp: str) -> Iterator[str]:
    """SQLite in ``tmp``, or a throwaway schema in the given PostgreSQL database (dropped afterwards)."""
    if base is None:
        yield f"sqlite:///{tmp}/catalog.db"
        return
    schema = f"gbadz_bench_{secrets.token_hex(4)}"
    plain = db.normalise_url(base).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def api_server(url: str, tmp: str) -> Iterator[str]:
    """``gbadz serve`` (one uvicorn worker) on a loopback port over ``url``; yields its base URL."""
    with served(url, tmp) as (base, _):
        yield base


@contextlib.contextmanager
def served(url: str, tmp: str, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``gbadz serve`` (one uvicorn worker) on a loopback port over ``url``, with ``extra_env``
    settings; yields its base URL and PID."""
    port = free_port()
    env = apply_environment(
        (extra_env or {})
        | {
            "GBADZ_ENV": "test",
            "GBADZ_HOME": tmp,
            "GBADZ_LOG_LEVEL": "WARNING",
            "GBADZ_DB__URL": url,
            "GBADZ_S3__ENDPOINT_URL": "http://127.0.0.1:1",
            "GBADZ_S3__ACCESS_KEY": "unused",
            "GBADZ_S3__SECRET_KEY": "unused-secret",
            "GBADZ_CRYPTO__PASSPHRASE": "benchmark keyring passphrase",
            "GBADZ_CRYPTO__SCRYPT_LOG2_N": "12",
            "GBADZ_OAUTH__ISSUER": f"http://127.0.0.1:{port}",
        }
    )
    gbadz = Path(sys.executable).parent / "gbadz"
    # stderr to a file, never an unread pipe: a full pipe would block the server's next log line.
    errors = Path(tmp) / "serve.stderr"
    server = subprocess.Popen(
        [str(gbadz), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors.open("wb"),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API did not start: " + errors.read_text(errors="replace"))
            time.sleep(0.1)
        yield base, server.pid
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="gbadz-bench-catalog-") as tmp,
        _database(args.database_url, tmp) as url,
    ):
        started = time.perf_counter()
        client_id, secret = seed(url)
        print(f"seeded {DATASETS:,} datasets in {time.perf_counter() - started:.1f}s ({url.split(':')[0]})")
        with api_server(url, tmp) as base:
            token, paths = scenarios(base, client_id, secret)
            work = Path(tmp)
            wrk(base, paths["search"], token, work)  # warm-up
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
            for _ in range(ROUNDS):
                for name, listing in paths.items():
                    runs[name].append(wrk(base, listing, token if name != "trivial" else "", work))
            results = {name: _median(r) for name, r in runs.items()}
    print(
        f"wrk: 1 thread, {CONCURRENCY} connections, {DURATION_S}s per run against one uvicorn worker on "
        f"loopback; median of {ROUNDS} interleaved rounds"
    )
    labels = {"trivial": "trivial /healthz", "search": "search (q + filters)", "get": "get-by-id"}
    for name, stats in results.items():
        print(
            f"  {labels[name]:22s} {stats['rps']:8.0f} req/s  p50 {stats['p50']:6.2f} ms  p99 {stats['p99']:7.2f} ms"
        )
    print(f"  search p99 {results['search']['p99']:.1f} ms (goal: under 50 ms)")
    ratio = results["get"]["rps"] / results["trivial"]["rps"]
    print(f"  get-by-id {ratio:.2f} of the trivial route's throughput (goal: at least 0.50)")


if __name__ == "__main__":
    if shutil.which("wrk") is None:
        raise SystemExit("bench_catalog needs wrk (Debian package wrk; make bench installs it)")
    main()
