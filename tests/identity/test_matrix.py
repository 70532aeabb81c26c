"""The authorization matrix: every route in the OpenAPI document x every role (and no token)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from gbadz.identity.scopes import ROLE_SCOPES
from tests.api import Client, bearer, fetch_token

SHARING = "/delta-sharing/"  # authenticated by a grant's sharing token (tests/delivery/test_sharing.py)
# Authenticated by the signed ticket in the path (tests/delivery/test_at_rest.py): a forged one is
# missing (404) whoever asks, an OAuth token opens nothing.
TICKET = "/api/v1/delivery-files/"
# Routes anyone may call: operations probes and the OAuth endpoints (which authenticate clients themselves).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/introspect"),
    ("POST", "/oauth/revoke"),
    ("GET", "/oauth/jwks"),
    ("GET", "/.well-known/oauth-authorization-server"),
}


def _required_scopes(dependant: Any) -> tuple[str, ...] | None:
    for dep in dependant.dependencies:
        scopes = getattr(dep.call, "required_scopes", None)
        if scopes is not None:
            return tuple(scopes)
        found = _required_scopes(dep)
        if found is not None:
            return found
    return None


def _operations(app: FastAPI) -> list[tuple[str, str, tuple[str, ...] | None]]:
    routes = {(r.path, m): r for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    result = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            result.append((method.upper(), path, _required_scopes(routes[path, method.upper()].dependant)))
    return result


class TestAuthorizationMatrix:
    def test_every_route_declares_its_scopes(self, app: FastAPI) -> None:
        """A route that is neither public nor scope-protected fails the suite."""
        undeclared = [
            (m, p)
            for m, p, scopes in _operations(app)
            if scopes is None and (m, p) not in PUBLIC and not p.startswith((SHARING, TICKET))
        ]
        assert [] == undeclared
        assert len(_operations(app)) > len(PUBLIC)

    def test_every_route_for_every_role(
        self, app: FastAPI, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """No token: 401. A role lacking a scope: 403. A role holding them: neither 401 nor 403."""
        tokens = {role: fetch_token(http, client) for role, client in clients.items()}
        failures = []
        for method, path, scopes in _operations(app):
            if (method, path) in PUBLIC:
                continue
            if path.startswith(SHARING):
                # Delta Sharing recipients present a grant's sharing token; no OAuth token opens these.
                url = re.sub(r"\{[^}]+\}", "x", path)
                for headers in [{}, *(bearer(t) for t in tokens.values())]:
                    status = http.request(method, url, headers=headers).status_code
                    if status != 401:
                        failures.append((method, path, "oauth token" if headers else None, status))
                continue
            if path.startswith(TICKET):
                url = re.sub(r"\{[^}]+\}", "eyJnIjoiZm9yZ2VkIn0.AAAA", path)
                for headers in [{}, *(bearer(t) for t in tokens.values())]:
                    status = http.request(method, url, headers=headers).status_code
                    if status != 404:
                        failures.append((method, path, "oauth token" if headers else None, status))
                continue
            url = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
            kwargs: dict[str, Any] = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
            anonymous = http.request(method, url, **kwargs).status_code
            if anonymous != 401:
                failures.append((method, path, None, anonymous))
            for role, token in tokens.items():
                status = http.request(method, url, headers=bearer(token), **kwargs).status_code
                allowed = set(scopes or ()) <= ROLE_SCOPES[role]
                if (allowed and status in {401, 403}) or (not allowed and status != 403) or status >= 500:
                    failures.append((method, path, role, status))
        assert [] == failures, failures
