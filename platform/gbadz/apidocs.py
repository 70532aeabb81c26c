"""The API's own documentation: an OpenAPI document that says how to authenticate and what a
422 looks like, and Swagger UI at ``/docs`` served from this process, with no internet (issue #19).

The Swagger UI assets come from the ``fastapi-offline`` package (Swagger UI 5, which renders
OpenAPI 3.1; the ``swagger-ui-bundle`` package ships 4.x, which does not). Only its static files
are used: the page and its start-up script are ours, so the page runs under a CSP that allows
scripts and styles from this origin only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from gbadz.identity.scopes import SCOPES

SCHEME = "oauth2"
TOKEN_URL = "/oauth/token"  # noqa: S105 - a path, not a password
ASSETS_URL = "/docs/static"
# The console's policy, plus fetches to this origin (Swagger UI loads /openapi.json and calls the
# API): Swagger UI sets its styles through the DOM, which a style-src of 'self' allows.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def assets_folder() -> Path:
    """Where the packaged Swagger UI files are (swagger-ui-bundle.js, swagger-ui.css, favicon.png)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package (Swagger UI's files) is not installed")
    return Path(spec.origin).parent / "static"


# The real 422 body (gbadz.app's validation handler), replacing FastAPI's {"detail": [...]}.
VALIDATION_ERROR_SCHEMAS: dict[str, Any] = {
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "description": "The body of a 422: which inputs failed and why; the submitted values are never echoed.",
        "type": "object",
        "properties": {
            "error": {"type": "string", "const": "RequestValidationError", "title": "Error"},
            "detail": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ValidationError"},
                "title": "Detail",
            },
            "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Request Id"},
        },
        "required": ["error", "detail", "request_id"],
        "additionalProperties": False,
        "example": {
            "error": "RequestValidationError",
            "detail": [{"loc": ["body", "purpose"], "msg": "Field required", "type": "missing"}],
            "request_id": "7f3c2a9e4b1d4c0e9a8b6d5e4f3a2b1c",
        },
    },
    "ValidationError": {
        "title": "ValidationError",
        "description": "One failed input: where it is (loc), what is wrong (msg) and the kind of failure (type).",
        "type": "object",
        "properties": {
            "loc": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "title": "Location",
            },
            "msg": {"type": "string", "title": "Message"},
            "type": {"type": "string", "title": "Error Type"},
        },
        "required": ["loc", "msg", "type"],
        "additionalProperties": False,
    },
}

#: The contract file the examples show: a real one, so "Try it out" registers (the linter accepts it).
EXAMPLE_CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "hk-logistics-deliveries.yaml"


def _contract_example() -> str:
    try:
        return EXAMPLE_CONTRACT.read_text(encoding="utf-8")
    except OSError:  # installed without the repository's contracts/ folder
        return "# A data contract (Open Data Contract Standard v3 + gbadz): see contracts/*.yaml\n"


_CONTRACT_EXAMPLE = _contract_example()

# One example per operation that takes a body: JSON bodies by their schema's name, the rest by
# operation. tests/test_apidocs.py checks every operation with a body has one and that each
# JSON example is valid against its schema.
SCHEMA_EXAMPLES: dict[str, Any] = {
    "OrganizationCreate": {
        "name": "Shenzhen Harbour Hospital Group",
        "jurisdiction": "CN-SZ",
        "registration_no": "91440300MA5XXXXXX",
        "gba_registered": True,
        "ciio": False,
    },
    "ClientCreate": {
        "org_id": "0b6f8a52-5d0e-4c7e-9d3b-2a1f6c8e7d10",
        "role": "consumer",
        "auth_method": "client_secret",
    },
    "Reason": {"reason": "superseded by hk-logistics-deliveries-v2"},
    "ClassificationReview": {
        "approve": True,
        "contract_sha256": "3f2a6c1e9b8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
        "note": "Every column classified; overlay applied",
    },
    "AssessmentAsk": {
        "dataset_id": "sz-hospital-outpatient-visits",
        "purpose": "trade_transport_academic_mfg_marketing",
        "kind": "copy",
    },
    "RequestAsk": {
        "purpose": "trade_transport_academic_mfg_marketing",
        "purpose_text": "Route planning model for cold-chain deliveries",
        "duration_days": 90,
        "onward_transfer": "none",
        "kind": "copy",
    },
    "Review": {"reason": "Purpose and columns match the licence"},
    "Rejection": {"reason": "The purpose does not need the patients' names"},
    "DeletionAttestation": {"statement": "All copies deleted from our storage and backups on 2026-12-02"},
    "ObligationMet": {"reference": "PIPIA-2026-014", "date": "2026-11-30"},
    "EvidenceCreate": {
        "exporter_org_id": "0b6f8a52-5d0e-4c7e-9d3b-2a1f6c8e7d10",
        "recipient_org_id": "5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
        "kind": "GBA_SC",
        "reference": "GBA-SC-440300-2026-0012",
        "filing_date": "2026-03-01",
        "effective_date": "2026-03-01",
        "purposes": ["trade_transport_academic_mfg_marketing"],
    },
    "PersonCreate": {
        "org_id": "5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
        "username": "mei.chan",
        "display_name": "Mei Chan",
        "role": "consumer",
        "password": "correct horse battery staple",
    },
    "AnalysisAsk": {"sql": "SELECT district, COUNT(*) AS visits FROM data GROUP BY district", "epsilon": 0.5},
}
OPERATION_EXAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("post", "/oauth/token"): (
        "application/x-www-form-urlencoded",
        {"grant_type": "client_credentials", "scope": "catalog:read access:request"},
    ),
    ("post", "/oauth/introspect"): (
        "application/x-www-form-urlencoded",
        {"token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGllbnQifQ.c2ln", "token_type_hint": "access_token"},
    ),
    ("post", "/oauth/revoke"): (
        "application/x-www-form-urlencoded",
        {"token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjbGllbnQifQ.c2ln", "token_type_hint": "access_token"},
    ),
    ("post", "/api/v1/datasets"): ("application/yaml", _CONTRACT_EXAMPLE),
    ("put", "/api/v1/datasets/{dataset_id}"): ("application/yaml", _CONTRACT_EXAMPLE),
    ("post", "/api/v1/datasets/{dataset_id}/uploads"): (
        "text/csv",
        "delivery_id,delivered_on,district\nD-0001,2026-11-30,Kwun Tong\nD-0002,2026-11-30,Sha Tin\n",
    ),
    # An optional body (its schema is "Withdrawal or null", so not found by name).
    ("post", "/api/v1/access-requests/{request_id}/withdraw"): (
        "application/json",
        {"reason": "The project was cancelled"},
    ),
    ("post", "/api/v1/grants/{grant_id}/redecide"): (
        "application/json",
        {"reason": "The filed standard contract now covers this purpose"},
    ),
    ("put", "/api/v1/mechanisms/{evidence_id}/document"): (
        "application/pdf",
        "%PDF-1.7 (the filed document)",
    ),
}


