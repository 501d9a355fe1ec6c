"""DELETE /v1/batches/{id} and DELETE /v1/images/{sha256} through a real uvicorn.

Batches on both stores; images on both storages (a folder, and a real SeaweedFS bucket),
looking at what is really stored after each erase.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import (
    assert_error,
    read_events,
    slow_jpeg,
    small_jpeg,
    spool_files,
    upload,
    wait_for_batch,
    wait_for_empty_spool,
)
from api_server import ServerProcess, app_client, one_worker_settings
from celery_helpers import celery_env, celery_workers, cleanup_celery
from celery_helpers import service as celery_service
from s3_server import S3Server
from webhook_receiver import webhook_receiver

PREFIX = "erase/v1"


@dataclass
class Service:
    client: httpx.Client
    data_dir: Path
    stored: Callable[[str], set[str]]  # the file names stored for an image


@pytest.fixture(params=["folder", "s3"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """``pixelmill serve`` with one worker on folder storage, or on a bucket of its own (in
    a process of its own: its workers get the AWS_* variables)."""
    data_dir = tmp_path / "data"
    env = {"PIXELMILL_DATA_DIR": str(data_dir), "PIXELMILL_WORKERS": "1"}
    server: S3Server | None = None
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = server.new_bucket()
        env |= server.env(bucket, PREFIX)

    def stored(sha256: str) -> set[str]:
        if server is None:
            folder = data_dir / "renditions" / sha256[:2] / sha256
            return {p.name for p in folder.iterdir()} if folder.exists() else set()
        prefix = f"{PREFIX}/renditions/{sha256[:2]}/{sha256}/"
        return {key.removeprefix(prefix) for key in server.keys(bucket, prefix)}

    process = ServerProcess(env, tmp_path / "serve.log")
    try:
        process.start()
        with httpx.Client(base_url=process.url, timeout=60) as client:
            yield Service(client, data_dir, stored)
        assert process.terminate() in (0, -signal.SIGTERM), process.log()  # drained
        assert "Traceback" not in process.log(), process.log()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()


def upload_and_wait(client: httpx.Client, data: bytes, name: str = "a.jpg") -> dict[str, Any]:
    response = client.post(
        "/v1/images?wait=true&timeout=120", files={"file": (name, data, "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def rendition_names(record: dict[str, Any]) -> set[str]:
    return {r["path"].rpartition("/")[2] for r in record["renditions"]}


# -- DELETE /v1/images/{sha256} -------------------------------------------------------------


def test_an_erased_image_is_gone_and_its_bytes_render_anew(service: Service) -> None:
    client = service.client
    data = small_jpeg(71)
    sha = hashlib.sha256(data).hexdigest()
    first = upload_and_wait(client, data)
    names = rendition_names(first)
    assert first["status"] == "done" and names, first["error"]
    assert service.stored(sha) == names | {"manifest.json"}
    rendition_url = first["renditions"][0]["path"]
    assert client.get(rendition_url).status_code == 200

    assert client.delete(f"/v1/images/{sha}").status_code == 204
    assert service.stored(sha) == set(), "files or objects left behind"
    assert_error(client.get(f"/v1/images/{sha}"), 404, "not_found")
    assert_error(client.get(rendition_url), 404, "not_found")
    assert_error(client.delete(f"/v1/images/{sha}"), 404, "not_found")
    # The batch that rendered it keeps its record; its rendition URLs answer 404 now.
    kept = client.get(f"/v1/batches/{first['batch_id']}").json()
    assert kept["images"][0]["status"] == "done"
    assert kept["images"][0]["renditions"] == first["renditions"]

    again = upload_and_wait(client, data, "again.jpg")
    assert again["status"] == "done", "rendered anew, not a duplicate of erased content"
    assert rendition_names(again) == names
    assert service.stored(sha) == names | {"manifest.json"}
    assert client.get(rendition_url).status_code == 200


def test_erasing_what_was_never_stored_is_404(service: Service) -> None:
    client = service.client
    for sha in ("ab" * 32, "AB" * 32, "abc", "zz" * 32, "ab" * 33):
        assert_error(client.delete(f"/v1/images/{sha}"), 404, "not_found")


def test_an_erase_during_a_render_is_409_and_leaves_the_image_whole(service: Service) -> None:
    """The rule: stored content is not erased while it renders (a manifest written after the
    erase would list files it removed); the client erases it once it is finished."""
    client = service.client
    data = slow_jpeg(72, (3000, 2000))
    sha = hashlib.sha256(data).hexdigest()
    created = client.post("/v1/images", files={"file": ("slow.jpg", data, "image/jpeg")})
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/batches/{batch_id}").json()["images"][0]["status"] == "pending":
        assert time.monotonic() < deadline, "the render never started"
        time.sleep(0.01)
    refused = client.delete(f"/v1/images/{sha}")
    assert_error(refused, 409, "invalid_request")
    assert "being rendered" in refused.json()["error"]["message"]
    record = wait_for_batch(client, batch_id)["images"][0]
    assert record["status"] == "done", "the render was not disturbed"
    names = rendition_names(record)
    assert service.stored(sha) == names | {"manifest.json"}, "a whole image"
    for rendition in record["renditions"]:
        assert client.get(rendition["path"]).status_code == 200
    assert client.delete(f"/v1/images/{sha}").status_code == 204, "finished: erased"
    assert service.stored(sha) == set()


# -- DELETE /v1/batches/{id} ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def one_worker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[httpx.Client, Path]]:
    data_dir = tmp_path / "data"
    settings = one_worker_settings(request, data_dir, request.param)
    settings = settings.model_copy(update={"webhook_allow_private": True})
    with app_client(settings) as client:
        yield client, data_dir


class EventWatcher:
    """A batch's event stream read to its end in a thread of its own."""

    def __init__(self, base_url: str, batch_id: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.opened = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=base_url, timeout=60) as client:
                self.opened.set()
                self.events = read_events(client, batch_id)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        assert self.opened.wait(10)
        time.sleep(0.3)  # the stream is open and has sent what there was

    def last_event(self) -> tuple[str, str | None]:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the stream did not end"
        name, data = self.events[-1]
        return name, data.get("code")


