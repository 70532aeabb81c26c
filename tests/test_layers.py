"""Layers: route modules only parse, call a service and shape the response (ADR 0014).

Two checks, each shown to catch what it forbids: a static read of every route module's
source (no SQLAlchemy import, no query or transaction call, no session opened), and a run
of every API route under SQLAlchemy event listeners that fail if the innermost gbadz frame
issuing SQL or beginning a transaction lives in a route module.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from gbadz.deps import ReadSession
from tests.api import Client, bearer, fetch_token

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "gbadz"
QUERY_CALLS = {"execute", "scalar", "scalars", "commit", "rollback", "begin", "begin_nested", "flush"}
SESSION_FACTORIES = {"sessionmaker", "sessions", "session_scope"}


def is_route_module(filename: str) -> bool:
    path = Path(filename)
    return PACKAGE in path.parents and (
        path.stem == "routes" or path.stem.endswith("_routes") or path == PACKAGE / "console" / "signin.py"
    )


ROUTE_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if is_route_module(str(p)))


def violations(source: str) -> list[str]:
    """What a route module does that belongs in a service or repository, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(n == "sqlalchemy" or n.startswith("sqlalchemy.") for n in names):
                found.append(f"line {node.lineno}: imports sqlalchemy")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in QUERY_CALLS:
                found.append(f"line {node.lineno}: calls .{func.attr}()")
            elif isinstance(func, ast.Attribute) and func.attr in SESSION_FACTORIES:
                found.append(f"line {node.lineno}: opens a session with .{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in SESSION_FACTORIES:
                found.append(f"line {node.lineno}: opens a session with {func.id}()")
            elif isinstance(func, ast.Call):
                found.append(f"line {node.lineno}: calls what a call returned (a session factory?)")
    return found


class TestRouteModulesStatically:
    def test_route_modules_hold_no_sql_and_open_no_transaction(self) -> None:
        """No route module imports SQLAlchemy, runs a query, opens a session or controls a transaction."""
        assert len(ROUTE_MODULES) >= 8
        found = {str(p.relative_to(PACKAGE)): violations(p.read_text()) for p in ROUTE_MODULES}
        assert {} == {k: v for k, v in found.items() if v}

    def test_the_check_catches_each_kind_of_violation(self) -> None:
        """The static check is not vacuous: each forbidden construct in a route is reported."""
        offending = (
            "import sqlalchemy as sa\n"
            "def a(session):\n    return session.scalar(sa.select(1))\n"
            "def b(request):\n    with request.app.state.sessionmaker.begin() as s:\n        pass\n"
            "def c(request):\n    with _sessions(request)() as s:\n        pass\n"
            "def d(sessions):\n    with sessions() as s:\n        s.commit()\n"
        )
        reasons = " / ".join(violations(offending))
        for expected in (
            "imports sqlalchemy",
            ".scalar()",
            ".begin()",
            "calls what a call returned",
            "sessions()",
            ".commit()",
        ):
            assert expected in reasons


@contextmanager
def sql_issued_by(engine: sa.Engine, is_culprit: Callable[[str], bool]) -> Iterator[list[str]]:
    """Record every statement or transaction whose innermost gbadz (or test) frame ``is_culprit``."""
    culprits: list[str] = []

    def innermost_own_frame() -> str | None:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if f"{PACKAGE}" in name or name == __file__:
                return f"{name}:{frame.f_lineno}" if is_culprit(name) else None
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def on_execute(*_: Any) -> None:
        where = innermost_own_frame()
        if where:
            culprits.append(f"SQL from {where}")

    def on_begin(*_: Any) -> None:
        where = innermost_own_frame()
        if where:
            culprits.append(f"transaction begun at {where}")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(Session, "after_begin", on_begin)
    try:
        yield culprits
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(Session, "after_begin", on_begin)


class TestRouteModulesAtRunTime:
    def test_every_route_for_every_role_issues_sql_only_below_the_routes(
        self, app: FastAPI, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """Calling every JSON route as every role, no SQL and no transaction starts in a route module."""
        tokens = [fetch_token(http, client) for client in clients.values()]
        paths = app.openapi()["paths"]
        with sql_issued_by(app.state.engine, is_route_module) as culprits:
            for path, item in paths.items():
                url = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
                for method in item:
                    kwargs: dict[str, Any] = {"json": {}} if method in {"post", "put"} else {}
                    for token in tokens:
                        http.request(method.upper(), url, headers=bearer(token), **kwargs)
        assert [] == culprits

    def test_the_listener_catches_a_route_that_queries(self, app: FastAPI, http: TestClient) -> None:
        """The run-time check is not vacuous: a route written here that queries directly is caught."""

        @app.get("/layer-test/offender")
        def offender(session: ReadSession) -> int:
            return int(session.scalar(sa.text("SELECT 1")) or 0)

        with sql_issued_by(app.state.engine, lambda name: name == __file__) as culprits:
            assert 200 == http.get("/layer-test/offender").status_code
        assert any("SQL from" in c and "test_layers.py" in c for c in culprits)
        assert any("transaction begun" in c for c in culprits)
