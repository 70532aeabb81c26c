"""Console pages against the API calls they wrap and a trivial route, 10,000 datasets.

The console renders each page from in-process calls to the JSON API (ADR 0013); this measures
what that costs. The same server (``gbadz serve``, one uvicorn worker, loopback) answers:
the trivial ``/healthz``; ``GET /api/v1/datasets?q=...`` with a bearer token; the console's
``/console/catalog?q=...`` (same queries; session cookie, one API call, a Jinja2 page); and
the console's dataset page (one API call: these datasets have no version yet). wrk drives each
with 32 connections; the median of interleaved rounds is reported with the console's throughput
as a share of the API's.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from bench_catalog import ROUNDS, WORDS, _database, _median, api_server, seed, wrk

from gbadz import db
from gbadz.config import DatabaseSettings
from gbadz.identity import people
from gbadz.identity.models import OAuthClient

PASSWORD = "benchmark person password"  # noqa: S105 (a throwaway account on loopback)


def person(url: str, client_id: str) -> str:
    engine = db.create_engine(DatabaseSettings(url=url))
    with db.make_sessionmaker(engine).begin() as session:
        client = session.get(OAuthClient, client_id)
        assert client is not None
        people.create_user(
            session,
            actor="bench",
            org_id=client.org_id,
            username="bench-startup",
            display_name="Bench Startup",
            role="consumer",
            password=PASSWORD,
        )
    engine.dispose()
    return "bench-startup"


def _cookies(response: httpx.Response, jar: dict[str, str]) -> None:
    # The console's cookies are Secure; over plain loopback HTTP we carry them by hand.
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";", 1)[0]


def sign_in(base: str, username: str) -> str:
    """Walk the sign-in (authorization code + PKCE) and return the session cookie header."""
    jar: dict[str, str] = {}
    with httpx.Client(base_url=base, follow_redirects=False) as http:

        def go(method: str, url: str, **kwargs: object) -> httpx.Response:
            cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
            response = http.request(method, url, headers={"Cookie": cookie}, **kwargs)  # type: ignore[arg-type]
            _cookies(response, jar)
            return response

        start = go("GET", "/console/login")
        authorize = start.headers["location"]
        page = go("GET", authorize)
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token is not None
        posted = go(
            "POST",
            authorize,
            data={"username": username, "password": PASSWORD, "signin_token": token.group(1)},
        )
        callback = urlsplit(posted.headers["location"])
        finished = go("GET", f"{callback.path}?{callback.query}")
        assert finished.status_code == 303, finished.text
    return f"__Host-gbadz_session={jar['__Host-gbadz_session']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="gbadz-bench-console-") as tmp,
        _database(args.database_url, tmp) as url,
    ):
        client_id, secret = seed(url)
        username = person(url, client_id)
        with api_server(url, tmp) as base:
            cookie = sign_in(base, username)
            token = httpx.post(
                f"{base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            ).json()["access_token"]
            rng = random.Random(11)
            queries = ["+".join(rng.sample(WORDS, rng.choice((1, 2)))) for _ in range(2000)]
            visible = httpx.get(
                f"{base}/api/v1/datasets", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}
            ).json()["items"]
            scenarios: dict[str, tuple[list[str], str, tuple[str, str] | None]] = {
                "trivial": (["/healthz"], "", None),
                "api": ([f"/api/v1/datasets?q={q}&limit=20" for q in queries], token, None),
                "console": ([f"/console/catalog?q={q}" for q in queries], "", ("Cookie", cookie)),
                "dataset": ([f"/console/datasets/{d['id']}" for d in visible], "", ("Cookie", cookie)),
            }
            work = Path(tmp)
            wrk(base, scenarios["console"][0], "", work, ("Cookie", cookie))  # warm-up
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
            for _ in range(ROUNDS):
                for name, (paths, bearer, header) in scenarios.items():
                    runs[name].append(wrk(base, paths, bearer, work, header))
            results = {name: _median(r) for name, r in runs.items()}
    labels = {
        "trivial": "trivial /healthz",
        "api": "API search",
        "console": "console catalog page",
        "dataset": "console dataset page",
    }
    for name, stats in results.items():
        print(
            f"  {labels[name]:22s} {stats['rps']:8.0f} req/s  p50 {stats['p50']:6.2f} ms  p99 {stats['p99']:7.2f} ms"
        )
    api = results["api"]["rps"] or float("nan")  # 0 when nothing was answered (a deadlock)
    for name in ("console", "dataset"):
        print(f"  the {labels[name]} runs at {results[name]['rps'] / api:.2f} of the API search")
    print("  goal (issue #19): 0.50 or more of the API search, p99 under 100 ms at 32 connections")


if __name__ == "__main__":
    if shutil.which("wrk") is None:
        raise SystemExit("bench_console needs wrk (Debian package wrk; make bench installs it)")
    started = time.perf_counter()
    before = os.getloadavg()[0]
    main()
    # The machine is shared: the load average says how much of it the other work took.
    print(
        f"  ({time.perf_counter() - started:.0f}s; load average {before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