def engine_load(client: httpx.Client) -> tuple[int, int]:
    health = client.get("/healthz").json()
    return health["queued"], health["in_flight"]


def test_deleting_a_running_batch_cancels_it_and_forgets_it(
    one_worker: tuple[httpx.Client, Path],
) -> None:
    client, data_dir = one_worker
    with webhook_receiver() as receiver:
        files = [upload(f"{i}.jpg", slow_jpeg(500 + i)) for i in range(8)]
        response = client.post("/v1/batches", files=files, data={"callback_url": receiver.url})
        assert response.status_code == 202, response.text
        batch_id = response.json()["batch_id"]
        deadline = time.monotonic() + 30
        while all(
            i["status"] == "pending" for i in client.get(f"/v1/batches/{batch_id}").json()["images"]
        ):
            assert time.monotonic() < deadline, "no image started"
            time.sleep(0.01)
        assert spool_files(data_dir), "images still spooled while the batch runs"
        watcher = EventWatcher(str(client.base_url), batch_id)
        before = client.get(f"/v1/batches/{batch_id}").json()["images"]
        started = sum(1 for image in before if image["status"] != "pending")

        assert client.delete(f"/v1/batches/{batch_id}").status_code == 204
        assert_error(client.get(f"/v1/batches/{batch_id}"), 404, "not_found")
        assert watcher.last_event() == ("error", "not_found"), "an open stream ends"
        assert_error(client.get(f"/v1/batches/{batch_id}/events"), 404, "not_found")
        assert_error(client.post(f"/v1/batches/{batch_id}/cancel"), 404, "not_found")
        assert batch_id not in [b["batch_id"] for b in client.get("/v1/batches").json()["batches"]]
        # The image under way stops between renditions; none starts after the DELETE.
        deadline = time.monotonic() + 30
        while engine_load(client) != (0, 0):
            assert time.monotonic() < deadline, engine_load(client)
            time.sleep(0.05)
        wait_for_empty_spool(data_dir)
        for _ in range(20):
            assert engine_load(client) == (0, 0), "an image of the deleted batch started"
            time.sleep(0.05)
        assert not (data_dir / "spool" / batch_id).exists()
        # One worker: at most one more image could start between the look and the DELETE.
        rendered = list((data_dir / "renditions").rglob("manifest.json"))
        assert len(rendered) <= started + 1, f"{len(rendered)} rendered, {started} started"
        time.sleep(0.5)
        assert receiver.calls == [], "a deleted batch sends no callback"
    assert_error(client.delete(f"/v1/batches/{batch_id}"), 404, "not_found")


def test_deleting_a_finished_batch_keeps_its_renditions(
    one_worker: tuple[httpx.Client, Path],
) -> None:
    client, _ = one_worker
    data = small_jpeg(73)
    record = upload_and_wait(client, data)
    kept = client.post("/v1/batches", files=[upload("b.jpg", small_jpeg(74))]).json()["batch_id"]
    wait_for_batch(client, kept)
    assert client.delete(f"/v1/batches/{record['batch_id']}").status_code == 204
    assert_error(client.get(f"/v1/batches/{record['batch_id']}"), 404, "not_found")
    assert_error(client.delete(f"/v1/batches/{record['batch_id']}"), 404, "not_found")
    for rendition in record["renditions"]:  # shared content: it stays
        assert client.get(rendition["path"]).status_code == 200
    assert upload_and_wait(client, data)["status"] == "duplicate"
    assert client.get(f"/v1/batches/{kept}").status_code == 200, "other batches stay"
    for bad in ("not-an-id", "AB" * 16, "0" * 31, "0" * 32):
        assert_error(client.delete(f"/v1/batches/{bad}"), 404, "not_found")


