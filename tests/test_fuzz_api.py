"""Property-based fuzzing of the whole API from the app's own OpenAPI document (schemathesis).

Every operation in the document (``/api/v1``, ``/oauth``, the Delta Sharing routes and the
probes) is fuzzed with the real token of each role (consumer, provider, compliance officer,
admin); the Delta Sharing routes also with the grant's real sharing token. A small world is
seeded first (a listed dataset with a published version, a grant, a request under review, a
mechanism on file), and in half the generated requests the ids in the path, query and body are
swapped for those real ids, so the fuzzer reaches records and not only 404s. Every request must answer something other than a
5xx, with a declared status code, a declared content type and a body matching its declared
schema. The console's HTML routes are not in the OpenAPI document (``include_in_schema=False``).
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gbadz.contract import Contract
from gbadz.identity.scopes import ROLE_SCOPES
from gbadz.ingest import pipeline
from tests.datasets import Party, file_mechanism

pytestmark = pytest.mark.e2e

# Examples per (operation, credential) and database lane: 64 operations x 4 roles, plus the
# sharing token on the 8 Delta Sharing routes. A role that lacks the operation's scopes is refused
# before its input is read, so a few examples show that refusal holds for any input; a role that
# holds them (and every credential on a public route) gets more. About 1,000 requests a lane.
EXAMPLES = 5
REFUSED_EXAMPLES = 2
ROLES = ("consumer", "provider", "compliance_officer", "admin")
SHARING = "/delta-sharing/"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ENDS = re.compile(r"/(revoke|retire|withdraw|amend|deprecate|redecide|disable)$")
MODES = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@dataclass
class World:
    """Real credentials per role and real ids to aim the fuzzer at."""

    headers: dict[str, dict[str, str]]
    known: dict[str, str]
    requests: int = 0


def _ingest(app: FastAPI, provider: Party, dataset_id: str, tmp_path: Path, http: TestClient) -> None:
    """Version 1 of the dataset, published by the pipeline from a four-row CSV."""
    doc = http.get(f"/api/v1/datasets/{dataset_id}", headers=provider.headers).json()
    source = tmp_path / "rows.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "district", "trips", "phone", "customer_id"])
        for i in range(4):
            writer.writerow([f"R-{i}", "Kowloon", i, f"+852 5555 000{i}", f"C-{i}"])
    ctx = pipeline.IngestContext(app.state.settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    result = pipeline.ingest(ctx, Contract.model_validate(doc["contract"]), "fuzz", source)
    assert result.accepted, result


@pytest.fixture
def world(
    app: FastAPI,
    http: TestClient,
    party: Callable[..., Party],
    publish: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> World:
    provider, consumer = party("provider", "HK"), party("consumer", "HK")
    officer, admin = party("compliance_officer", "CN-SZ"), party("admin", "HK")
    dataset = publish(provider)["id"]
    _ingest(app, provider, dataset, tmp_path, http)
    asked = http.post(
        f"/api/v1/datasets/{dataset}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Route planning",
            "columns": ["record_id", "district", "trips"],
        },
        headers=consumer.headers,
    )
    assert 201 == asked.status_code, asked.text
    grant = asked.json()["grant_id"]
    assert grant is not None, asked.json()
    # A Shenzhen dataset with no version yet: a request for it waits for the provider's review.
    shenzhen = party("provider", "CN-SZ")
    unknown_volume = publish(shenzhen, origin="CN-SZ")["id"]
    pending = http.post(
        f"/api/v1/datasets/{unknown_volume}/access-requests",
        json={"purpose": "trade_transport_academic_mfg_marketing", "purpose_text": "Route planning"},
        headers=consumer.headers,
    )
    assert 201 == pending.status_code, pending.text
    assert "under_provider_review" == pending.json()["state"], pending.json()
    mechanism = file_mechanism(http, app, shenzhen.client.org_id, consumer.client.org_id)
    obligations = http.get("/api/v1/obligations", headers=provider.headers).json()
    profile = http.get(f"/api/v1/grants/{grant}/sharing-profile", headers=consumer.headers)
    assert 200 == profile.status_code, profile.text
    sharing = profile.json()
    share = http.get("/delta-sharing/shares", headers={"Authorization": f"Bearer {sharing['bearerToken']}"})
    assert 200 == share.status_code, share.text
    known = {
        "dataset_id": dataset,
        "dataset": dataset,
        "exporter": provider.client.org_id,
        "recipient": consumer.client.org_id,
        "org_id": consumer.client.org_id,
        "exporter_org_id": shenzhen.client.org_id,
        "recipient_org_id": consumer.client.org_id,
        "sector_evidence_id": mechanism["id"],
        "table": dataset,
        "version": "1.0.0",
        "grant_id": grant,
        "request_id": pending.json()["id"],
        "evidence_id": mechanism["id"],
        "client_id": party("consumer", "HK").client.client_id,  # a spare: revoking it ends no role
        "share": share.json()["items"][0]["name"],
        "schema": "default",
        "index": "0",
    }
    if obligations:
        known["obligation_id"] = obligations[0]["id"]
    headers = {
        "consumer": consumer.headers,
        "provider": provider.headers,
        "compliance_officer": officer.headers,
        "admin": admin.headers,
        "sharing": {"Authorization": f"Bearer {sharing['bearerToken']}"},
    }
    return World(headers, known)


def _required_scopes(app: FastAPI) -> dict[tuple[str, str], frozenset[str]]:
    """The scopes each route's dependencies require (none: public, or a Delta Sharing route)."""

    def walk(dependant: Any) -> frozenset[str]:
        for dep in dependant.dependencies:
            scopes = getattr(dep.call, "required_scopes", None)
            found = frozenset(scopes) if scopes is not None else walk(dep)
            if found:
                return found
        return frozenset()

    return {
        (method, route.path): walk(route.dependant)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def _fuzz(operation: Any, credential: dict[str, str], examples: int, world: World) -> None:
    @given(case=MODES.flatmap(operation.as_strategy), known=st.booleans())
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any, known: bool) -> None:
        if known:  # half the calls aim at the seeded records (ids in the path, query or body)
            body = case.body if isinstance(case.body, dict) else None
            for parameters in (case.path_parameters, case.query, body):
                for name in parameters or {}:
                    if name in world.known:
                        parameters[name] = world.known[name]
        world.requests += 1
        case.call_and_validate(headers=credential, checks=CHECKS)

    fuzz()


