"""The dashboard under test: a real service on loopback and a watched Chromium page on it.

Test modules take the fixtures by importing them: ``service_fixture``,
``keyed_service_fixture`` and ``dash_fixture`` (``chromium`` comes from conftest). A ``Dash``
fails its test at teardown on a console error, an uncaught exception or a request that
leaves the service (see ``browser.Watch``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Response

from api_helpers import upload, wait_for_batch
from api_server import running_in_thread
from browser import DESKTOP, SHOW_TIMEOUT_MS, Watch, watch_page
from pixelmill.api.app import create_app
from pixelmill.config import Settings

PHOTOS = [
    ("photos/flowers.jpeg", "image/jpeg"),
    ("photos/concert.jpg", "image/jpeg"),
    ("photos/kodim03.png", "image/png"),
]
API_KEY = "dashboard-test-key-0123456789"
# The photos are shared by the tests of a module: a later test may find them duplicates.
RENDERED = re.compile("^(done|duplicate)$")


@dataclass
class Dash:
    """A page of the dashboard on one service, and what it did."""

    base_url: str
    context: BrowserContext
    page: Page
    watch: Watch
    api_key: str | None = None

    def open(self, fragment: str = "") -> Page:
        self.page.goto(f"{self.base_url}/{fragment}")
        return self.page

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def row(self, batch_id: str) -> Locator:
        return self.page.locator(f'#batches [data-batch-id="{batch_id}"]')

    def tiles(self) -> Locator:
        return self.page.locator("#gallery [data-image-id]")


def open_dash(browser: Browser, base_url: str, viewport: dict[str, int] = DESKTOP) -> Dash:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(SHOW_TIMEOUT_MS)
    page = context.new_page()
    watch = Watch(base_url)
    watch_page(page, watch)
    return Dash(base_url, context, page, watch)


def close_dash(dash: Dash) -> None:
    problems = dash.watch.problems()
    dash.context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(name="service", scope="module")
def service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard-data"), workers=2)
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(name="keyed_service", scope="module")
def keyed_service_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("dashboard-keyed"), workers=1, api_key=API_KEY
    )
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(name="dash")
def dash_fixture(chromium: Browser, service: str) -> Iterator[Dash]:
    opened = open_dash(chromium, service)
    yield opened
    close_dash(opened)


def photo_files(corpus: Path) -> list[tuple[str, bytes, str]]:
    return [(Path(rel).name, (corpus / rel).read_bytes(), kind) for rel, kind in PHOTOS]


def is_batch_upload(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/v1/batches")


def make_batch(dash: Dash, files: list[tuple[str, bytes, str]]) -> dict[str, object]:
    """A batch made through the API (not the page), waited until it is finished."""
    with dash.api() as api:
        answer = api.post("/v1/batches", files=[upload(n, d, t) for n, d, t in files])
        assert answer.status_code == 202, answer.text
        status: dict[str, object] = wait_for_batch(api, answer.json()["batch_id"])
        return status


def wait_for_thumbnails(page: Page) -> None:
    """Until every shown thumbnail in the gallery has loaded (a screenshot then shows them)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('#gallery img.thumb:not([hidden])')]
                 .every((img) => img.complete && img.naturalWidth > 0)"""
    )


def requested_urls(page: Page) -> list[str]:
    entries = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    return list(entries)
