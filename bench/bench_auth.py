"""Token validation cost per request: an authorized route vs a trivial route of the same app.

Both go through the same ASGI stack (request ids, error handlers) in one process, driven by
32 concurrent clients, so the ratio isolates what authentication adds: JWT signature and
claim checks, the revocation and client-status lookups in the database, and the thread
hop. The database is SQLite on local disk (embedded mode).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr

from gbadz import db
from gbadz.app import create_app
from gbadz.config import CryptoSettings, DatabaseSettings, S3Settings, Settings
from gbadz.identity import service
from gbadz.identity.auth import describe
from gbadz.identity.schemas import Me
from gbadz.identity.tokens import Principal

CONCURRENCY = 32
REQUESTS = 4000
ROUNDS = 3


async def drive(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = REQUESTS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await client.get(path, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return REQUESTS / (time.perf_counter() - started), latencies


def _median_run(results: list[tuple[float, list[float]]]) -> tuple[float, list[float]]:
    ordered = sorted(results, key=lambda r: r[0])
    return ordered[len(ordered) // 2]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            env="test",
            home=Path(tmp),
            db=DatabaseSettings(url=f"sqlite:///{tmp}/bench.db"),
            s3=S3Settings(
                endpoint_url="http://127.0.0.1:1", access_key="unused", secret_key=SecretStr("unused-secret")
            ),
            crypto=CryptoSettings(passphrase=SecretStr("benchmark keyring passphrase"), scrypt_log2_n=12),
        )
        engine = db.create_engine(settings.db)
        db.upgrade(engine)
        app = create_app(settings)
        fixed = Principal(
            subject="s",
            client_id="c",
            org_id="o",
            role="consumer",
            scopes=frozenset({"catalog:read"}),
            jti="j",
            issuer="i",
            expires_at=datetime.now(UTC),
        )

        # The same route as /api/v1/me minus authentication: the floor for "what auth costs".
        @app.get("/bench/me-without-auth", response_model=Me)
        async def me_without_auth() -> Me:
            return Me(**describe(fixed))

        with app.state.sessionmaker.begin() as session:
            org = service.create_organization(session, actor="bench", name="bench-org", jurisdiction="HK")
            issued = service.create_client(session, actor="bench", org_id=org.id, role="consumer")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:
            token = (
                await client.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(issued.client.client_id, issued.client_secret or ""),
                )
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            await drive(client, "/bench/me-without-auth", {})  # warm-up
            await drive(client, "/api/v1/me", auth)
            # Interleave the routes over several rounds and keep medians: the machine is shared.
            runs: dict[str, list[tuple[float, list[float]]]] = {"trivial": [], "floor": [], "ours": []}
            for _ in range(ROUNDS):
                runs["trivial"].append(await drive(client, "/healthz", {}))
                runs["floor"].append(await drive(client, "/bench/me-without-auth", {}))
                runs["ours"].append(await drive(client, "/api/v1/me", auth))
            trivial, trivial_lat = _median_run(runs["trivial"])
            floor, floor_lat = _median_run(runs["floor"])
            ours, ours_lat = _median_run(runs["ours"])
        engine.dispose()

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    print(
        f"{REQUESTS} requests per run, {CONCURRENCY} concurrent clients, in-process ASGI, median of {ROUNDS} interleaved runs"
    )
    rows = [
        ("trivial /healthz", trivial, trivial_lat),
        ("same route without auth", floor, floor_lat),
        ("authorized /api/v1/me", ours, ours_lat),
    ]
    for label, rate, lat in rows:
        print(
            f"  {label:26s} {rate:8.0f} req/s  p50 {pct(lat, 50):6.2f} ms  "
            f"p99 {pct(lat, 99):7.2f} ms  max {max(lat) * 1000:7.1f} ms"
        )
    print(f"  ratio {ours / floor:.2f} of the same route without auth (goal: at least 0.70)")


if __name__ == "__main__":
    asyncio.run(main())
