"""Headless Chromium for tests: a page that fails its test on any console error and
leaves a screenshot behind.

conftest lists this module in ``pytest_plugins``, so any test names the fixtures::

    def test_form(browser_page, browser_console, live_url):
        browser_page.goto(live_url + "/files/")
        browser_page.set_input_files("input[type=file]", files=[...])
        browser_page.click("button")
        browser_console.allow(r"Blocked script execution")   # an error this test expects

The fixtures, and all of their API:

- ``browser`` (module): a Playwright ``Browser`` driving Debian's Chromium
  (``/usr/bin/chromium``, or ``GAESERVICES_TEST_CHROMIUM``) headless, launched with
  the flags this project's machines need. Playwright's own browser download is
  not used. Outside CI a missing Chromium or Playwright skips the test with a
  message; under ``CI=true`` it fails (conftest's ``unavailable``).
- ``browser_page``: a fresh ``Page`` in a context of its own (no cookies shared
  between tests; downloads accepted, so a download is an event, not an error;
  10 s default timeout, the pages being local).
  At teardown a full-page screenshot of it -- and of any other page the test
  opened in its context -- is saved under :func:`artifacts_dir`, named after the
  test, pass or fail.
- ``browser_console``: a :class:`Console` that records every console message and
  uncaught page error of ``browser_page``'s context. At teardown any error not
  matched by a pattern given to :meth:`Console.allow` fails the test.

Screenshots go to ``test-artifacts/browser/`` at the repository's top (ignored by
git), or to ``$GAESERVICES_TEST_ARTIFACTS/browser/`` when that is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import unavailable

__all__ = ["browser", "browser_page", "browser_console", "Console", "artifacts_dir", "CHROMIUM_ARGS"]

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def artifacts_dir() -> Path:
    """Where screenshots and other test artifacts go (created)."""
    base = os.environ.get("GAESERVICES_TEST_ARTIFACTS") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")
    path = Path(base) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """Console messages and page errors of one browser context."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []  # (type, text); uncaught errors as ("pageerror", text)
        self._allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        """Let errors matching the regular expression ``pattern`` pass (an error the test expects)."""
        self._allowed.append(re.compile(pattern))

    @property
    def errors(self) -> list[str]:
        """The errors that will fail the test: console errors and uncaught exceptions not allowed."""
        return [text for kind, text in self.messages
                if kind in ("error", "pageerror") and not any(p.search(text) for p in self._allowed)]

    def _watch(self, page: Any) -> None:
        page.on("console", lambda message: self.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.messages.append(("pageerror", str(error))))


# One browser per test module, not per session: Playwright's synchronous API keeps an
# asyncio event loop running in the test thread while it is open, and code that refuses
# to run inside one (Django's ORM: SynchronousOnlyOperation) would fail in every module
# that happens to run after a browser test.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = os.environ.get("GAESERVICES_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        unavailable("Chromium", f"{executable} is missing; `make test` installs Debian's chromium when run as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright", "pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_console() -> Console:
    return Console()


@pytest.fixture
def browser_page(browser: Any, browser_console: Console, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(10_000)
    context.on("page", browser_console._watch)
    page = context.new_page()
    try:
        yield page
    finally:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        for number, opened in enumerate(context.pages):
            suffix = "" if number == 0 else f"-{number}"
            try:
                opened.screenshot(path=str(artifacts_dir() / f"{name}{suffix}.png"), full_page=True)
            except Exception:  # a page mid-download or already closed has nothing to show
                pass
        context.close()
    errors = browser_console.errors
    if errors:
        pytest.fail("the browser logged errors:\n" + "\n".join(errors), pytrace=False)