def _interrupted(exc: BaseException) -> bool:
    """A timeout or an interrupt (hypothesis wraps it when it replays), not a finding."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupted(inner) for inner in exc.exceptions)
    return not isinstance(exc, Exception) or (
        exc.__cause__ is not None and not isinstance(exc.__cause__, Exception)
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def test_every_operation_for_every_role_never_fails_or_breaks_its_schema(
    app: FastAPI, http: TestClient, world: World
) -> None:
    """No generated request, for any role, gets a 5xx or an undeclared status, type or body."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # What ends a seeded record (a revoked grant, a retired dataset) goes last, so the other
    # operations meet the live world first and these meet it too.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: (
            bool(ENDS.search(op.path))
            or (op.method.upper(), op.path) == ("PUT", "/api/v1/datasets/{dataset_id}")
        ),
    )
    assert len(operations) >= 60  # the whole document, not one router
    required = _required_scopes(app)
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        needs = required[operation.method.upper(), operation.path]
        credentials = list(ROLES) + (["sharing"] if operation.path.startswith(SHARING) else [])
        for name in credentials:
            held = ROLE_SCOPES.get(name, frozenset())
            refused = not needs <= held or (operation.path.startswith(SHARING) and name != "sharing")
            examples = REFUSED_EXAMPLES if refused else EXAMPLES
            try:
                _fuzz(operation, world.headers[name], examples, world)
            except (Exception, BaseExceptionGroup) as exc:  # gather every finding, then fail once
                if _interrupted(exc):
                    raise
                failures.append(f"{operation.method.upper()} {operation.path} as {name}: {_describe(exc)}")
    elapsed = time.monotonic() - started
    summary = f"{len(operations)} operations, {world.requests} requests, {elapsed:.1f}s"
    print(summary)  # noqa: T201 - the suite's time budget is checked against this (pytest -s)
    assert [] == failures, "\n\n".join(failures)
