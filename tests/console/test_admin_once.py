"""A new client's one-time secret cookie: the page that shows it deletes it, and a copy replayed
in the same session after its lifetime shows nothing (the issue time is inside the sealed data)."""

from __future__ import annotations

import re
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.console import admin as admin_pages
from tests.console.test_admin_console import _csrf, add_admin, admin  # noqa: F401 - the fixture
from tests.console.world import World


def test_a_replayed_secret_cookie_expires_inside_its_seal(
    admin: TestClient,  # noqa: F811 - the fixture imported above
    app: FastAPI,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = admin.get("/console/admin/clients")
    made = admin.post(
        "/console/admin/clients",
        data={"csrf": _csrf(page.text), "org_id": world.startup_org, "role": "consumer", "name": "job"},
    )
    assert 303 == made.status_code, made.text
    location = made.headers["location"]
    once = admin.cookies.get("__Host-gbadz_once")
    assert once
    shown = admin.get(location)
    secret = re.search(r'id="client_secret" name="client_secret" value="([^"]+)"', shown.text)
    assert secret is not None, shown.text
    deleted = shown.headers.get("set-cookie", "")
    assert "__Host-gbadz_once=" in deleted
    assert "Max-Age=0" in deleted or "expires=" in deleted.lower()
    assert admin.cookies.get("__Host-gbadz_once") is None
    # The same cookie replayed in the same session, once older than the lifetime: nothing shown.
    monkeypatch.setattr(admin_pages, "ONCE_TTL_S", 1)
    time.sleep(2.1)
    admin.cookies.set("__Host-gbadz_once", once, domain="console.test")
    replayed = admin.get(location)
    assert 200 == replayed.status_code
    assert secret.group(1) not in replayed.text
    assert 'id="secret-gone"' in replayed.text
