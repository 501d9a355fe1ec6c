"""The HTTP service end to end: a real uvicorn on 127.0.0.1, real engine, store and images."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from api_helpers import (
    assert_error,
    check_invariant,
    read_events,
    slow_jpeg,
    small_jpeg,
    small_png,
    spool_files,
    temp_files,
    truncated_jpeg,
    upload,
    wait_for_batch,
    wait_for_empty_spool,
)
from api_server import running_in_thread
from images import format_by_magic
from pixelmill.api.app import create_app
from pixelmill.api.webhooks import sign
from pixelmill.config import Settings
from webhook_receiver import webhook_receiver

API_KEY = "test-key"
WEBHOOK_SECRET = "hook-secret"
MAX_UPLOAD = 4 * 1024 * 1024
MAX_BODY = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    settings = Settings(
        data_dir=data_dir,
        store="sqlite",
        workers=2,
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        max_upload_bytes=MAX_UPLOAD,
        max_batch_bytes=MAX_BODY,
        webhook_allow_private=True,  # the webhook receiver listens on 127.0.0.1
    )
    with running_in_thread(create_app(settings, webhook_backoff_s=0.05)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        yield client


def post_batch(client: httpx.Client, files: list[Any], **data: str) -> dict[str, Any]:
    response = client.post("/v1/batches", files=files, data=data)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    # With an API key they are signed URLs (docs/api.md): the path, then ?expires=&sig=.
    assert body["status_url"].split("?")[0] == f"/v1/batches/{body['batch_id']}"
    assert body["events_url"].split("?")[0] == f"/v1/batches/{body['batch_id']}/events"
    return body


def check_renditions(client: httpx.Client, image: dict[str, Any]) -> None:
    """Every listed rendition is served, is the format it claims, and has its size."""
    assert len(image["renditions"]) == 6  # 3 presets x 2 formats
    for rendition in image["renditions"]:
        assert rendition["path"].startswith(f"/v1/images/{image['sha256']}/")
        response = client.get(rendition["path"])
        assert response.status_code == 200
        assert format_by_magic(response.content) == rendition["format"]
        with Image.open(io.BytesIO(response.content)) as decoded:
            assert decoded.size == (rendition["width"], rendition["height"])


def test_a_mixed_batch_finishes_with_every_image_accounted_for(
    client: httpx.Client, data_dir: Path
) -> None:
    """Images render, a copy is a duplicate, damaged and non-image files fail alone."""
    first, second = small_jpeg(1), small_png(2)
    files = [
        upload("one.jpg", first),
        upload("two.png", second, "image/png"),
        upload("broken.jpg", truncated_jpeg()),
        upload("readme.jpg", b"This is a text file, whatever its name says.\n" * 20),
        upload("again.jpg", first),
        upload("mislabelled.gif", small_jpeg(3), "image/gif"),
    ]
    created = post_batch(client, files)
    assert created["total"] == 6
    status = wait_for_batch(client, created["batch_id"])
    assert status["status"] == "completed" and status["finished_at"] is not None
    assert (status["completed"], status["duplicates"], status["failed"]) == (4, 1, 2)
    assert status["progress"] == 1.0
    images = {image["filename"]: image for image in status["images"]}
    assert [image["filename"] for image in status["images"]] == [f[1][0] for f in files]
    assert images["one.jpg"]["sha256"] == hashlib.sha256(first).hexdigest()
    assert {images["one.jpg"]["status"], images["again.jpg"]["status"]} == {"done", "duplicate"}
    assert images["broken.jpg"]["error"]["code"] == "corrupt_image"
    assert images["readme.jpg"]["error"]["code"] == "unsupported_format"
    assert images["readme.jpg"]["detected_type"] is None
    assert images["mislabelled.gif"]["declared_type"] == "image/gif"
    assert images["mislabelled.gif"]["detected_type"] == "image/jpeg"
    for name in ("one.jpg", "two.png", "mislabelled.gif"):
        check_renditions(client, images[name])
    assert set(images["one.jpg"]["timings_ms"]) >= {"read", "decode", "resize", "encode"}
    wait_for_empty_spool(data_dir)
    assert temp_files(data_dir) == []


def test_events_stream_image_and_progress_events_until_done(client: httpx.Client) -> None:
    created = post_batch(client, [upload(f"{i}.jpg", small_jpeg(100 + i)) for i in range(5)])
    events = read_events(client, created["batch_id"])
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("done") == 1
    assert names.count("image") == 5
    assert "progress" in names
    for name, data in events:
        if name in ("progress", "done"):
            check_invariant(data)
    finished = [data["pending"] for name, data in events if name == "progress"]
    assert finished == sorted(finished, reverse=True)  # pending never goes back up
    assert events[-1][1]["status"] == "completed" and events[-1][1]["completed"] == 5
    # A stream opened after the end replays the images and ends at once.
    late = read_events(client, created["batch_id"])
    assert [name for name, _ in late].count("image") == 5 and late[-1][0] == "done"


def test_the_same_bytes_in_two_batches_at_once_render_once(client: httpx.Client) -> None:
    """De-duplication across concurrent batches: one done per content, the rest duplicates."""
    shared = [small_jpeg(200 + i, (320, 240)) for i in range(4)]
    results: list[dict[str, Any]] = []

    def send() -> None:
        results.append(post_batch(client, [upload(f"{i}.jpg", d) for i, d in enumerate(shared)]))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [wait_for_batch(client, r["batch_id"]) for r in results]
    for data in shared:
        sha = hashlib.sha256(data).hexdigest()
        outcomes = sorted(i["status"] for s in statuses for i in s["images"] if i["sha256"] == sha)
        assert outcomes == ["done", "duplicate"]
    # A third batch, later: everything is a duplicate pointing at the same renditions.
    later = wait_for_batch(client, post_batch(client, [upload("x.jpg", shared[0])])["batch_id"])
    assert later["duplicates"] == 1
    assert later["images"][0]["renditions"] == next(
        i["renditions"]
        for s in statuses
        for i in s["images"]
        if i["status"] == "done" and i["sha256"] == later["images"][0]["sha256"]
    )


def test_cancel_stops_a_batch_and_no_pending_image_starts_afterwards(
    client: httpx.Client, data_dir: Path
) -> None:
    created = post_batch(client, [upload(f"{i}.jpg", slow_jpeg(300 + i)) for i in range(10)])
    batch_id = created["batch_id"]
    wait_for_started = 0
    while wait_for_started < 400:  # until one image is under way
        status = client.get(f"/v1/batches/{batch_id}").json()
        if any(i["status"] != "pending" for i in status["images"]):
            break
        wait_for_started += 1
        threading.Event().wait(0.02)
    response = client.post(f"/v1/batches/{batch_id}/cancel")
    assert response.status_code == 202
    at_cancel = response.json()
    check_invariant(at_cancel)
    assert at_cancel["status"] == "cancelled"
    assert at_cancel["cancelled"] >= 1
    assert all(i["status"] != "pending" for i in at_cancel["images"])
    again = client.post(f"/v1/batches/{batch_id}/cancel")  # idempotent
    assert again.status_code == 202 and again.json()["status"] == "cancelled"
    final = wait_for_batch(client, batch_id)
    assert final["status"] == "cancelled" and final["cancelled"] >= at_cancel["cancelled"]
    before = {i["image_id"]: i["status"] for i in at_cancel["images"]}
    for image in final["images"]:
        if before[image["image_id"]] == "cancelled":
            assert image["status"] == "cancelled"
            # Never started after the cancel: no worker ever wrote anything for these bytes.
            sha = image["sha256"]
            assert not (data_dir / "renditions" / sha[:2] / sha).exists()
        if image["status"] == "cancelled":
            assert image["renditions"] == []
    wait_for_empty_spool(data_dir)


def test_one_image_with_wait_answers_its_record(client: httpx.Client) -> None:
    data = small_jpeg(400)
    response = client.post("/v1/images?wait=true", files={"file": ("w.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "done" and record["sha256"] == hashlib.sha256(data).hexdigest()
    check_renditions(client, record)
    batch = client.get(f"/v1/batches/{record['batch_id']}").json()
    assert batch["images"][0]["image_id"] == record["image_id"]


def test_one_image_may_come_as_a_single_files_part(client: httpx.Client) -> None:
    """``POST /v1/images`` takes its one image as ``file`` or as a single ``files`` part."""
    data = small_jpeg(403)
    response = client.post("/v1/images?wait=true", files={"files": ("f.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    two = [("files", ("a.jpg", data, "image/jpeg")), ("file", ("b.jpg", data, "image/jpeg"))]
    assert_error(client.post("/v1/images", files=two), 400, "invalid_request")


def test_one_image_without_a_result_in_time_answers_202(client: httpx.Client) -> None:
    for seed, query in ((401, ""), (402, "?wait=true&timeout=0.001")):
        response = client.post(
            f"/v1/images{query}", files={"file": ("s.jpg", slow_jpeg(seed), "image/jpeg")}
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"batch_id", "image_id", "status_url"}
        wait_for_batch(client, body["batch_id"])
    failed = client.post(
        "/v1/images?wait=true", files={"file": ("t.jpg", b"plain text", "text/plain")}
    )
    assert failed.status_code == 200 and failed.json()["error"]["code"] == "unsupported_format"


def test_renditions_and_manifests_are_served_with_types_etags_and_caching(
    client: httpx.Client,
) -> None:
    record = client.post(
        "/v1/images?wait=true", files={"file": ("m.png", small_png(500), "image/png")}
    ).json()
    sha = record["sha256"]
    manifest = client.get(f"/v1/images/{sha}")
    assert manifest.status_code == 200 and manifest.headers["content-type"] == "application/json"
    body = manifest.json()
    assert body["sha256"] == sha and body["source"]["format"] == "png"
    assert [r["path"] for r in body["renditions"]] == [r["path"] for r in record["renditions"]]
    assert (
        client.get(
            f"/v1/images/{sha}", headers={"If-None-Match": manifest.headers["etag"]}
        ).status_code
        == 304
    )
    for path, media_type in ((f"/v1/images/{sha}/large.webp", "image/webp"),
                             (f"/v1/images/{sha}/thumbnail.jpg", "image/jpeg")):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = response.headers["etag"]
        cached = client.get(path, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""
    assert_error(client.get(f"/v1/images/{sha}/huge.webp"), 404, "not_found")
    assert_error(client.get(f"/v1/images/{sha}/..%2Fmanifest.json"), 404, "not_found")
    assert_error(client.get(f"/v1/images/{'0' * 64}"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/v1/batches", {}, 400, "invalid_request"),
        ("POST", "/v1/batches", {"data": {"callback_url": "http://127.0.0.1/x"}}, 400,
         "invalid_request"),
        ("POST", "/v1/batches", {"files": {"file": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}},
         400, "invalid_request"),
        ("POST", "/v1/batches", {"files": {"files": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")},
                                 "data": {"callback_url": "ftp://127.0.0.1/x"}}, 400,
         "invalid_request"),
        ("POST", "/v1/batches", {"files": {"files": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")},
                                 "data": {"callback_url": "http://[::1"}}, 400,
         "invalid_request"),
        ("POST", "/v1/batches", {"json": {"files": []}}, 400, "invalid_request"),
        ("POST", "/v1/images", {"files": [("file", ("a", b"GIF89a", "image/gif"))] * 2}, 400,
         "invalid_request"),
        ("POST", "/v1/images?wait=maybe", {"files": {"file": ("a", b"x", "image/gif")}}, 400,
         "invalid_request"),
        ("POST", "/v1/images?timeout=-1", {"files": {"file": ("a", b"x", "image/gif")}}, 400,
         "invalid_request"),
        ("GET", "/v1/batches/" + "a" * 32, {}, 404, "not_found"),
        ("GET", "/v1/batches/not-an-id", {}, 404, "not_found"),
        ("GET", "/v1/batches/..%2F..%2Fetc", {}, 404, "not_found"),
        ("GET", "/v1/batches/" + "a" * 32 + "/events", {}, 404, "not_found"),
        ("POST", "/v1/batches/" + "a" * 32 + "/cancel", {}, 404, "not_found"),
        ("GET", "/v1/images/not-a-sha", {}, 404, "not_found"),
        ("GET", "/v1/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/v1/batches", {}, 405, "invalid_request"),
    ],
)  # fmt: skip
def test_bad_requests_are_4xx_in_the_error_shape(
    client: httpx.Client,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert_error(client.request(method, path, **kwargs), status, code)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/batches", ["GET", "POST"]),
        ("DELETE", "/v1/batches", ["GET", "POST"]),
        ("PUT", "/v1/batches/" + "0" * 32, ["GET", "DELETE"]),
        ("GET", "/v1/batches/" + "0" * 32 + "/cancel", ["POST"]),
        ("PUT", "/v1/images/" + "0" * 64, ["GET", "HEAD", "DELETE"]),
        ("POST", "/v1/images/" + "0" * 64 + "/large.webp", ["GET", "HEAD"]),
        ("PATCH", "/v1/presets", ["GET"]),
    ],
)  # fmt: skip
def test_a_405_allows_every_method_of_the_path(
    client: httpx.Client, method: str, path: str, allowed: list[str]
) -> None:
    """RFC 9110: Allow lists what the path takes, over all of its routes, not one route's."""
    response = client.request(method, path)
    assert_error(response, 405, "invalid_request")
    assert [name.strip() for name in response.headers["allow"].split(",")] == allowed


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/" + "f" * 5000,
        "/v1/images/" + "0" * 64 + "/" + "x" * 5000,
        "/v1/images/" + "0" * 64 + "/" + "x" * 5000 + ".webp",
    ],
)
def test_a_404_repeats_at_most_80_characters_of_an_id(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert_error(response, 404, "not_found")
    message = response.json()["error"]["message"]
    assert len(message) < 200 and "…" in message, message


def test_limits_fail_one_file_or_refuse_the_whole_body(
    client: httpx.Client, data_dir: Path
) -> None:
    """A file over the per-file limit fails alone; a body over the batch limit is a 413."""
    too_big = b"\xff\xd8\xff\xe0" + b"\0" * (MAX_UPLOAD + 1)
    created = post_batch(client, [upload("big.jpg", too_big), upload("ok.jpg", small_jpeg(600))])
    status = wait_for_batch(client, created["batch_id"])
    assert [i["status"] for i in status["images"]] == ["failed", "done"]
    assert status["images"][0]["error"]["code"] == "file_too_large"
    chunk = b"\xff\xd8\xff\xe0" + b"\0" * (MAX_UPLOAD - 10)
    files = [upload(f"{i}.jpg", chunk) for i in range(MAX_BODY // MAX_UPLOAD + 1)]
    assert_error(client.post("/v1/batches", files=files), 413, "file_too_large")

    def body() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        boundary = b"b0undary"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
        yield b'filename="x.jpg"\r\n\r\n'
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\0" * 65536

    streamed = client.post(
        "/v1/batches",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert_error(streamed, 413, "file_too_large")
    assert spool_files(data_dir) == []


def test_every_v1_route_needs_the_api_key(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as anonymous:
        routes = [("GET", "/v1/batches/" + "a" * 32), ("POST", "/v1/batches"),
                  ("POST", "/v1/images"), ("GET", "/v1/images/" + "a" * 64)]  # fmt: skip
        for method, path in routes:
            response = anonymous.request(method, path)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/batches/" + "a" * 32, headers={"Authorization": "Bearer x"})
        assert_error(wrong, 401, "unauthorized")
        basic = anonymous.get("/v1/batches/" + "a" * 32, headers={"Authorization": API_KEY})
        assert_error(basic, 401, "unauthorized")
        assert anonymous.get("/healthz").status_code == 200  # probes need no key


def test_a_finished_batch_posts_one_signed_callback(client: httpx.Client) -> None:
    with webhook_receiver() as receiver:
        receiver.answers = [500]  # the first attempt fails: the retry delivers
        created = post_batch(client, [upload("c.jpg", small_jpeg(700))], callback_url=receiver.url)
        wait_for_batch(client, created["batch_id"])
        calls = receiver.wait_for(2)
        threading.Event().wait(0.3)  # no further posts arrive
        assert len(receiver.calls) == 2
    for call in calls:
        assert call.headers["content-type"] == "application/json"
        assert call.headers["x-pixelmill-signature"] == sign(call.body, WEBHOOK_SECRET)
    payload = json.loads(calls[-1].body)
    assert payload["batch_id"] == created["batch_id"] and payload["status"] == "completed"
    check_invariant(payload)


def test_a_cancelled_batch_posts_its_callback_too(client: httpx.Client) -> None:
    with webhook_receiver() as receiver:
        files = [upload(f"{i}.jpg", slow_jpeg(800 + i)) for i in range(4)]
        created = post_batch(client, files, callback_url=receiver.url)
        client.post(f"/v1/batches/{created['batch_id']}/cancel")
        wait_for_batch(client, created["batch_id"])
        payload = json.loads(receiver.wait_for(1)[0].body)
    assert payload["status"] == "cancelled"
    check_invariant(payload)


def test_a_batch_whose_uploads_all_failed_is_finished_at_once_and_calls_back(
    client: httpx.Client,
) -> None:
    with webhook_receiver() as receiver:
        created = post_batch(
            client, [upload("a.txt", b"text", "text/plain")], callback_url=receiver.url
        )
        assert created["status"] == "completed"
        payload = json.loads(receiver.wait_for(1)[0].body)
    assert payload["failed"] == 1 and payload["images"][0]["error"]["code"] == "unsupported_format"


def test_hundreds_of_files_in_one_request_are_accepted_at_once(client: httpx.Client) -> None:
    """The 202 comes when the body is read; rendering 300 images goes on afterwards."""
    files = [upload(f"{i}.png", small_png(10_000 + i % 250, (24, 16))) for i in range(300)]
    started = time.monotonic()
    created = post_batch(client, files)
    assert time.monotonic() - started < 5
    assert created["total"] == 300
    events = read_events(client, created["batch_id"])
    assert [name for name, _ in events].count("image") == 300
    status = wait_for_batch(client, created["batch_id"])
    assert status["completed"] == 300 and status["duplicates"] == 50


def test_health_metrics_and_docs(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("pixelmill_images_total", "pixelmill_stage_seconds_bucket",
                 "pixelmill_queue_depth", "pixelmill_in_flight", "pixelmill_bytes_in_total",
                 "pixelmill_bytes_out_total"):  # fmt: skip
        assert name in text
    for stage in ("read", "decode", "resize", "encode"):
        assert f'pixelmill_stage_seconds_count{{stage="{stage}"}}' in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/events",
            "/v1/batches/{batch_id}/cancel", "/v1/images", "/v1/images/{sha256}",
            "/v1/images/{sha256}/{filename}"} <= set(paths)  # fmt: skip
    assert "multipart/form-data" in paths["/v1/batches"]["post"]["requestBody"]["content"]
