"""Screenshots of the console on the demo's data, for the README (docs/img/).

Run `make demo` first (it leaves the embedded services running and creates the demo
people), then `.venv/bin/python infra/console-screenshots.py`. It serves the API on a free
loopback port, signs in with Debian's Chromium as the demo's compliance officer and Hong Kong
startup, and writes docs/img/console-compliance.png and docs/img/console-catalog.png.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from gbadz.config import apply_environment

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/console/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"demo-{username}-pass")
    page.get_by_label("Password").press("Enter")
    page.get_by_role("button", name="Sign out").wait_for()


def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = apply_environment({"GBADZ_OAUTH__ISSUER": base, "GBADZ_LOG_LEVEL": "WARNING"})
    gbadz = Path(sys.executable).parent / "gbadz"
    server = subprocess.Popen(
        [str(gbadz), "serve", "--port", str(port)], cwd=REPO, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the API did not become ready: run `make demo` first")
            time.sleep(0.2)
        out = REPO / "docs" / "img"
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            sign_in(page, base, "officer")
            page.goto(f"{base}/console/compliance")
            page.screenshot(path=str(out / "console-compliance.png"), full_page=True)
            page.get_by_role("button", name="Sign out").click()
            sign_in(page, base, "hk-startup")
            page.goto(f"{base}/console/catalog")
            page.screenshot(path=str(out / "console-catalog.png"), full_page=True)
            browser.close()
        print(f"wrote {out / 'console-compliance.png'} and {out / 'console-catalog.png'}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
