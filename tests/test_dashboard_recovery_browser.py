"""The dashboard when things go wrong or happen out of order, in a real Chromium.

Streams that are down, batches deleted under an open gallery, answers that come late,
double clicks, uploads dropped during another, keys the service cannot take. Each test
here failed before the page handled its case. The service has a `cover` preset limited
to WebP, so thumbnails and the choice hint have something to avoid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    FilePayload,
    Page,
    Response,
    Route,
    expect,
)

from api_helpers import slow_jpeg, small_jpeg, upload, wait_for_batch
from api_server import running_in_thread
from dashboard_pages import Dash, close_dash, open_dash
from pixelmill.api.app import create_app
from pixelmill.config import Settings

pytestmark = pytest.mark.slow

API_KEY = "recovery-test-key-0123456789"
PRESETS = {
    "square": {
        "width": 100,
        "height": 100,
        "fit": "cover",
        "gravity": "attention",
        "formats": ["webp"],
    },
    "thumbnail": [150, 150],
    "medium": [800, 800],
}
NOT_FOUND = json.dumps({"error": {"code": "not_found", "message": "no such batch"}})


def make_service(tmp_path_factory: pytest.TempPathFactory, **options: object) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("dashboard-recovery")
    presets = data_dir / "presets.json"
    presets.write_text(json.dumps(PRESETS))
    settings = Settings(data_dir=data_dir, workers=1, presets_file=presets, **options)  # type: ignore[arg-type]
    with running_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from make_service(tmp_path_factory)


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from make_service(tmp_path_factory, api_key=API_KEY)


def allow_failed_loads(dash: Dash) -> None:
    """Chromium's own console line for a request a test makes fail on purpose."""
    dash.watch.allowed.append(lambda text: "Failed to load resource" in text)


@pytest.fixture
def tab(chromium: Browser, service: str) -> Iterator[Dash]:
    opened = open_dash(chromium, service)
    yield opened
    close_dash(opened)


def make_batch(base_url: str, files: list[tuple[str, bytes, str]], wait: bool = True) -> str:
    with httpx.Client(base_url=base_url, timeout=60) as api:
        answer = api.post("/v1/batches", files=[upload(n, d, t) for n, d, t in files])
        assert answer.status_code == 202, answer.text
        batch_id: str = answer.json()["batch_id"]
        if wait:
            wait_for_batch(api, batch_id)
        return batch_id


