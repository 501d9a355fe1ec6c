"""Uploads choosing presets and formats from the catalogue, GET /v1/presets, placeholders.

Real uvicorn on 127.0.0.1, real images, both stores; a restart as its own process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import (
    assert_error,
    slow_jpeg,
    small_jpeg,
    spool_files,
    upload,
    wait_for_batch,
)
from api_server import ServerProcess, app_client, one_worker_settings
from pixelmill.config import Settings
from pixelmill.store import NewImage, RedisBatchStore, SqliteBatchStore

FIRST_CHOICE = {"presets": "thumbnail", "formats": "webp"}


@pytest.fixture(params=["sqlite", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    """A one-worker service on each store."""
    with app_client(one_worker_settings(request, tmp_path / "data", request.param)) as client:
        yield client


def image_folder(data_dir: Path, sha256: str) -> Path:
    return data_dir / "renditions" / sha256[:2] / sha256


def files_on_disk(data_dir: Path, sha256: str) -> set[str]:
    return {p.name for p in image_folder(data_dir, sha256).iterdir()} - {"manifest.json"}


def rendition_names(image: dict[str, Any]) -> list[str]:
    """File names of an image record's renditions (their paths may be signed URLs)."""
    return [r["path"].split("?", 1)[0].rsplit("/", 1)[-1] for r in image["renditions"]]


def post_batch(client: httpx.Client, data: bytes, **fields: str) -> dict[str, Any]:
    created = client.post("/v1/batches", files=[upload("a.jpg", data)], data=fields)
    assert created.status_code == 202, created.text
    return wait_for_batch(client, created.json()["batch_id"])


def assert_placeholder(image: dict[str, Any]) -> None:
    """The key is always there; when set, it is base64 of a few dozen bytes."""
    assert "placeholder" in image
    if image["placeholder"] is not None:
        try:
            decoded = base64.b64decode(image["placeholder"], validate=True)
        except binascii.Error:
            decoded = base64.b64decode(image["placeholder"] + "==", validate=True)
        assert 0 < len(decoded) < 100


def test_a_choice_renders_only_what_it_names_and_more_later_then_a_duplicate(
    client: httpx.Client, tmp_path: Path
) -> None:
    """thumbnail.webp alone; then large (both default formats) is rendered and the image is
    done; then thumbnail.webp again is a duplicate. Records list what was asked, the
    manifest everything the image has."""
    data_dir = tmp_path / "data"
    data = small_jpeg(1, (600, 400))
    sha256 = hashlib.sha256(data).hexdigest()

    first = post_batch(client, data, **FIRST_CHOICE)["images"][0]
    assert first["status"] == "done", first
    assert rendition_names(first) == ["thumbnail.webp"]
    assert files_on_disk(data_dir, sha256) == {"thumbnail.webp"}
    assert_placeholder(first)

    second = post_batch(client, data, presets="large")["images"][0]
    assert second["status"] == "done", second
    assert rendition_names(second) == ["large.jpg", "large.webp"]
    assert files_on_disk(data_dir, sha256) == {"thumbnail.webp", "large.jpg", "large.webp"}
    assert_placeholder(second)

    third = post_batch(client, data, presets="thumbnail", formats="webp")["images"][0]
    assert third["status"] == "duplicate", third
    assert rendition_names(third) == ["thumbnail.webp"]
    assert_placeholder(third)

    manifest = client.get(f"/v1/images/{sha256}").json()
    listed = {r["path"].rsplit("/", 1)[-1] for r in manifest["renditions"]}
    assert listed == {"thumbnail.webp", "large.jpg", "large.webp"}
    assert client.get(third["renditions"][0]["path"]).status_code == 200


def test_one_image_waited_for_with_jpg_as_a_format_name(client: httpx.Client) -> None:
    """POST /v1/images takes the fields too; ``jpg`` means jpeg; the record has a placeholder
    key; the SSE image event carries it as well."""
    response = client.post(
        "/v1/images?wait=true",
        files=[("file", ("b.jpg", small_jpeg(2), "image/jpeg"))],
        data={"presets": "medium, thumbnail", "formats": "jpg"},
    )
    assert response.status_code == 200, response.text
    image = response.json()
    assert image["status"] == "done"
    # Catalogue order, whatever the order asked.
    assert rendition_names(image) == ["thumbnail.jpg", "medium.jpg"]
    assert_placeholder(image)
    with client.stream("GET", f"/v1/batches/{image['batch_id']}/events") as events:
        lines = [line for line in events.iter_lines() if line.startswith("data: ")]
    records = [json.loads(line[6:]) for line in lines]
    image_events = [r for r in records if r.get("image_id") == image["image_id"]]
    assert image_events and "placeholder" in image_events[0], records


