"""Catalog tests use the shared dataset fixtures (tests/datasets.py, registered in tests/conftest.py)."""

import pytest
from fastapi import FastAPI

from gbadz.app import create_app
from gbadz.config import Settings
from tests.datasets import YAML, Party, as_yaml, contract, org_name, token

__all__ = ["YAML", "Party", "as_yaml", "contract", "org_name", "token"]


@pytest.fixture(params=["index", "database"])
def app(settings: Settings, request: pytest.FixtureRequest) -> FastAPI:
    """Every catalog test runs on both read paths: the in-process index and the database engines."""
    api = settings.api.model_copy(update={"catalog_search": request.param})
    return create_app(settings.model_copy(update={"api": api}))