def batch_of(base_url: str, batch_id: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{base_url}/v1/batches/{batch_id}").json()
    return answer


def delayed(seconds: float) -> object:
    def handler(route: Route) -> None:
        time.sleep(seconds)
        route.continue_()

    return handler


def notice_text(page: Page) -> str | None:
    notice = page.locator("#notice")
    return notice.inner_text() if notice.is_visible() else None


def test_a_key_outside_visible_ascii_is_refused_in_the_dialog(
    chromium: Browser, keyed_service: str
) -> None:
    """A Cyrillic key would make every request throw: the dialog says why and stays; one
    left in the tab's storage is dropped at load, so the dialog asks again."""
    tab = open_dash(chromium, keyed_service)
    page = tab.open()
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", "ключ-secret")
    page.click("#key-submit")
    expect(page.locator("#key-error")).to_contain_text("visible ASCII")
    expect(page.locator("#key-dialog")).to_be_visible()
    close_dash(tab)

    tab = open_dash(chromium, keyed_service)
    tab.page.add_init_script("sessionStorage.setItem('pixelmill.api_key', 'ключ-secret')")
    page = tab.open()
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", API_KEY)
    page.click("#key-submit")
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    assert page.evaluate("document.activeElement.id") == "file-input"
    close_dash(tab)


def test_a_late_answer_for_a_batch_left_does_not_take_the_url_back(tab: Dash) -> None:
    """Batch A's image is asked for, then B before A's answer: B stays, with no notice."""
    batch_a = make_batch(tab.base_url, [("a.jpg", small_jpeg(101), "image/jpeg")])
    batch_b = make_batch(tab.base_url, [("b.jpg", small_jpeg(102), "image/jpeg")])
    image_a = batch_of(tab.base_url, batch_a)["images"][0]["image_id"]  # type: ignore[index]
    page = tab.open()
    expect(page.locator(f'#batches [data-batch-id="{batch_b}"]')).to_be_visible()
    page.route(f"**/v1/batches/{batch_a}", delayed(1.5))  # type: ignore[arg-type]
    page.evaluate(f"location.hash = '#/batches/{batch_a}/images/{image_a}'")
    page.wait_for_timeout(100)
    page.evaluate(f"location.hash = '#/batches/{batch_b}'")
    page.wait_for_timeout(2500)
    assert page.evaluate("location.hash") == f"#/batches/{batch_b}"
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", batch_b)
    assert notice_text(page) is None


def test_an_image_link_waits_for_its_batch_even_after_another_answered(tab: Dash) -> None:
    """A's load finishing must not mark B's (still pending) as done: B's image opens."""
    batch_a = make_batch(tab.base_url, [("a.jpg", small_jpeg(111), "image/jpeg")])
    batch_b = make_batch(tab.base_url, [("b.jpg", small_jpeg(112), "image/jpeg")])
    image_b = batch_of(tab.base_url, batch_b)["images"][0]["image_id"]  # type: ignore[index]
    page = tab.open()
    expect(page.locator(f'#batches [data-batch-id="{batch_b}"]')).to_be_visible()
    page.route(f"**/v1/batches/{batch_a}", delayed(0.3))  # type: ignore[arg-type]
    page.route(f"**/v1/batches/{batch_b}", delayed(2.5))  # type: ignore[arg-type]
    page.evaluate(f"location.hash = '#/batches/{batch_a}'")
    page.wait_for_timeout(50)
    page.evaluate(f"location.hash = '#/batches/{batch_b}'")
    page.wait_for_timeout(1000)  # A has answered, B has not
    page.evaluate(f"location.hash = '#/batches/{batch_b}/images/{image_b}'")
    expect(page.locator("#detail")).to_be_visible()
    assert notice_text(page) is None


def test_double_clicking_older_moves_one_page(tab: Dash) -> None:
    for seed in range(21):
        make_batch(tab.base_url, [(f"p{seed}.jpg", small_jpeg(200 + seed), "image/jpeg")], False)
    page = tab.open()
    rows = page.locator("#batches [data-batch-id]")
    expect(rows).to_have_count(10)
    first = rows.first.get_attribute("data-batch-id")
    page.locator("#older").dblclick()
    expect(page.locator("#newer")).to_be_enabled()
    page.locator("#newer").click()
    expect(page.locator("#newer")).to_be_disabled()
    expect(rows.first).to_have_attribute("data-batch-id", first or "")
    # The disabled button hands the focus on instead of dropping it on <body>.
    assert page.evaluate("document.activeElement.id") == "older"


def test_the_gallery_converges_when_its_stream_was_down(tab: Dash) -> None:
    """No event stream at all: the listing sees the batch finished, and the gallery is
    read once more instead of staying "processing"."""
    allow_failed_loads(tab)
    page = tab.page
    page.route("**/events", lambda route: route.abort())
    files = [(f"s{i}.jpg", slow_jpeg(300 + i), "image/jpeg") for i in range(4)]
    batch_id = make_batch(tab.base_url, files, wait=False)
    tab.open(f"#/batches/{batch_id}")
    expect(page.locator("#gallery [data-image-id]")).to_have_count(4)
    with httpx.Client(base_url=tab.base_url, timeout=60) as api:
        wait_for_batch(api, batch_id)
    tiles = page.locator('#gallery [data-image-id][data-status="done"]')
    expect(tiles).to_have_count(4, timeout=25_000)
    expect(page.locator("#gallery-summary")).to_contain_text("completed")


def test_a_batch_gone_under_its_gallery_closes_it(tab: Dash) -> None:
    allow_failed_loads(tab)
    files = [(f"g{i}.jpg", slow_jpeg(400 + i), "image/jpeg") for i in range(8)]
    batch_id = make_batch(tab.base_url, files, wait=False)
    page = tab.page
    page.route(
        f"**/v1/batches/{batch_id}/events",
        lambda route: route.fulfill(status=404, content_type="application/json", body=NOT_FOUND),
    )
    tab.open(f"#/batches/{batch_id}")
    expect(page.locator("#notice")).to_contain_text(f"batch {batch_id[:8]} is gone")
    expect(page.locator("#gallery-panel")).to_be_hidden()
    assert page.evaluate("location.hash") == ""


def test_files_picked_during_an_upload_wait_their_turn(tab: Dash) -> None:
    page = tab.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    devtools = tab.context.new_cdp_session(page)
    devtools.send("Network.enable")
    slow_link = {"offline": False, "latency": 0, "downloadThroughput": -1}
    devtools.send("Network.emulateNetworkConditions", {**slow_link, "uploadThroughput": 3e5})
    uploads: list[int] = []

    def on_response(response: Response) -> None:
        if response.request.method == "POST" and response.url.endswith("/v1/batches"):
            uploads.append(response.status)

    page.on("response", on_response)
    first = FilePayload(name="q1.jpg", mimeType="image/jpeg", buffer=slow_jpeg(500))
    second = FilePayload(name="q2.jpg", mimeType="image/jpeg", buffer=small_jpeg(501))
    page.set_input_files("#file-input", [first])
    page.set_input_files("#file-input", [second])
    expect(page.locator("#upload-status")).to_contain_text("1 more upload waiting")
    assert notice_text(page) is None
    devtools.send("Network.emulateNetworkConditions", {**slow_link, "uploadThroughput": -1})
    page.wait_for_function("() => !document.body.classList.contains('uploading')")
    assert uploads == [202, 202]


def test_tiles_follow_the_batch_order_and_thumbnails_show_the_whole_image(
    tab: Dash, corpus: Path
) -> None:
    """The order of `images`, not of events; the thumbnail is of an `inside` preset (not
    the square cover crop), and the placeholder goes once it has loaded."""
    files = [
        ("first.jpg", small_jpeg(600), "image/jpeg"),
        ("second.txt", b"no pixels here\n", "text/plain"),
        ("third.jpg", small_jpeg(601), "image/jpeg"),
    ]
    batch_id = make_batch(tab.base_url, files)
    page = tab.open(f"#/batches/{batch_id}")
    names = page.locator("#gallery [data-image-id] .filename")
    expect(names).to_have_text(["first.jpg", "second.txt", "third.jpg"])
    tile = page.locator('#gallery [data-image-id][data-status="done"]').first
    thumb = tile.locator("img.thumb")
    expect(thumb).to_have_js_property("complete", True)
    assert (thumb.get_attribute("src") or "").endswith("/thumbnail.webp")
    expect(tile.locator("img.placeholder")).to_be_hidden()


def test_a_duplicate_says_so_once_and_whose_timings_it_shows(tab: Dash) -> None:
    data = small_jpeg(700)
    files = [("one.jpg", data, "image/jpeg"), ("again.jpg", data, "image/jpeg")]
    batch_id = make_batch(tab.base_url, files)
    page = tab.open(f"#/batches/{batch_id}")
    duplicate = page.locator('#gallery [data-image-id][data-status="duplicate"]')
    expect(duplicate.locator(".badge-duplicate")).to_be_visible()
    assert duplicate.inner_text().count("duplicate") == 1
    duplicate.click()
    timings = page.locator("#detail .detail-timings")
    expect(timings).to_contain_text("first render of these bytes")


def test_a_network_notice_reads_plainly_and_clears_when_the_service_is_back(tab: Dash) -> None:
    allow_failed_loads(tab)
    page = tab.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    page.route("**/v1/batches?*", lambda route: route.abort())
    expect(page.locator("#notice")).to_contain_text(
        "The service cannot be reached (network)", timeout=20_000
    )
    page.unroute("**/v1/batches?*")
    expect(page.locator("#notice")).to_be_hidden(timeout=20_000)


def test_a_preset_the_formats_leave_empty_is_pointed_out(tab: Dash) -> None:
    page = tab.open()
    square = page.locator("#choice-presets label", has_text="square")
    expect(square).to_have_text("square (100x100, cover, attention; webp only)")
    hint = page.locator("#choice-hint")
    expect(hint).to_be_hidden()
    page.uncheck("#choice-formats input[value=webp]")
    expect(hint).to_contain_text("square renders nothing")