def test_a_batch_deleted_before_it_started_sends_no_callback(
    one_worker: tuple[httpx.Client, Path],
) -> None:
    """The DELETE's cancel finishes the batch at once; its callback is dropped, not sent."""
    client, data_dir = one_worker
    ahead = [upload(f"{i}.jpg", slow_jpeg(600 + i)) for i in range(2)]
    busy = client.post("/v1/batches", files=ahead).json()["batch_id"]
    with webhook_receiver() as receiver:
        files = [upload(f"{i}.jpg", small_jpeg(610 + i)) for i in range(3)]
        response = client.post("/v1/batches", files=files, data={"callback_url": receiver.url})
        queued = response.json()["batch_id"]
        assert client.get(f"/v1/batches/{queued}").json()["status"] == "queued"
        assert client.delete(f"/v1/batches/{queued}").status_code == 204
        wait_for_batch(client, busy)
        wait_for_empty_spool(data_dir)
        time.sleep(1.0)
        assert receiver.calls == [], "a deleted batch sends no callback"
    assert list((data_dir / "callbacks").glob("*")) == [], "no callback left owed"


# -- with the distributed engine: real `pixelmill worker` processes ------------------------


@pytest.fixture
def celery_env_redis(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = celery_env("redis", tmp_path)
    yield env
    cleanup_celery(env)


@pytest.mark.slow
def test_with_workers_an_erase_takes_the_content_claim(celery_env_redis: dict[str, str]) -> None:
    """A worker renders under the content's claim: an erase meanwhile is 409; after, it
    erases, and the next upload of the bytes is rendered again by a worker."""
    env = celery_env_redis
    storage = Path(env["PIXELMILL_STORAGE"].removeprefix("file://"))
    data = slow_jpeg(75, (3000, 2000))
    sha = hashlib.sha256(data).hexdigest()
    folder = storage / "renditions" / sha[:2] / sha
    with celery_workers(env), celery_service(env) as client:
        created = client.post("/v1/images", files={"file": ("slow.jpg", data, "image/jpeg")})
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/batches/{batch_id}").json()["images"][0]["status"] == "pending":
            assert time.monotonic() < deadline, "no worker started the image"
            time.sleep(0.01)
        assert_error(client.delete(f"/v1/images/{sha}"), 409, "invalid_request")
        assert wait_for_batch(client, batch_id, timeout_s=120)["images"][0]["status"] == "done"
        assert (folder / "manifest.json").is_file(), "the render was not disturbed"
        assert client.delete(f"/v1/images/{sha}").status_code == 204
        assert not folder.exists()
        assert_error(client.get(f"/v1/images/{sha}"), 404, "not_found")
        again = upload_and_wait(client, data, "again.jpg")
        assert again["status"] == "done", "rendered anew by a worker"
        assert (folder / "manifest.json").is_file()


@pytest.mark.slow
def test_with_workers_a_deleted_batch_renders_no_more(celery_env_redis: dict[str, str]) -> None:
    env = celery_env_redis
    storage = Path(env["PIXELMILL_STORAGE"].removeprefix("file://"))
    with celery_workers(env), celery_service(env) as client:
        files = [upload(f"{i}.jpg", slow_jpeg(520 + i)) for i in range(6)]
        batch_id = client.post("/v1/batches", files=files).json()["batch_id"]
        deadline = time.monotonic() + 60
        while all(
            i["status"] == "pending" for i in client.get(f"/v1/batches/{batch_id}").json()["images"]
        ):
            assert time.monotonic() < deadline, "no worker started an image"
            time.sleep(0.01)
        assert client.delete(f"/v1/batches/{batch_id}").status_code == 204
        assert_error(client.get(f"/v1/batches/{batch_id}"), 404, "not_found")
        time.sleep(3.0)  # what the worker would render of the batch meanwhile
        rendered = list((storage / "renditions").glob("*/*/manifest.json"))
        assert len(rendered) <= 2, "images of the deleted batch kept rendering"
        wait_for_empty_spool(Path(env["PIXELMILL_DATA_DIR"]))
        assert_error(client.delete(f"/v1/batches/{batch_id}"), 404, "not_found")
