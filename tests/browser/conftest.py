"""Playwright against Debian's Chromium and pytest-django's live server.

Without a Chromium these tests skip, except in CI (CI=true), where a missing browser fails the
run: .ci/run installs one. Every page's console is watched: a CSP violation or a script error
fails the test that caused it. Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# between browser steps are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread until stopped, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        message = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the browser tests.")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


class Session:
    """A browser page bound to the live server, with its console watched."""

    def __init__(self, context, base_url: str):
        self.context = context
        self.base_url = base_url
        self.page = context.new_page()
        self.errors: list[str] = []
        # Console messages a test provokes on purpose (say, a refused POST's 403).
        self.expected: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message) -> None:
        if message.type == "error" and not any(e in message.text for e in self.expected):
            self.errors.append(message.text)

    def go(self, path: str):
        response = self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def sign_in_as(self, user) -> None:
        """Reuse a session made by Django's test client instead of typing a password."""
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        self.context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": self.base_url}]
        )

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def canvas_ink(self, selector: str) -> int:
        """How many pixels of the canvas are painted (0 for a blank one)."""
        return self.page.eval_on_selector(
            selector,
            """c => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                return n;
            }""",
        )


@pytest.fixture
def open_session(browser, live_server):
    """Factory: open_session(width=1280, dark=False) -> Session; all closed after the test."""
    sessions: list[Session] = []

    def factory(*, width: int = 1280, height: int = 900, dark: bool = False) -> Session:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme="dark" if dark else "light",
            device_scale_factor=1,
        )
        session = Session(context, live_server.url)
        sessions.append(session)
        return session

    yield factory
    errors = [e for s in sessions for e in s.errors]
    for s in sessions:
        s.context.close()
    assert not errors, f"browser console errors: {errors}"


@pytest.fixture
def session(open_session):
    return open_session()
