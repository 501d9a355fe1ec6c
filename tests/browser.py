"""A real Chromium driven by Playwright for the dashboard tests.

Debian's Chromium (`/usr/bin/chromium`), not a browser Playwright downloads. Without it
the browser tests skip with the reason, except under CI=true where its absence is a
failure (`.ci/run` installs it). Every page a test opens is watched: a console error, an
uncaught exception or a request to anywhere but the service fails the test at teardown.
Screenshots go to `test-artifacts/screenshots/`. conftest makes ``chromium`` a fixture
of every test module (one browser per module that uses it).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    expect,
    sync_playwright,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("PIXELMILL_TEST_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: without the background-networking flags Chromium tries to reach
# Google's hosts at every start, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
# How long a test waits for something the page should show.
SHOW_TIMEOUT_MS = 20_000


def chromium_or_skip() -> str:
    """The Chromium binary; a skip outside CI when it is missing, a failure under CI=true."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path:
        return path
    reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if IN_CI:
        pytest.fail(reason + " and CI=true requires it")
    pytest.skip(reason)


@dataclass
class Watch:
    """What a page did that a test did not ask for."""

    base_url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    # Console errors a test expects (e.g. Chromium's own line for a 401 it provoked).
    allowed: list[Callable[[str], bool]] = field(default_factory=list)

    def problems(self) -> list[str]:
        errors = [e for e in self.console_errors if not any(ok(e) for ok in self.allowed)]
        return (
            [f"console error: {e}" for e in errors]
            + [f"uncaught: {e}" for e in self.page_errors]
            + [f"request off the service: {u}" for u in self.foreign_requests]
        )


def watch_page(page: Page, watch: Watch) -> None:
    """Record console errors, uncaught errors and requests that leave the service."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watch.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def on_page_error(error: Error) -> None:
        watch.page_errors.append(str(error))

    def on_request(request: Request) -> None:
        url = request.url
        if not (url.startswith(watch.base_url + "/") or url.startswith(("data:", "blob:"))):
            watch.foreign_requests.append(url)

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("request", on_request)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """A headless Chromium for one test module (each test gets its own context).

    Per module, not per session: while Playwright's sync API runs, this thread has an
    event loop, so a later module's ``asyncio.run`` would fail in the same process.
    """
    executable = chromium_or_skip()
    expect.set_options(timeout=SHOW_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artefact; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def drop_files(page: Page, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files on the page as a user drags them from a file manager: dragenter,
    dragover and drop events carrying a DataTransfer of real File objects."""
    payload = [
        {"name": name, "type": kind, "b64": base64.b64encode(data).decode()}
        for name, data, kind in files
    ]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return transfer;
        }""",
        payload,
    )
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event("body", event, {"dataTransfer": transfer})
