"""The dashboard when things go wrong or happen out of order, in a real Chromium.

Streams that are down, batches deleted under an open gallery, answers that come late,
double clicks, uploads dropped during another, keys the service cannot take. Each test
here failed before the page handled its case. The service has a `cover` preset limited
to WebP, so thumbnails and the choice hint have something to avoid.
"""

from __future__ import annotations

import json
import re
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


UNAVAILABLE = json.dumps({"error": {"code": "unavailable", "message": "too many connections"}})


def refuse_with_503(route: Route) -> None:
    route.fulfill(status=503, content_type="application/json", body=UNAVAILABLE)


def jpeg_payload(name: str, seed: int) -> FilePayload:
    return FilePayload(name=name, mimeType="image/jpeg", buffer=small_jpeg(seed))


def reread_listing(page: Page) -> None:
    """A listing read that succeeds, now (not at the next poll)."""
    with page.expect_response(lambda r: "/v1/batches?" in r.url and r.ok):
        page.evaluate("pm.batches.refresh()")


def focused(page: Page) -> str:
    """The focused element: its id, else its aria-label, else its tag."""
    return str(
        page.evaluate(
            """() => { const e = document.activeElement;
                       return e.id || e.getAttribute('aria-label') || e.tagName; }"""
        )
    )


class HeldUploads:
    """POST /v1/batches held until released; `refuse` names the (1-based) ones refused."""

    def __init__(self, page: Page, refuse: tuple[int, ...] = ()) -> None:
        self.page = page
        self.refuse = refuse
        self.held: list[Route] = []
        self.count = 0
        page.route("**/v1/batches", self.handle)

    def handle(self, route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        self.count += 1
        if self.count in self.refuse:
            refuse_with_503(route)
        else:
            self.held.append(route)

    def wait_for(self, count: int) -> None:
        for _ in range(100):
            if self.count >= count:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError(f"{self.count} uploads sent, not {count}")

    def release(self) -> str:
        """Let the oldest held upload through; the new batch's id."""
        with self.page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith("/v1/batches")
        ) as answer:
            self.held.pop(0).continue_()
        batch_id: str = answer.value.json()["batch_id"]
        return batch_id


def test_the_catalogue_is_read_again_until_it_loads(tab: Dash) -> None:
    """Its notice outlives a listing that succeeds (it is not about the listing), and goes
    when the catalogue itself loads, read again without a reload."""
    allow_failed_loads(tab)
    page = tab.page
    page.route("**/v1/presets", refuse_with_503)
    tab.open()
    expect(page.locator("#notice")).to_contain_text("unavailable: too many connections")
    reread_listing(page)
    expect(page.locator("#notice")).to_contain_text("unavailable: too many connections")
    page.set_input_files("#file-input", [jpeg_payload("early.jpg", 800)])
    expect(page.locator("#notice")).to_contain_text("catalogue is not loaded yet")
    page.unroute("**/v1/presets")
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3, timeout=20_000)
    expect(page.locator("#notice")).to_be_hidden()


def test_an_accepted_upload_leaves_a_user_who_moved_on_where_they_are(tab: Dash) -> None:
    """The gallery of the new batch opens only if the user is still where they dropped the
    files; otherwise the status line offers it."""
    other = make_batch(tab.base_url, [("other.jpg", small_jpeg(810), "image/jpeg")])
    page = tab.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    uploads = HeldUploads(page)
    offer = page.locator("#upload-status button")

    # Another gallery opened meanwhile: it stays, with the focus.
    page.set_input_files("#file-input", [jpeg_payload("moved.jpg", 811)])
    uploads.wait_for(1)
    tab.row(other).locator(".batch-open").click()
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", other)
    first = uploads.release()
    expect(page.locator("#upload-status")).to_contain_text(f"Uploaded 1 file: batch {first[:8]}")
    expect(offer).to_have_text("open")
    assert page.evaluate("location.hash") == f"#/batches/{other}"
    assert focused(page) == "gallery-title"
    offer.click()
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", first)
    assert page.evaluate("location.hash") == f"#/batches/{first}"

    # Working on the choice meanwhile: the focus stays on the checkbox.
    page.set_input_files("#file-input", [jpeg_payload("busy.jpg", 812)])
    uploads.wait_for(2)
    page.focus("#choice-formats input[name=format]")
    second = uploads.release()
    expect(page.locator("#upload-status")).to_contain_text(f"batch {second[:8]} (open)")
    assert page.evaluate("location.hash") == f"#/batches/{first}"
    assert page.evaluate("document.activeElement.name") == "format"

    # Nothing touched: the new gallery opens and takes the focus.
    page.evaluate("document.activeElement.blur()")
    page.set_input_files("#file-input", [jpeg_payload("idle.jpg", 813)])
    uploads.wait_for(3)
    third = uploads.release()
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", third)
    expect(page.locator("#gallery-title")).to_be_focused()
    assert second != third


