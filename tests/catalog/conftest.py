"""Catalog tests use the shared dataset fixtures (tests/datasets.py, registered in tests/conftest.py)."""

from tests.datasets import YAML, Party, as_yaml, contract, org_name, token

__all__ = ["YAML", "Party", "as_yaml", "contract", "org_name", "token"]