def test_whole_catalogue_without_a_choice(client: httpx.Client) -> None:
    """No field: every preset in the default formats, as before."""
    image = post_batch(client, small_jpeg(3))["images"][0]
    assert rendition_names(image) == [
        f"{preset}.{ext}" for preset in ("thumbnail", "medium", "large") for ext in ("jpg", "webp")
    ]


BAD_FIELDS = [
    ({"presets": "thumbnail,huge"}, "huge"),
    ({"formats": "gif"}, "gif"),
    ({"formats": "webp,tiff"}, "tiff"),
    ({"formats": "WEBP"}, "WEBP"),
    ({"presets": ""}, "presets"),
    ({"formats": ""}, "formats"),
    ({"presets": "thumbnail,,large"}, "presets"),
    ({"formats": "webp,"}, "formats"),
    ({"colour": "red"}, "colour"),
    ({"preset": "thumbnail"}, "preset"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_FIELDS)
@pytest.mark.parametrize("route", ["/v1/batches", "/v1/images"])
def test_a_bad_choice_or_an_unknown_field_is_400_and_leaves_nothing(
    client: httpx.Client, tmp_path: Path, route: str, fields: dict[str, str], named: str
) -> None:
    """Unknown preset or format, an empty item, an unknown field: 400 invalid_request with a
    one-line message naming it; nothing stays in the spool."""
    part = "files" if route == "/v1/batches" else "file"
    response = client.post(
        route, files=[(part, ("c.jpg", small_jpeg(4), "image/jpeg"))], data=fields
    )
    assert_error(response, 400, "invalid_request")
    message = response.json()["error"]["message"]
    assert named in message and "\n" not in message, message
    assert spool_files(tmp_path / "data") == []


def test_callback_url_is_a_field_of_batches_only(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post(
        "/v1/images",
        files=[("file", ("d.jpg", small_jpeg(5), "image/jpeg"))],
        data={"callback_url": "http://127.0.0.1:9/hook"},
    )
    assert_error(response, 400, "invalid_request")
    assert "callback_url" in response.json()["error"]["message"]
    assert spool_files(tmp_path / "data") == []


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[httpx.Client]:
    """A service with a free worker while another renders (a copy is looked at at once)."""
    with app_client(Settings(data_dir=tmp_path / "data", workers=2)) as client:
        yield client


def test_a_copy_in_flight_with_another_choice_renders_its_own(
    two_workers: httpx.Client, tmp_path: Path
) -> None:
    """Bytes rendering for one batch (large webp and avif, slow) and posted meanwhile with
    another choice: the copy waits for that render, then renders what it asked for (done,
    not a duplicate pointing at renditions that do not exist)."""
    client = two_workers
    data = slow_jpeg(7, (2400, 1600))
    sha256 = hashlib.sha256(data).hexdigest()
    first = client.post(
        "/v1/batches",
        files=[upload("e.jpg", data)],
        data={"presets": "large", "formats": "webp,avif"},
    )
    assert first.status_code == 202, first.text

    def first_status() -> str:
        return str(client.get(first.json()["status_url"]).json()["images"][0]["status"])

    deadline = time.monotonic() + 30
    while first_status() == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = client.post("/v1/batches", files=[upload("f.jpg", data)], data=FIRST_CHOICE)
    assert second.status_code == 202, second.text
    assert first_status() == "processing", "the first render ended before the copy came"
    one = wait_for_batch(client, first.json()["batch_id"])["images"][0]
    other = wait_for_batch(client, second.json()["batch_id"])["images"][0]
    assert (one["status"], rendition_names(one)) == ("done", ["large.webp", "large.avif"])
    assert (other["status"], rendition_names(other)) == ("done", ["thumbnail.webp"])
    on_disk = files_on_disk(tmp_path / "data", sha256)
    assert on_disk == {"large.webp", "large.avif", "thumbnail.webp"}
    assert client.get(other["renditions"][0]["path"]).status_code == 200


# -- GET /v1/presets ----------------------------------------------------------------------


def test_the_catalogue_lists_the_default_presets_and_formats(client: httpx.Client) -> None:
    response = client.get("/v1/presets")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["formats"] == ["jpeg", "webp", "avif", "png"]
    assert body["default_formats"] == ["jpeg", "webp"]
    boxes = [(p["name"], p["width"], p["height"], p["fit"]) for p in body["presets"]]
    assert boxes == [
        ("thumbnail", 150, 150, "inside"),
        ("medium", 800, 800, "inside"),
        ("large", 1920, 1920, "inside"),
    ]
    for preset in body["presets"]:
        assert set(preset) == {"name", "width", "height", "fit", "gravity", "formats", "quality"}
        assert preset["formats"] == ["jpeg", "webp"]
        assert preset["quality"] == {"jpeg": 85, "webp": 80}
        assert preset["gravity"] is None


def test_the_catalogue_lists_what_each_preset_really_renders(tmp_path: Path) -> None:
    """A cover preset with its own formats and quality is listed with them; the others
    with the default formats and qualities."""
    presets = tmp_path / "presets.json"
    card = {"width": 1200, "height": 630, "fit": "cover", "gravity": "attention",
            "formats": ["webp", "png"], "quality": {"webp": 70}}  # fmt: skip
    presets.write_text(json.dumps({"square": [400, 400], "card": card}))
    settings = Settings(data_dir=tmp_path / "data", workers=1, presets_file=presets)
    with app_client(settings) as client:
        body = client.get("/v1/presets").json()
    assert body["presets"] == [
        {"name": "square", "width": 400, "height": 400, "fit": "inside", "gravity": None,
         "formats": ["jpeg", "webp"], "quality": {"jpeg": 85, "webp": 80}},
        {"name": "card", "width": 1200, "height": 630, "fit": "cover",
         "gravity": "attention", "formats": ["webp", "png"], "quality": {"webp": 70}},
    ]  # fmt: skip


def test_the_catalogue_follows_a_presets_file_and_needs_the_key(tmp_path: Path) -> None:
    """A presets file replaces the catalogue (and what a request may choose); with an API
    key set, the route answers 401 without it."""
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"card": [400, 300], "hero": [1600, 900]}))
    settings = Settings(
        data_dir=tmp_path / "data", workers=1, presets_file=presets, api_key="sesame"
    )
    with app_client(settings) as client:
        refused = client.get("/v1/presets")
        assert_error(refused, 401, "unauthorized")
        client.headers["Authorization"] = "Bearer sesame"
        body = client.get("/v1/presets").json()
        assert [(p["name"], p["width"], p["height"]) for p in body["presets"]] == [
            ("card", 400, 300),
            ("hero", 1600, 900),
        ]
        old_name = client.post(
            "/v1/batches", files=[upload("g.jpg", small_jpeg(8))], data={"presets": "thumbnail"}
        )
        assert_error(old_name, 400, "invalid_request")
        assert "card, hero" in old_name.json()["error"]["message"]
        image = post_batch(client, small_jpeg(8), presets="card", formats="png")["images"][0]
        assert rendition_names(image) == ["card.png"]
        paths = client.get("/openapi.json").json()["paths"]
        operation = paths["/v1/presets"]["get"]
        assert operation["operationId"] == "list_presets"
        assert "401" in operation["responses"]
        # The upload forms' fields name what this catalogue takes.
        for path in ("/v1/batches", "/v1/images"):
            body = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]
            field = body["schema"]["properties"]["presets"]
            assert re.fullmatch(field["pattern"], "hero, card")
            assert not re.search(field["pattern"], "thumbnail")


