"""Property-based fuzzing of the catalog routes from the app's own OpenAPI document (schemathesis).

Every generated request (valid and invalid parameters, bodies and headers) must get a
declared status code, a declared content type and a body matching its declared schema;
never a 5xx.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api import bearer, fetch_token, make_client
from tests.catalog.conftest import YAML, as_yaml, contract, org_name

pytestmark = pytest.mark.e2e

EXAMPLES = 30  # per operation and database lane
KNOWN = "fuzz-known-dataset"


@pytest.fixture
def provider_headers(app: FastAPI, http: TestClient) -> dict[str, str]:
    """A provider (it holds catalog:read and datasets:publish) with one dataset of its own."""
    client = make_client(app, "provider", "HK")
    headers = bearer(fetch_token(http, client))
    doc = contract(KNOWN, org_name(app, client.org_id))
    http.post("/api/v1/datasets", content=as_yaml(doc), headers=headers | YAML)
    return headers


def test_catalog_routes_never_fail_or_break_their_schema(
    app: FastAPI, provider_headers: dict[str, str], http: TestClient
) -> None:
    """Fuzzed catalog requests never get a 5xx and always match their declared status, type and schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex=r"^/api/v1/datasets")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # every catalog route, read and write

    for operation in operations:

        @given(case=operation.as_strategy(), known=st.booleans())
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any, known: bool) -> None:
            if known and "dataset_id" in (case.path_parameters or {}):
                case.path_parameters["dataset_id"] = KNOWN  # half the calls reach a real dataset
            case.call_and_validate(
                headers=provider_headers,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
            )

        fuzz()
