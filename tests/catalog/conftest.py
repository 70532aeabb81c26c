"""Catalog fixtures. Search and get-by-id have two read paths (the in-process index and the
database engines); tests marked ``both_read_paths`` run on each, every other catalog test on
the default (the index)."""

import pytest
from fastapi import FastAPI

from gbadz.app import create_app
from gbadz.config import Settings
from tests.datasets import YAML, Party, as_yaml, contract, org_name, token

__all__ = ["YAML", "Party", "as_yaml", "contract", "org_name", "token"]
READ_PATHS = ("index", "database")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "read_path" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_read_paths"):
        metafunc.parametrize("read_path", READ_PATHS, indirect=True)


@pytest.fixture
def read_path(request: pytest.FixtureRequest) -> str:
    """The catalog's read path: ``index`` unless the test runs on both."""
    return str(getattr(request, "param", "index"))


@pytest.fixture
def app(settings: Settings, read_path: str) -> FastAPI:
    api = settings.api.model_copy(update={"catalog_search": read_path})
    return create_app(settings.model_copy(update={"api": api}))