def test_a_queue_whose_last_upload_fails_reports_all_and_the_failure_stays(tab: Dash) -> None:
    """2 of 3 accepted, the last refused 503: the notice says so and names the files; the
    last accepted batch opens; neither a listing read nor the next upload takes it down."""
    allow_failed_loads(tab)
    page = tab.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    uploads = HeldUploads(page, refuse=(3,))
    page.set_input_files("#file-input", [jpeg_payload("a.jpg", 820)])
    uploads.wait_for(1)
    page.set_input_files("#file-input", [jpeg_payload("b.jpg", 821)])
    page.set_input_files(
        "#file-input",
        [jpeg_payload("c.jpg", 822), jpeg_payload("d.jpg", 823), jpeg_payload("e.jpg", 824)],
    )
    uploads.release()
    uploads.wait_for(2)
    second = uploads.release()
    said = (
        "2 of 3 uploads accepted; the upload of 3 files (c.jpg, d.jpg…) failed: "
        "unavailable: too many connections"
    )
    expect(page.locator("#notice")).to_contain_text(said)
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", second)

    reread_listing(page)
    expect(page.locator("#notice")).to_contain_text(said)
    page.set_input_files("#file-input", [jpeg_payload("f.jpg", 825)])
    uploads.wait_for(4)
    uploads.release()
    expect(page.locator("#upload-status")).to_contain_text("Uploaded 1 file")
    expect(page.locator("#notice")).to_contain_text(said)
    page.click("#notice-dismiss")
    expect(page.locator("#notice")).to_be_hidden()


def test_dismiss_gives_the_focus_back_without_scrolling(chromium: Browser, service: str) -> None:
    """Back to what had it before the notice, at 375 px: the sticky bar covers nothing
    focused either (scroll-padding follows its height)."""
    make_batch(service, [("row.jpg", small_jpeg(830), "image/jpeg")])
    tab = open_dash(chromium, service, {"width": 375, "height": 600})
    page = tab.open()
    open_button = page.locator("#batches .batch-open").last
    expect(open_button).to_be_visible()
    page.evaluate("pm.ui.notice('Something to read first.')")
    open_button.focus()
    open_button.evaluate("button => button.scrollIntoView({ block: 'center' })")
    scrolled = page.evaluate("scrollY")
    assert scrolled > 0
    label = open_button.get_attribute("aria-label")
    page.focus("#notice-dismiss")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_be_hidden()
    assert focused(page) == label
    assert page.evaluate("scrollY") > scrolled / 2  # not back at the top
    expect(open_button).to_be_in_viewport()

    page.evaluate("pm.ui.notice('More to read.'); scrollTo(0, document.body.scrollHeight)")
    page.wait_for_timeout(100)  # the bar's height is observed
    page.focus("#choice-presets input[name=preset]")
    bar = page.locator(".status-bar").bounding_box()
    box = page.locator("#choice-presets input[name=preset]").first.bounding_box()
    assert bar and box and box["y"] >= bar["y"] + bar["height"], (bar, box)
    close_dash(tab)


def test_a_gallery_that_fails_to_load_leaves_no_history_and_the_focus_alone(tab: Dash) -> None:
    allow_failed_loads(tab)
    batch_id = make_batch(tab.base_url, [("gone.jpg", small_jpeg(840), "image/jpeg")])
    page = tab.page
    page.route(f"**/v1/batches/{batch_id}", refuse_with_503)
    tab.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    length = page.evaluate("history.length")
    page.focus("#choice-presets input[name=preset]")
    page.evaluate(f"location.hash = '#/batches/{batch_id}'")
    expect(page.locator("#notice")).to_contain_text("unavailable")
    expect(page.locator("#gallery-panel")).to_be_hidden()
    assert page.evaluate("location.hash") == ""
    assert page.evaluate("history.length") == length + 1  # the link followed, no more
    assert page.evaluate("document.activeElement.name") == "preset"

    # Opened from its row (the focus went to the gallery): the focus comes back to the row.
    tab.row(batch_id).locator(".batch-open").click()
    expect(page.locator("#gallery-panel")).to_be_hidden()
    expect(tab.row(batch_id).locator(".batch-open")).to_be_focused()
    assert page.evaluate("history.length") == length + 2


def test_a_cancelled_image_says_so_once_and_tiles_name_their_error(tab: Dash) -> None:
    files = [("notes.txt", b"no pixels\n", "text/plain")]
    files += [(f"c{i}.jpg", slow_jpeg(850 + i), "image/jpeg") for i in range(4)]
    batch_id = make_batch(tab.base_url, files, wait=False)
    with httpx.Client(base_url=tab.base_url, timeout=60) as api:
        deadline = time.monotonic() + 30
        while api.get(f"/v1/batches/{batch_id}").json()["images"][0]["status"] != "failed":
            assert time.monotonic() < deadline, "the text file was not refused"
            time.sleep(0.05)
        api.post(f"/v1/batches/{batch_id}/cancel")
        wait_for_batch(api, batch_id)
    page = tab.open(f"#/batches/{batch_id}")
    failed = page.locator('#gallery [data-status="failed"]')
    expect(failed).to_have_attribute(
        "aria-label", re.compile("notes.txt: failed, unsupported_format, .+")
    )
    cancelled = page.locator('#gallery [data-status="cancelled"]').last
    expect(cancelled).to_have_attribute(
        "aria-label", re.compile(r"c\d.jpg: cancelled, the batch was cancelled before")
    )
    cancelled.click()
    detail = page.locator("#detail-body")
    expect(detail).to_contain_text("the batch was cancelled before this image started")
    assert re.findall(r"\bcancelled\b", detail.inner_text()) == ["cancelled", "cancelled"]
    expect(detail.locator(".error-code")).to_have_count(0)
