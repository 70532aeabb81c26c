"""Identity tests use the shared API fixtures (tests/api.py, registered in tests/conftest.py)."""

from tests.api import Client, basic, bearer, fetch_token, free_port, make_client

__all__ = ["Client", "basic", "bearer", "fetch_token", "free_port", "make_client"]
