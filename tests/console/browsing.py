"""The browser harness of the console tests: Debian's Chromium driven by Playwright, a loopback
server for an app, axe-core checks and screenshots (test-artifacts/console/<lane>/)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import uvicorn
from axe_playwright_python.sync_playwright import Axe
from fastapi import FastAPI
from playwright.sync_api import Page, expect

from tests.console.world import Person

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


class Shots(Protocol):
    """Anything with a base URL and a screenshot folder (each test file's site)."""

    base: str
    shots: Path


@contextmanager
def serving(app: FastAPI, port: int) -> Iterator[None]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def check(page: Page, site: Shots, name: str) -> None:
    """Screenshot the page and fail on any WCAG 2.1 A/AA violation axe-core finds."""
    page.screenshot(path=str(site.shots / f"{name}.png"), full_page=True)
    results = Axe().run(page, options=AXE_OPTIONS)
    problems = [
        f"{v['id']}: {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]
    assert [] == problems, f"{name}: {problems}"


def sign_in(page: Page, site: Shots, person: Person) -> None:
    page.goto(f"{site.base}/console/")
    expect(page.get_by_role("heading", name="Sign in to gbadz")).to_be_visible()
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Signed out")).to_be_visible()
