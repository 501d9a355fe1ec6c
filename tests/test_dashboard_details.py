"""The dashboard's details, each checked so that a page that gets it wrong fails: the
progress moves from the event stream alone, a cut stream resumes with Last-Event-ID, the
elapsed time ticks on its own, tiles and the detail show exactly the manifest, focus
returns where it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Route, expect

from api_helpers import slow_jpeg
from dashboard_pages import (
    Dash,
    dash_fixture,
    is_batch_upload,
    make_batch,
    photo_files,
    service_fixture,
)

__all__ = ["dash_fixture", "service_fixture"]

pytestmark = pytest.mark.slow

# Records every value each row's bar and elapsed text take, 50 times a second.
RECORDER = """
window.seen = {rows: {}, elapsed: {}};
setInterval(() => {
  for (const row of document.querySelectorAll('#batches [data-batch-id]')) {
    const id = row.dataset.batchId;
    (window.seen.rows[id] ||= []).push(row.querySelector('progress').value);
    (window.seen.elapsed[id] ||= []).push(row.querySelector('.batch-elapsed').textContent);
  }
}, 20);
"""

# Wraps fetch: records each event-stream request's Last-Event-ID, and cuts the first
# stream of a batch after its first event that carries an id.
CUT_FIRST_STREAM = """
window.eventCalls = [];
const realFetch = window.fetch;
window.fetch = async (input, init) => {
  const url = String(input);
  if (!url.includes('/events')) return realFetch(input, init);
  const headers = new Headers(init && init.headers);
  const before = window.eventCalls.filter(([u]) => u === url).length;
  window.eventCalls.push([url, headers.get('Last-Event-ID')]);
  const response = await realFetch(input, init);
  if (before > 0) return response;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const body = new ReadableStream({
    async pull(controller) {
      const {value, done} = await reader.read();
      if (done) return controller.close();
      controller.enqueue(value);
      text += decoder.decode(value, {stream: true});
      if (/\\nid: \\d+\\n[\\s\\S]*\\n\\n/.test(text)) { reader.cancel(); controller.close(); }
    },
  });
  return new Response(body, {status: response.status, headers: response.headers});
};
"""


def noise_files(folder: Path, seeds: range, size: tuple[int, int] = (2000, 1400)) -> list[str]:
    """Distinct noise JPEGs: slow enough to render that a batch of them runs a while."""
    paths = []
    for seed in seeds:
        path = folder / f"noise-{seed}.jpg"
        path.write_bytes(slow_jpeg(seed, size))
        paths.append(str(path))
    return paths


def freeze_listing(dash: Dash) -> None:
    """Every listing request answered with the body its first request got: only the
    event stream (or the page's own clock) can move a row from then on."""
    frozen: dict[str, bytes] = {}

    def stale(route: Route) -> None:
        key = route.request.url.split("?", 1)[-1]
        if key not in frozen:
            frozen[key] = route.fetch().body()
        route.fulfill(status=200, content_type="application/json", body=frozen[key])

    dash.page.route("**/v1/batches?limit=*", stale)


def test_progress_events_move_the_bar_while_the_listing_is_stale(
    dash: Dash, tmp_path: Path
) -> None:
    dash.context.add_init_script(RECORDER)
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    freeze_listing(dash)
    with page.expect_response(is_batch_upload) as answer:
        page.locator("#file-input").set_input_files(noise_files(tmp_path, range(100, 106)))
    batch_id = answer.value.json()["batch_id"]
    row = dash.row(batch_id)
    expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
    bars, elapsed = page.evaluate(
        "(id) => [window.seen.rows[id], window.seen.elapsed[id]]", batch_id
    )
    assert any(0 < value < 1 for value in bars), "progress events never moved the bar"
    running = {text for text, value in zip(elapsed, bars, strict=True) if value < 1}
    assert len(running) >= 2, f"the elapsed time did not tick: {sorted(running)}"


def test_a_cut_stream_is_reopened_with_last_event_id(dash: Dash, tmp_path: Path) -> None:
    dash.context.add_init_script(CUT_FIRST_STREAM)
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    with page.expect_response(is_batch_upload) as answer:
        page.locator("#file-input").set_input_files(noise_files(tmp_path, range(200, 204)))
    batch_id = answer.value.json()["batch_id"]
    url = f"/v1/batches/{batch_id}/events"
    page.wait_for_function(
        "(u) => window.eventCalls.filter(([x]) => x.endsWith(u)).length >= 2", arg=url
    )
    calls = [last for u, last in page.evaluate("window.eventCalls") if u.endswith(url)]
    assert calls[0] is None and calls[1] is not None and int(calls[1]) > 0, calls
    # Nothing is missed: the page ends with every image final, as the service has it.
    expect(dash.row(batch_id)).to_have_attribute("data-status", "completed", timeout=120_000)
    dash.row(batch_id).locator("button.batch-open").click()
    expect(page.locator('#gallery [data-image-id][data-status="done"]')).to_have_count(4)


def test_the_elapsed_time_ticks_without_any_news(dash: Dash, tmp_path: Path) -> None:
    """No stream (204) and a frozen listing: only the page's own clock moves the text."""
    page = dash.open()
    expect(page.locator("#choice-presets input[name=preset]")).to_have_count(3)
    page.route("**/v1/batches/*/events", lambda route: route.fulfill(status=204))
    freeze_listing(dash)
    with page.expect_response(is_batch_upload) as answer:
        page.locator("#file-input").set_input_files(noise_files(tmp_path, range(300, 301)))
    elapsed = dash.row(answer.value.json()["batch_id"]).locator(".batch-elapsed")
    expect(elapsed).to_contain_text("Elapsed")
    first = elapsed.inner_text()
    expect(elapsed).not_to_have_text(first, timeout=3000)


def test_tiles_and_the_detail_show_exactly_the_manifest(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, [*photo_files(corpus)[:1], ("x.txt", b"x", "text/plain")])
    images: list[dict] = status["images"]  # type: ignore[assignment]
    photo = next(i for i in images if i["renditions"])
    bad = next(i for i in images if i["error"])
    page = dash.open(f"#/batches/{status['batch_id']}")
    tile = page.locator(f'#gallery [data-image-id="{photo["image_id"]}"]')
    webp = [r for r in photo["renditions"] if r["format"] == "webp"]
    smallest = min(webp, key=lambda r: r["width"] * r["height"])
    expect(tile.locator("img.thumb")).to_have_attribute("src", smallest["path"])
    with dash.api() as api:
        manifest = api.get(f"/v1/images/{photo['sha256']}").json()
    source = manifest["source"]
    ratio = tile.locator("img.placeholder").evaluate("i => i.naturalWidth / i.naturalHeight")
    assert abs(ratio - source["width"] / source["height"]) < 0.2, ratio
    failed = page.locator(f'#gallery [data-image-id="{bad["image_id"]}"]')
    expect(failed.locator(".error-message")).to_have_text(bad["error"]["message"])

    tile.click()
    detail = page.locator("#detail")
    expect(detail.locator(".detail-source")).to_contain_text(
        f"{source['width']} x {source['height']}"
    )
    for stage in ("read", "decode", "resize", "encode", "total"):
        expect(detail.locator(".detail-timings")).to_contain_text(stage)
    rows = detail.locator(".rendition")
    expect(rows).to_have_count(len(manifest["renditions"]))
    for index, rendition in enumerate(manifest["renditions"]):
        row = rows.nth(index)
        expect(row.locator(".rendition-bytes")).to_have_text(f"{rendition['bytes'] / 1024:.1f} KB")
        expect(row.locator("a.rendition-link")).to_have_attribute("href", rendition["path"])
        expect(row.locator(".rendition-format")).to_have_text(rendition["format"])
        expect(row.locator(".rendition-size")).to_have_text(
            f"{rendition['width']}x{rendition['height']}"
        )


def test_focus_returns_to_the_tile_of_a_detail_opened_by_its_url(dash: Dash, corpus: Path) -> None:
    status = make_batch(dash, photo_files(corpus)[:1])
    image = status["images"][0]  # type: ignore[index]
    page = dash.open(f"#/batches/{status['batch_id']}/images/{image['image_id']}")
    expect(page.locator("#detail .rendition").first).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    page.wait_for_function(
        "(id) => document.activeElement && document.activeElement.dataset.imageId === id",
        arg=image["image_id"],
    )
