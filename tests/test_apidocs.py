"""The API's documentation: /docs from this process alone, the OAuth2 scheme, examples and the real 422."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from gbadz.apidocs import required_scopes
from gbadz.identity.scopes import SCOPES
from tests.api import Client, basic, bearer, fetch_token, make_client


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema`` whose #/components/... references resolve in ``document``."""
    return jsonschema.Draft202012Validator(schema | {"components": document["components"]})


class TestDocsPage:
    def test_docs_and_every_asset_come_from_this_server(self, live_server: tuple[str, FastAPI]) -> None:
        """/docs and each script, style and icon it names are served over loopback by the API itself."""
        base, _ = live_server
        page = httpx.get(f"{base}/docs", timeout=10)
        assert 200 == page.status_code
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (
            "unsafe-inline"
            not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
        )
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/docs/start.js"} <= set(
            assets
        )
        assert [] == [a for a in assets if not a.startswith("/")], "an asset from another origin"
        assert "<script>" not in page.text, "an inline script the CSP would block"
        for asset in assets:
            response = httpx.get(f"{base}{asset}", timeout=10)
            assert (200, True) == (response.status_code, len(response.content) > 0), asset
        start = httpx.get(f"{base}/docs/start.js", timeout=10).text
        assert '"/openapi.json"' in start
        assert "validatorUrl: null" in start  # Swagger UI would otherwise call an outside validator
        assert 200 == httpx.get(f"{base}/openapi.json", timeout=10).status_code


class TestSecurityScheme:
    def test_client_credentials_scheme_and_each_operations_scopes(self, app: FastAPI) -> None:
        """The OAuth2 client-credentials scheme lists the scopes; each operation asks for its route's."""
        document = app.openapi()
        scheme = document["components"]["securitySchemes"]["oauth2"]
        flow = scheme["flows"]["clientCredentials"]
        assert ("oauth2", "/oauth/token", SCOPES) == (scheme["type"], flow["tokenUrl"], flow["scopes"])
        routes = {
            (r.path_format, m.lower()): r for r in app.routes if isinstance(r, APIRoute) for m in r.methods
        }
        wrong = []
        protected = 0
        for path, item in document["paths"].items():
            for method, operation in item.items():
                scopes = required_scopes(routes[path, method].dependant)
                expected = None if scopes is None else [{"oauth2": list(scopes)}]
                protected += scopes is not None
                if expected != operation.get("security"):
                    wrong.append((method, path, operation.get("security")))
        assert [] == wrong
        assert protected > 30

    def test_a_token_from_the_documented_flow_opens_a_documented_operation(
        self, app: FastAPI, http: TestClient
    ) -> None:
        """What Authorize sends (basic auth, the chosen scopes) gets a token that Try it out can use."""
        client = make_client(app, "consumer")
        flow = app.openapi()["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
        response = http.post(
            flow["tokenUrl"],
            data={"grant_type": "client_credentials", "scope": "catalog:read"},
            headers=basic(client),
        )
        assert 200 == response.status_code, response.text
        me = http.get("/api/v1/me", headers=bearer(response.json()["access_token"]))
        assert 200 == me.status_code


class TestExamples:
    def test_every_operation_with_a_body_has_a_valid_example(self, app: FastAPI) -> None:
        """Each request body shows an example, and each JSON example is valid against its schema."""
        document = app.openapi()
        missing, invalid = [], []
        bodies = 0
        for path, item in document["paths"].items():
            for method, operation in item.items():
                content = operation.get("requestBody", {}).get("content")
                if not content:
                    continue
                bodies += 1
                examples = {ct: m["example"] for ct, m in content.items() if "example" in m}
                if not examples:
                    missing.append((method, path))
                for media_type, example in examples.items():
                    if media_type == "application/json":
                        errors = list(
                            _validator(document, content[media_type]["schema"]).iter_errors(example)
                        )
                        if errors:
                            invalid.append((method, path, errors[0].message))
        assert ([], []) == (missing, invalid)
        assert bodies > 20


class TestValidationErrorBody:
    def test_the_documented_422_is_the_real_one(
        self, app: FastAPI, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """A request that fails validation answers exactly the body the OpenAPI document describes;
        a route with a 422 of its own documents both bodies."""
        document = app.openapi()
        token = fetch_token(http, clients["admin"])
        path = "/api/v1/organizations"
        response = http.post(path, json={"name": "", "jurisdiction": 5}, headers=bearer(token))
        assert 422 == response.status_code
        documented = document["paths"][path]["post"]["responses"]["422"]["content"]["application/json"][
            "schema"
        ]
        assert {"$ref": "#/components/schemas/HTTPValidationError"} == documented
        _validator(document, documented).validate(response.json())
        assert {"error", "detail", "request_id"} == set(response.json())
        # FastAPI's own shape ({"detail": [...]} alone) is refused by the documented schema.
        with pytest.raises(jsonschema.ValidationError):
            _validator(document, documented).validate({"detail": response.json()["detail"]})
        # and so is a detail that echoes the submitted value back
        echoed = response.json() | {"detail": [response.json()["detail"][0] | {"input": 5}]}
        with pytest.raises(jsonschema.ValidationError):
            _validator(document, documented).validate(echoed)
        merged = document["paths"]["/api/v1/transfer-assessments"]["post"]["responses"]["422"]
        assert {"$ref": "#/components/schemas/HTTPValidationError"} in merged["content"]["application/json"][
            "schema"
        ]["anyOf"]


@pytest.mark.e2e
@pytest.mark.timeout(180)
class TestDocsInABrowser:
    def test_authorize_then_try_it_out(self, live_server: tuple[str, FastAPI], tmp_path: Any) -> None:
        """In Chromium, with nothing but loopback: /docs renders under its CSP, Authorize gets a token
        with client credentials, and Try it out calls an operation with it."""
        from playwright.sync_api import expect, sync_playwright

        from tests.conftest import REPO
        from tests.console.browsing import CHROMIUM, FLAGS

        base, app = live_server
        client = make_client(app, "consumer")
        problems: list[str] = []
        outside: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            try:
                page = browser.new_page()
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on(
                    "request", lambda r: None if r.url.startswith((base, "data:")) else outside.append(r.url)
                )
                page.goto(f"{base}/docs")
                page.get_by_role("button", name=re.compile("^Authorize")).first.click()
                dialog = page.locator(".modal-ux")
                dialog.locator("input#client_id_clientCredentials").fill(client.client_id)
                dialog.locator("input#client_secret_clientCredentials").fill(client.client_secret or "")
                dialog.get_by_text("catalog:read", exact=True).first.click()
                dialog.locator("button.modal-btn.authorize").click()  # labelled "Apply credentials"
                expect(dialog.locator("button.modal-btn", has_text="Logout")).to_be_visible()
                dialog.locator("button.btn-done").first.click()
                operation = page.locator("#operations-identity-me_api_v1_me_get")
                operation.locator(".opblock-summary").click()
                operation.get_by_role("button", name="Try it out").click()
                operation.get_by_role("button", name="Execute").click()
                live = operation.locator(".live-responses-table tr.response .response-col_status").first
                expect(live).to_have_text("200")
                shots = REPO / "test-artifacts" / "docs"
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "docs-try-it-out.png"), full_page=False)
            finally:
                browser.close()
        assert [] == outside
        assert [] == [p for p in problems if "Content Security Policy" in p or "Refused" in p]