def required_scopes(dependant: Any) -> tuple[str, ...] | None:
    """The scopes a route's ``require_scopes`` dependency asks for; None when it has none."""
    for dep in dependant.dependencies:
        scopes = getattr(dep.call, "required_scopes", None)
        if scopes is not None:
            return tuple(scopes)
        found = required_scopes(dep)
        if found is not None:
            return found
    return None


def _merge_business_422s(paths: dict[str, Any]) -> None:
    """An operation whose route declares a 422 of its own (e.g. ColumnNotAnalysable) still answers
    payload validation failures with 422: document both bodies."""
    validation = {"$ref": "#/components/schemas/HTTPValidationError"}
    for item in paths.values():
        for operation in item.values():
            media = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json")
            if media is None or media.get("schema") == validation:
                continue
            media["schema"] = {"anyOf": [validation, media["schema"]]}
            described = operation["responses"]["422"].get("description", "")
            operation["responses"]["422"]["description"] = " | ".join(
                part for part in (described, "RequestValidationError") if part
            )


def _add_examples(paths: dict[str, Any]) -> None:
    for path, item in paths.items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            chosen = OPERATION_EXAMPLES.get((method, path))
            if chosen is not None and chosen[0] in content:
                content[chosen[0]].setdefault("example", chosen[1])
                continue
            for media in content.values():
                name = media.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if name in SCHEMA_EXAMPLES:
                    media.setdefault("example", SCHEMA_EXAMPLES[name])


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the OAuth2 client-credentials scheme on every operation that
    requires scopes, the real 422 body, and an example for every request body."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=(
            "Authenticate with OAuth 2.0 client credentials: **Authorize** takes a client's id and "
            "secret (from `gbadz clients create`) and the scopes to ask for; **Try it out** then sends "
            "the token. Every error is `{error, detail, request_id}`; a 422 lists the failed inputs."
        ),
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "oauth2",
        "description": "OAuth 2.0 client credentials (RFC 6749 §4.4); the token is an RFC 9068 JWT.",
        "flows": {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": dict(SCOPES)}},
    }
    paths = document.get("paths", {})
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        scopes = required_scopes(route.dependant)
        if scopes is None:
            continue
        for method in route.methods:
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                operation["security"] = [{SCHEME: list(scopes)}]
    schemas = components.setdefault("schemas", {})
    if "HTTPValidationError" in schemas:
        schemas.update(VALIDATION_ERROR_SCHEMAS)
        _merge_business_422s(paths)
    _add_examples(paths)
    app.openapi_schema = document
    return document


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} — API docs</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""

_START = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: %s,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""


def install(app: FastAPI) -> None:
    """Serve /docs and its assets from this process, and document the API as above."""
    import json

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    page = _PAGE.format(title=app.title, assets=ASSETS_URL)
    start = _START % json.dumps(app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=DOCS_HEADERS)

    @app.get("/docs/start.js", include_in_schema=False)
    async def docs_start() -> Response:
        return Response(start, media_type="text/javascript", headers=DOCS_HEADERS)

    app.mount(ASSETS_URL, StaticFiles(directory=assets_folder()), name="docs-static")