# -- a restart resumes with the batch's choice ---------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {
        "PIXELMILL_DATA_DIR": str(tmp_path / "data"),
        "PIXELMILL_WORKERS": "1",
        "PIXELMILL_API_KEY": "",
        "PIXELMILL_STORE": "sqlite",
    }
    if request.param == "redis":
        env["PIXELMILL_STORE"] = request.getfixturevalue("redis_server_url")
        env["PIXELMILL_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
    return env


def unfinished_after_stop(env: dict[str, str], batch_id: str) -> int:
    """Images of the batch the stopped service left pending (read from its store)."""
    store: SqliteBatchStore | RedisBatchStore
    if env["PIXELMILL_STORE"] == "sqlite":
        store = SqliteBatchStore(Path(env["PIXELMILL_DATA_DIR"]) / "pixelmill.db")
    else:
        store = RedisBatchStore(env["PIXELMILL_STORE"], prefix=env["PIXELMILL_REDIS_PREFIX"])
    try:
        batch = store.get_batch(batch_id)
    finally:
        store.close()
    assert batch is not None
    assert (batch.presets, batch.formats) == (("medium",), ("webp",))
    return batch.pending


@pytest.mark.slow
def test_a_restart_resumes_unfinished_images_with_the_batch_s_choice(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM mid-batch leaves images pending; the next start renders them with the
    choice the upload made (medium.webp only), not the whole catalogue."""
    data_dir = Path(server_env["PIXELMILL_DATA_DIR"])
    photos = [slow_jpeg(3000 + i, (2400, 1600)) for i in range(6)]
    first = ServerProcess(server_env, tmp_path / "server.log").start()
    try:
        created = httpx.post(
            f"{first.url}/v1/batches",
            files=[upload(f"{i}.jpg", data) for i, data in enumerate(photos)],
            data={"presets": "medium", "formats": "webp"},
            timeout=60,
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{first.url}/v1/batches/{batch_id}").json()["completed"] < 1:
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.02)
    finally:
        first.terminate()
    assert unfinished_after_stop(server_env, batch_id) >= 1, "the stop came too late"

    second = ServerProcess(server_env, tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            status = wait_for_batch(client, batch_id, timeout_s=120)
    finally:
        second.terminate()
    assert status["completed"] == 6, status
    for image, data in zip(status["images"], photos, strict=True):
        assert image["status"] == "done", image
        assert rendition_names(image) == ["medium.webp"]
        assert files_on_disk(data_dir, hashlib.sha256(data).hexdigest()) == {"medium.webp"}
    assert spool_files(data_dir) == []


# -- the celery engine ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_celery_engine_renders_the_choice_posted_and_resumed(tmp_path: Path) -> None:
    """With workers elsewhere: a posted batch with presets=thumbnail&formats=webp gets exactly
    thumbnail.webp; so does an image a previous run spooled for a batch with that choice."""
    from celery_helpers import celery_env, celery_workers, cleanup_celery, service

    env = celery_env("redis", tmp_path)
    storage = Path(env["PIXELMILL_STORAGE"].removeprefix("file://"))
    store = RedisBatchStore(env["PIXELMILL_STORE"], prefix=env["PIXELMILL_REDIS_PREFIX"])
    try:
        resumed_id = "c" * 32
        spooled = Path(env["PIXELMILL_DATA_DIR"]).resolve() / "spool" / resumed_id / "one"
        spooled.parent.mkdir(parents=True)
        resumed_data = small_jpeg(78)
        spooled.write_bytes(resumed_data)
        resumed_sha = hashlib.sha256(resumed_data).hexdigest()
        image = NewImage("1" * 32, "spooled.jpg", resumed_sha, str(spooled))
        store.create_batch(resumed_id, [image], presets=("medium",), formats=("png",))
        posted_data = small_jpeg(79)
        with celery_workers(env), service(env) as client:
            posted = post_batch(client, posted_data, **FIRST_CHOICE)["images"][0]
            resumed = wait_for_batch(client, resumed_id)["images"][0]
        assert (posted["status"], rendition_names(posted)) == ("done", ["thumbnail.webp"])
        assert (resumed["status"], rendition_names(resumed)) == ("done", ["medium.png"])
        for data, expected in [(posted_data, "thumbnail.webp"), (resumed_data, "medium.png")]:
            assert files_on_disk(storage, hashlib.sha256(data).hexdigest()) == {expected}
    finally:
        store.close()
        cleanup_celery(env)


def test_a_resumed_choice_the_catalogue_lost_fails_saying_so(tmp_path: Path) -> None:
    """An image spooled for a batch that chose a preset the catalogue no longer has fails
    ``invalid_request`` at the next start (and its spool file goes), not ``internal``."""
    data_dir = tmp_path / "data"
    batch_id = "d" * 32
    spooled = data_dir.resolve() / "spool" / batch_id / "one"
    spooled.parent.mkdir(parents=True)
    data = small_jpeg(80)
    spooled.write_bytes(data)
    store = SqliteBatchStore(data_dir / "pixelmill.db")
    try:
        image = NewImage("1" * 32, "old.jpg", hashlib.sha256(data).hexdigest(), str(spooled))
        store.create_batch(batch_id, [image], presets=("poster",))
    finally:
        store.close()
    with app_client(Settings(data_dir=data_dir, workers=1)) as client:
        status = wait_for_batch(client, batch_id)
    error = status["images"][0]["error"]
    assert status["failed"] == 1 and error["code"] == "invalid_request", status
    assert "poster" in error["message"]
    assert spool_files(data_dir) == []
