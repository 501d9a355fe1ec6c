"""The dashboard (`GET /`) in a real Chromium against a real service on loopback: what a
user does with it, step by step (the issue's list). Screenshots are kept in
`test-artifacts/screenshots/`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Route, expect

from api_helpers import slow_jpeg, small_jpeg, wait_for_batch
from browser import PHONE, drop_files, screenshot, watch_page
from dashboard_pages import (
    API_KEY,
    PHOTOS,
    RENDERED,
    Dash,
    close_dash,
    dash_fixture,
    is_batch_upload,
    keyed_service_fixture,
    make_batch,
    open_dash,
    photo_files,
    requested_urls,
    service_fixture,
    wait_for_thumbnails,
)

__all__ = ["dash_fixture", "keyed_service_fixture", "service_fixture"]

pytestmark = pytest.mark.slow


def test_dropped_photos_and_a_text_file_render_live_into_the_gallery(
    dash: Dash, corpus: Path
) -> None:
    """Drop three photos and a text file: the upload's progress shows, the batch's progress
    reaches 100 % without a reload (from its event stream, faster than the listing is
    re-read), and the gallery shows three thumbnails and one failure with its code."""
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    page.evaluate("window.sameDocument = true")
    files = [*photo_files(corpus), ("notes.txt", b"these are not pixels\n", "text/plain")]
    with page.expect_response(is_batch_upload) as answer:
        drop_files(page, files)
    batch_id = answer.value.json()["batch_id"]
    row = page.locator(f'#batches [data-batch-id="{batch_id}"]')
    expect(row).to_be_visible()

    with dash.api() as api:
        deadline = time.monotonic() + 120
        while api.get(f"/v1/batches/{batch_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the batch did not finish"
            time.sleep(0.05)
    # The listing is re-read every 5 s: within 2.5 s only the event stream can have told it.
    expect(row).to_have_attribute("data-status", "completed", timeout=2500)
    expect(row.locator("progress.batch-progress")).to_have_js_property("value", 1)
    assert page.evaluate("window.sameDocument") is True, "the page reloaded"
    assert any(f"/v1/batches/{batch_id}/events" in url for url in requested_urls(page))

    row.locator("button.batch-open").click()
    tiles = page.locator("#gallery [data-image-id]")
    expect(tiles).to_have_count(4)
    done = page.locator('#gallery [data-image-id][data-status="done"]')
    expect(done).to_have_count(3)
    for index in range(3):
        thumb = done.nth(index).locator("img.thumb")
        expect(thumb).to_have_js_property("complete", True)
        assert thumb.evaluate("img => img.naturalWidth") > 0
        placeholder = done.nth(index).locator("img.placeholder")
        assert (placeholder.get_attribute("src") or "").startswith("data:image/")
    failed = page.locator('#gallery [data-image-id][data-status="failed"]')
    expect(failed).to_have_count(1)
    expect(failed.locator(".error-code")).to_have_text("unsupported_format")
    expect(failed.locator(".filename")).to_have_text("notes.txt")
    wait_for_thumbnails(page)
    screenshot(page, "dashboard-gallery")


def test_an_image_detail_lists_every_rendition_and_opens_one(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, photo_files(corpus)[:1])
    image = status["images"][0]  # type: ignore[index]
    page = dash.open(f"#/batches/{status['batch_id']}")
    tile = page.locator(f'#gallery [data-image-id="{image["image_id"]}"]')
    expect(tile).to_have_attribute("data-status", RENDERED)
    opener = tile if tile.evaluate("e => e.tagName") == "BUTTON" else tile.locator("button")
    opener.first.click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    rows = detail.locator(".rendition")
    expect(rows).to_have_count(6)  # three presets x JPEG and WebP
    expect(detail.locator(".detail-source")).to_contain_text("1920")
    expect(detail.locator(".detail-timings")).to_contain_text("decode")
    for index in range(6):
        expect(rows.nth(index).locator(".rendition-bytes")).to_contain_text("KB")
    screenshot(page, "dashboard-detail")
    link = rows.first.locator("a.rendition-link")
    with dash.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url.startswith(f"{dash.base_url}/v1/images/{image['sha256']}/")
    assert tab.evaluate("document.contentType").startswith("image/")
    tab.close()


def test_sizes_in_the_detail_match_the_manifest(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, photo_files(corpus)[1:2])
    image = status["images"][0]  # type: ignore[index]
    with dash.api() as api:
        manifest = api.get(f"/v1/images/{image['sha256']}").json()
    page = dash.open(f"#/batches/{status['batch_id']}/images/{image['image_id']}")
    rows = page.locator("#detail .rendition")
    expect(rows).to_have_count(len(manifest["renditions"]))
    shown = {
        (
            rows.nth(i).locator(".rendition-format").inner_text().strip().lower(),
            rows.nth(i).locator(".rendition-size").inner_text().strip(),
        )
        for i in range(rows.count())
    }
    wanted = {(r["format"], f"{r['width']}x{r['height']}") for r in manifest["renditions"]}
    assert {(fmt, size.replace(" ", "")) for fmt, size in shown} == wanted


def test_cancel_stops_a_running_batch(dash: Dash, tmp_path: Path) -> None:
    page = dash.open()
    paths = []
    for seed in range(8):
        path = tmp_path / f"noise-{seed}.jpg"
        path.write_bytes(slow_jpeg(seed, (2400, 1600)))
        paths.append(str(path))
    with page.expect_response(is_batch_upload) as answer:
        page.locator("#file-input").set_input_files(paths)
    batch_id = answer.value.json()["batch_id"]
    row = page.locator(f'#batches [data-batch-id="{batch_id}"]')
    row.locator("button.batch-cancel").click()
    expect(row).to_have_attribute("data-status", "cancelled")
    expect(row.locator("button.batch-cancel")).to_have_count(0)
    with dash.api() as api:
        status = wait_for_batch(api, batch_id)
    assert status["status"] == "cancelled"
    assert status["cancelled"] >= 1
    expect(row.locator(".batch-counts")).to_contain_text("cancelled")


def test_a_reload_shows_the_same_state(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, [*photo_files(corpus)[:1], ("readme.txt", b"text\n", "text/plain")])
    batch_id = status["batch_id"]
    photo = next(i for i in status["images"] if i["renditions"])  # type: ignore[attr-defined]
    page = dash.open(f"#/batches/{batch_id}/images/{photo['image_id']}")
    expect(page.locator("#detail")).to_be_visible()

    def state() -> dict[str, object]:
        row = page.locator(f'#batches [data-batch-id="{batch_id}"]')
        return {
            "status": row.get_attribute("data-status"),
            "counts": row.locator(".batch-counts").inner_text(),
            "gallery": page.locator("#gallery").get_attribute("data-batch-id"),
            "tiles": page.eval_on_selector_all(
                "#gallery [data-image-id]",
                "tiles => tiles.map(t => [t.dataset.imageId, t.dataset.status])",
            ),
            "detail": page.locator("#detail").is_visible(),
            "rows": page.locator("#detail .rendition").count(),
        }

    expect(page.locator("#detail .rendition")).to_have_count(6)
    expect(page.locator("#gallery [data-image-id]")).to_have_count(2)
    before = state()
    page.reload()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail .rendition")).to_have_count(6)
    expect(page.locator("#gallery [data-image-id]")).to_have_count(2)
    assert state() == before
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(page).to_have_url(f"{dash.base_url}/#/batches/{batch_id}")
    # Opening an image is a step in the history: back closes it, forward opens it again.
    page.locator(f'#gallery [data-image-id="{photo["image_id"]}"]').click()
    expect(page.locator("#detail")).to_be_visible()
    page.go_back()
    expect(page.locator("#detail")).to_be_hidden()
    expect(page).to_have_url(f"{dash.base_url}/#/batches/{batch_id}")
    page.go_forward()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail .rendition")).to_have_count(6)


def test_only_the_api_key_opens_the_page_and_it_is_kept_for_the_tab(
    chromium: Browser, keyed_service: str, corpus: Path
) -> None:
    dash = open_dash(chromium, keyed_service)
    # Chromium logs a console line for the 401 the wrong key gets: that one is expected.
    dash.watch.allowed.append(lambda text: "401" in text)
    try:
        page = dash.open()
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        screenshot(page, "dashboard-key-prompt")
        page.locator("#key-input").fill("not-the-key")
        page.locator("#key-submit").click()
        expect(page.locator("#key-error")).to_be_visible()
        expect(dialog).to_be_visible()
        page.locator("#key-input").fill(API_KEY)
        page.locator("#key-submit").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)

        with page.expect_response(is_batch_upload) as answer:
            page.locator("#file-input").set_input_files(str(corpus / PHOTOS[1][0]))
        batch_id = answer.value.json()["batch_id"]
        row = page.locator(f'#batches [data-batch-id="{batch_id}"]')
        expect(row).to_have_attribute("data-status", "completed")
        row.locator("button.batch-open").click()
        thumb = page.locator("#gallery img.thumb").first
        expect(thumb).to_have_js_property("complete", True)
        assert thumb.evaluate("img => img.naturalWidth") > 0
        assert "sig=" in (thumb.get_attribute("src") or "")  # a signed URL, no header

        assert API_KEY not in page.evaluate("JSON.stringify(localStorage)")
        page.reload()
        expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
        expect(dialog).to_be_hidden()
        expect(row).to_have_attribute("data-status", "completed")

        other_tab = dash.context.new_page()
        watch_page(other_tab, dash.watch)
        other_tab.goto(keyed_service + "/")
        expect(other_tab.locator("#key-dialog")).to_be_visible()
        other_tab.close()
    finally:
        close_dash(dash)


def test_without_a_key_the_page_never_asks(dash: Dash) -> None:
    page = dash.open()
    expect(page.locator("#choice-formats input[name=format]")).to_have_count(4)
    assert page.locator("#key-dialog").is_hidden()
    assert page.evaluate("document.querySelector('meta[name=pixelmill-auth]').content") == "none"


def test_everything_is_reachable_from_the_keyboard(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, photo_files(corpus)[1:2])
    batch_id = status["batch_id"]
    page = dash.open()
    expect(dash.row(batch_id)).to_be_visible()  # type: ignore[attr-defined]

    def tab_to(selector: str, presses: int = 80) -> None:
        for _ in range(presses):
            page.keyboard.press("Tab")
            if page.evaluate("(s) => document.activeElement.matches(s)", selector):
                # The file input is hidden behind its label: the ring must be on what shows.
                outline = page.evaluate(
                    """() => {
                        const focused = document.activeElement;
                        const shown = focused.id === 'file-input'
                            ? document.querySelector('label[for=file-input]') : focused;
                        return getComputedStyle(shown).outlineStyle;
                    }"""
                )
                assert outline != "none", f"{selector} shows no focus"
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#file-input, label[for=file-input], button#choose-files")
    tab_to(f'[data-batch-id="{batch_id}"] button.batch-open')
    page.keyboard.press("Enter")
    expect(page.locator("#gallery")).to_have_attribute("data-batch-id", batch_id)
    tab_to("#gallery [data-image-id] button, #gallery button[data-image-id]")
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_visible()
    tab_to("#detail a.rendition-link")
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    assert page.evaluate("document.activeElement.closest('#gallery [data-image-id]') !== null"), (
        "focus did not return to the image"
    )


def test_readable_at_375_pixels(chromium: Browser, service: str, corpus: Path) -> None:
    dash = open_dash(chromium, service, PHONE)
    try:
        status = make_batch(dash, photo_files(corpus))
        page = dash.open(f"#/batches/{status['batch_id']}")
        expect(page.locator("#gallery [data-image-id]")).to_have_count(3)
        expect(dash.row(status["batch_id"])).to_be_visible()  # type: ignore[arg-type]
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways: {width} px wide"
        wait_for_thumbnails(page)
        screenshot(page, "dashboard-375px")
        page.locator("#gallery [data-image-id]").first.click()
        expect(page.locator("#detail")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        box = page.locator("#detail").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        screenshot(page, "dashboard-375px-detail")
    finally:
        close_dash(dash)


def test_batches_page_newest_first_with_older_and_newer(dash: Dash) -> None:
    with dash.api() as api:
        for seed in range(12):
            answer = api.post("/v1/images", files={"file": ("s.jpg", small_jpeg(700 + seed))})
            assert answer.status_code == 202
        first = api.get("/v1/batches", params={"limit": 10}).json()
        second = api.get("/v1/batches", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    page = dash.open()

    def shown() -> list[str]:
        return page.eval_on_selector_all(
            "#batches [data-batch-id]", "rows => rows.map(r => r.dataset.batchId)"
        )

    expect(page.locator("#batches [data-batch-id]")).to_have_count(10)
    assert shown() == [b["batch_id"] for b in first["batches"]]
    expect(page.locator("#newer")).to_be_disabled()
    page.locator("#older").click()
    expect(page.locator("#batches [data-batch-id]")).to_have_count(len(second["batches"]))
    assert shown() == [b["batch_id"] for b in second["batches"]]
    page.locator("#newer").click()
    expect(page.locator("#batches [data-batch-id]")).to_have_count(10)
    assert shown() == [b["batch_id"] for b in first["batches"]]


def test_chosen_presets_and_formats_are_what_renders(dash: Dash, corpus: Path) -> None:
    page = dash.open()
    presets = page.locator("#choice-presets input[name=preset]")
    expect(presets).to_have_count(3)
    with dash.api() as api:
        catalogue = api.get("/v1/presets").json()
    names = [p["name"] for p in catalogue["presets"]]
    assert presets.evaluate_all("boxes => boxes.map(b => b.value)") == names
    checked_formats = page.eval_on_selector_all(
        "#choice-formats input[name=format]:checked", "boxes => boxes.map(b => b.value)"
    )
    assert checked_formats == catalogue["default_formats"]

    for name in names:
        page.locator(f"#choice-presets input[value={name}]").set_checked(name == "thumbnail")
    for fmt in catalogue["formats"]:
        page.locator(f"#choice-formats input[value={fmt}]").set_checked(fmt == "webp")
    with page.expect_response(is_batch_upload) as answer:
        page.locator("#file-input").set_input_files(str(corpus / PHOTOS[0][0]))
    with dash.api() as api:
        status = wait_for_batch(api, answer.value.json()["batch_id"])
    renditions = status["images"][0]["renditions"]
    assert [(r["name"], r["format"]) for r in renditions] == [("thumbnail", "webp")]


def test_no_preset_checked_is_refused_in_the_page(dash: Dash, tmp_path: Path) -> None:
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    for box in page.locator("#choice-presets input[name=preset]").all():
        box.set_checked(False)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    path = tmp_path / "one.jpg"
    path.write_bytes(small_jpeg(5))
    page.locator("#file-input").set_input_files(str(path))
    expect(page.locator("#notice")).to_contain_text("preset")
    assert sent == []


def test_duplicates_are_marked_and_failures_open_with_their_error(dash: Dash, corpus: Path) -> None:
    make_batch(dash, photo_files(corpus)[:1])
    again = make_batch(
        dash, [*photo_files(corpus)[:1], ("bad.jpg", b"\xff\xd8\xff" + b"0" * 64, "image/jpeg")]
    )
    page = dash.open(f"#/batches/{again['batch_id']}")
    duplicate = page.locator('#gallery [data-image-id][data-status="duplicate"]')
    expect(duplicate).to_have_count(1)
    expect(duplicate.locator(".badge-duplicate")).to_be_visible()
    failed = page.locator('#gallery [data-image-id][data-status="failed"]')
    expect(failed.locator(".error-code")).to_have_text("corrupt_image")
    failed.click()
    expect(page.locator("#detail .detail-error")).to_contain_text("corrupt_image")


def test_the_placeholder_paints_before_the_thumbnail(dash: Dash, corpus: Path) -> None:
    """While the thumbnail is held back, the tile shows the decoded ThumbHash, whose mean
    colour is the thumbnail's (the decoder reads the hash right)."""
    status = make_batch(dash, photo_files(corpus)[:1])
    image = status["images"][0]  # type: ignore[index]
    held: list[Route] = []
    released = threading.Event()

    def hold(route: Route) -> None:
        if released.is_set():
            route.continue_()
        else:
            held.append(route)

    dash.page.route(f"**/v1/images/{image['sha256']}/**", hold)
    page = dash.open(f"#/batches/{status['batch_id']}")
    tile = page.locator(f'#gallery [data-image-id="{image["image_id"]}"]')
    placeholder = tile.locator("img.placeholder")
    expect(placeholder).to_be_visible()
    expect(placeholder).to_have_js_property("complete", True)
    assert tile.locator("img.thumb").evaluate("img => img.naturalWidth") == 0
    assert held, "the thumbnail was never asked for"
    released.set()
    for route in held:
        route.continue_()
    thumb = tile.locator("img.thumb")
    expect(thumb).to_have_js_property("complete", True)
    means = page.evaluate(
        """([a, b]) => [a, b].map((img) => {
            const canvas = document.createElement('canvas');
            canvas.width = 16; canvas.height = 16;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0, 16, 16);
            const pixels = context.getImageData(0, 0, 16, 16).data;
            const sum = [0, 0, 0];
            for (let i = 0; i < pixels.length; i += 4) {
                for (let c = 0; c < 3; c++) sum[c] += pixels[i + c];
            }
            return sum.map((s) => s / 256);
        })""",
        [placeholder.element_handle(), thumb.element_handle()],
    )
    distance = sum((a - b) ** 2 for a, b in zip(*means, strict=True)) ** 0.5
    assert distance < 25, f"placeholder mean {means[0]} is far from the thumbnail's {means[1]}"


def test_the_upload_progress_bar_moves_while_the_files_go_up(dash: Dash, corpus: Path) -> None:
    """On a link slowed to 1 MB/s (Chromium's own throttling), a 1.2 MB upload shows its
    progress between 0 and 100 %, then the bar goes away."""
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    devtools = dash.context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1e6},
    )
    page.evaluate(
        """() => {
            window.seenProgress = [];
            const bar = document.getElementById('upload-progress');
            setInterval(() => { if (!bar.hidden) window.seenProgress.push(bar.value); }, 20);
        }"""
    )
    photos = ["photos/gain-map.jpg"]
    files = [(Path(p).name, (corpus / p).read_bytes(), "image/jpeg") for p in photos]
    with page.expect_response(is_batch_upload, timeout=60_000):
        drop_files(page, files)
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    expect(page.locator("#upload-progress")).to_be_hidden()
    seen = page.evaluate("window.seenProgress")
    between = sorted({round(v, 2) for v in seen if 0 < v < 1})
    assert len(between) >= 3, f"the bar showed {between} while uploading"
    assert between == sorted(between)
    expect(page.locator("#upload-status")).to_contain_text("Uploaded 1 file")
