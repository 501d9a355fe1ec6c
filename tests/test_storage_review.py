"""What a hostile review of the S3 storage found, each pinned by a test on the real parts.

Two renders of one image (two processes, two threads), a render that died mid-upload, a
bucket holding garbage where a manifest should be, prefixes that stores normalise, public
URLs with non-ASCII prefixes, several byte ranges, and a store that fails between the HEAD
and the GET of a rendition.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import ValidationError

from api_helpers import small_jpeg
from api_server import ServerProcess, free_port
from pixelmill.api.routes._stored import StreamedRendition
from pixelmill.config import Settings
from pixelmill.core.render import render_renditions
from pixelmill.core.specs import OutputFormat, Preset, RenderSpec
from pixelmill.engine.base import ImageJob, ImageOutcome
from pixelmill.engine.local import LocalEngine
from pixelmill.engine.task import RenderTask, TaskResult, run_render_task
from pixelmill.errors import ErrorCode
from pixelmill.states import ImageStatus
from pixelmill.storage import StorageUnavailable, open_storage
from pixelmill.storage.s3 import S3Object, S3Storage
from s3_server import REGION, S3Server
from test_storage_contract import SPEC, photo

PRESETS = (Preset("small", 160, 160), Preset("big", 400, 400))
JPEG_ONLY = RenderSpec(presets=PRESETS, formats=(OutputFormat.JPEG,))


@pytest.fixture
def bucket_storage(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[S3Storage, str]]:
    """An S3 storage on a fresh bucket under the prefix ``rev``; its AWS_* variables are set
    (spawned processes inherit them)."""
    bucket = s3_server.new_bucket()
    env = s3_server.env(bucket, "rev")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path / "data", storage=env["PIXELMILL_STORAGE"],
                        s3_endpoint_url=s3_server.endpoint_url)  # fmt: skip
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    yield storage, bucket


def image_keys(server: S3Server, bucket: str, sha256: str) -> set[str]:
    prefix = f"rev/renditions/{sha256[:2]}/{sha256}/"
    return {key.removeprefix(prefix) for key in server.keys(bucket, prefix)}


def fail_elsewhere(storage: S3Storage, sha256: str, corrupt: Path) -> TaskResult:
    """A render of the same image in another process that fails (its source is corrupt)."""
    task = RenderTask("other-job", str(corrupt), sha256, storage, JPEG_ONLY, None)
    context = multiprocessing.get_context("fork")  # a process of its own, quickly
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(run_render_task, task).result(timeout=60)


def test_a_render_failing_elsewhere_keeps_what_a_render_in_flight_uploaded(
    bucket_storage: tuple[S3Storage, str], s3_server: S3Server, tmp_path: Path
) -> None:
    """Two machines render one image (two batches share a photo); one fails or is
    cancelled while the other is between its renditions and its manifest. The failing one
    must not delete the other's uploads: that manifest would list objects that are gone,
    served 404 for ever (the manifest says they are there, so they are never rendered)."""
    storage, bucket = bucket_storage
    source, sha = photo(tmp_path)
    folder = storage.local_dir(sha)
    render_renditions(str(source), folder, JPEG_ONLY, sha)
    with pytest.raises(FileNotFoundError):  # uploaded the renditions; no manifest yet
        storage.publish(sha, folder, JPEG_ONLY.rendition_names())
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(source.read_bytes()[:200])
    failed = fail_elsewhere(storage, sha, corrupt)
    assert failed.error_code is ErrorCode.CORRUPT_IMAGE, failed.error_message
    assert image_keys(s3_server, bucket, sha) == {"small.jpg", "big.jpg"}, "deleted in flight"
    # The render in flight finishes: everything its manifest lists is served.
    result = run_render_task(RenderTask("job", str(source), sha, storage, JPEG_ONLY, None))
    assert result.error_code is None
    for name in JPEG_ONLY.rendition_names():
        assert storage.open_rendition(sha, name) is not None, name


def test_the_start_sweep_removes_what_a_dead_render_uploaded(
    bucket_storage: tuple[S3Storage, str], s3_server: S3Server, tmp_path: Path
) -> None:
    """A render SIGKILLed between its uploads and its manifest (and no engine left to clean
    up after it, e.g. the whole service was killed): the next start removes its uploads."""
    storage, bucket = bucket_storage
    source, sha = photo(tmp_path)
    assert run_render_task(RenderTask("j", str(source), sha, storage, JPEG_ONLY, None)).result
    probe = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead_pid = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    folder = storage.scratch_root / f"{sha}-{dead_pid}-1"
    webp = RenderSpec(presets=PRESETS, formats=(OutputFormat.WEBP,))
    render_renditions(str(source), folder, webp, sha)
    with pytest.raises(FileNotFoundError):
        storage.publish(sha, folder, webp.rendition_names())
    stray = f"rev/renditions/{sha[:2]}/{sha}/stray.webp"  # not ours: no writer, stays
    s3_server.client().put_object(Bucket=bucket, Key=stray, Body=b"RIFF")
    assert image_keys(s3_server, bucket, sha) == {
        "small.jpg", "big.jpg", "manifest.json", "small.webp", "big.webp", "stray.webp"
    }  # fmt: skip
    assert storage.sweep_temp_files() >= 2
    assert image_keys(s3_server, bucket, sha) == {"small.jpg", "big.jpg", "manifest.json",
                                                  "stray.webp"}  # fmt: skip
    assert not folder.exists()
    assert storage.missing_renditions(sha, JPEG_ONLY) == frozenset()


def test_two_threads_rendering_one_image_do_not_share_or_sweep_a_scratch_folder(
    bucket_storage: tuple[S3Storage, str], tmp_path: Path
) -> None:
    """A worker running tasks in threads (a Celery thread pool) renders one image twice:
    each render has its own scratch folder, and one's clean-up leaves the other's alone."""
    storage, _ = bucket_storage
    _, sha = photo(tmp_path)
    mine = storage.local_dir(sha)
    theirs: list[Path] = []
    started, finish = threading.Event(), threading.Event()

    def other_render() -> None:
        theirs.append(storage.local_dir(sha))
        theirs[0].mkdir(parents=True)
        (theirs[0] / "big.jpg").write_bytes(b"half")
        started.set()
        finish.wait(30)

    thread = threading.Thread(target=other_render)
    thread.start()
    try:
        assert started.wait(30)
        assert theirs[0] != mine
        storage.discard_unlisted(sha, ["big.jpg"])
        storage.sweep_temp_files()
        assert (theirs[0] / "big.jpg").is_file(), "a live render's scratch folder was removed"
        # An earlier process had our pid (a restarted container): its folder is stale even
        # when its thread id is one of ours now.
        earlier = storage.scratch_root / f"{sha}-{os.getpid()}-{thread.ident}-00000000"
        earlier.mkdir()
        (earlier / "big.jpg").write_bytes(b"half")
        assert storage.sweep_temp_files() == 1 and not earlier.exists()
        assert theirs[0].is_dir()
    finally:
        finish.set()
        thread.join(30)
    assert storage.sweep_temp_files() == 1  # its thread is gone: now it goes


@pytest.mark.parametrize("sibling", ["folder", "s3"])
def test_garbage_where_a_manifest_should_be_is_no_manifest(
    sibling: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Deeply nested JSON (RecursionError) or a huge object is no manifest: None, and the
    image renders again; never an exception (a 500) nor a gigabyte read into memory."""
    if sibling == "s3":
        storage, bucket = request.getfixturevalue("bucket_storage")
        client = request.getfixturevalue("s3_server").client()

        def put(sha256: str, body: bytes) -> None:
            key = storage.key(f"renditions/{sha256[:2]}/{sha256}/manifest.json")
            client.put_object(Bucket=bucket, Key=key, Body=body)

        bodies = [b"[" * 100_000 + b"]" * 100_000, b" " * (2 * 1024 * 1024) + b"{}"]
    else:
        storage = open_storage(Settings(data_dir=tmp_path / "data"))

        def put(sha256: str, body: bytes) -> None:
            folder = tmp_path / "data" / "renditions" / sha256[:2] / sha256
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifest.json").write_bytes(body)

        bodies = [b"[" * 100_000 + b"]" * 100_000]
    for seed, body in enumerate(bodies):
        _, sha = photo(tmp_path, seed)
        put(sha, body)
        assert storage.read_manifest(sha) is None
        assert storage.missing_renditions(sha, SPEC) == frozenset(SPEC.rendition_names())
        assert storage.open_rendition(sha, "big.jpg") is None


@pytest.mark.parametrize(
    "location", ["s3://pm-bucket/../other", "s3://pm-bucket/a/./b", "s3://pm-bucket/a//b",
                 "s3://pm-bucket/a\\b", "s3://pm-bucket/a/..", "s3://pm-bucket/a\x00b"]
)  # fmt: skip
def test_prefixes_a_store_would_normalise_are_refused(location: str) -> None:
    """``..`` may reach another bucket, ``\\`` and ``//`` are rewritten by some stores (the
    keys would not be where they are listed): one line at start, not a failure per image."""
    with pytest.raises(ValidationError, match="plain names joined by /"):
        Settings(storage=location)


def test_odd_but_plain_prefixes_are_kept() -> None:
    for location in ("s3://pm-bucket/sp ace/日本", "s3://pm-bucket/a.b/...", "s3://pm-bucket/%2e"):
        assert Settings(storage=location).storage == location


def test_a_public_url_of_a_non_ascii_prefix_is_percent_encoded(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """A Location header carries only latin-1: a prefix with other letters was a 500."""
    bucket = s3_server.new_bucket()
    prefix = "日本 site/v1"
    sha = "ab" * 32
    folder = f"{prefix}/renditions/ab/{sha}/"
    client = s3_server.client()
    manifest = {"sha256": sha, "renditions": [{"path": "big.jpg"}], "manifest_version": 2}
    client.put_object(Bucket=bucket, Key=folder + "manifest.json", Body=json.dumps(manifest))
    client.put_object(Bucket=bucket, Key=folder + "big.jpg", Body=small_jpeg(1))
    env = {
        **s3_server.env(bucket, prefix),
        "PIXELMILL_DATA_DIR": str(tmp_path / "data"),
        "PIXELMILL_WORKERS": "1",
        "PIXELMILL_STORAGE_PUBLIC_URL": "https://cdn.test/i",
    }
    process = ServerProcess(env, tmp_path / "serve.log").start()
    try:
        moved = httpx.get(f"{process.url}/v1/images/{sha}/big.jpg", timeout=30)
        assert moved.status_code == 307, moved.text
        location = moved.headers["location"]
        assert (
            location
            == f"https://cdn.test/i/%E6%97%A5%E6%9C%AC%20site/v1/renditions/ab/{sha}/big.jpg"
        )
        # ... and the rendition is served from the bucket under that prefix too.
        assert process.terminate() in (0, -signal.SIGTERM)
        # The start names the storage (the operator sees where renditions go).
        where = f"renditions in s3://{bucket}/{prefix} at {s3_server.endpoint_url}"
        assert where in process.log(), process.log()
        del env["PIXELMILL_STORAGE_PUBLIC_URL"]
        process = ServerProcess(env, tmp_path / "serve.log").start()
        served = httpx.get(f"{process.url}/v1/images/{sha}/big.jpg", timeout=30)
        assert served.status_code == 200 and served.content == small_jpeg(1)
        assert process.terminate() in (0, -signal.SIGTERM)
        assert "Traceback" not in process.log(), process.log()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()


def test_several_ranges_are_answered_as_for_a_file(
    bucket_storage: tuple[S3Storage, str], tmp_path: Path
) -> None:
    """``bytes=0-9,100-109``: 206 multipart/byteranges (as Starlette's FileResponse answers
    for the folder sibling), not the whole object."""
    storage, _ = bucket_storage
    source, sha = photo(tmp_path)
    assert run_render_task(RenderTask("j", str(source), sha, storage, SPEC, None)).result
    stored = storage.open_rendition(sha, "big.jpg")
    assert stored is not None
    whole = b"".join(stored.read())
    status, headers, body = call(StreamedRendition(stored, "image/jpeg", {"etag": stored.etag}),
                                 "GET", "bytes=0-9,100-109")  # fmt: skip
    assert status == 206
    boundary = headers["content-type"].removeprefix("multipart/byteranges; boundary=")
    assert int(headers["content-length"]) == len(body)
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(
        f"--{boundary}--".encode()
    )
    assert whole[:10] in body and whole[100:110] in body
    assert f"Content-Range: bytes 100-109/{stored.size}".encode() in body
    status, headers, body = call(StreamedRendition(stored, "image/jpeg", {"etag": stored.etag}),
                                 "HEAD", "bytes=0-9,100-109")  # fmt: skip
    assert status == 206 and body == b"" and int(headers["content-length"]) > 20


def test_a_store_failing_after_the_head_answers_before_any_status_line(
    bucket_storage: tuple[S3Storage, str], tmp_path: Path
) -> None:
    """The object is opened (its first GET sent) before the status line: a store that fails
    then raises StorageUnavailable (the API's 503), not a 200 cut short with a traceback."""
    storage, _ = bucket_storage
    source, sha = photo(tmp_path)
    assert run_render_task(RenderTask("j", str(source), sha, storage, SPEC, None)).result
    stored = storage.open_rendition(sha, "big.jpg")
    assert isinstance(stored, S3Object)
    dead = S3Storage(storage.bucket, storage.prefix, scratch_root=tmp_path,
                     endpoint_url=f"http://127.0.0.1:{free_port()}", region=REGION)  # fmt: skip
    gone = S3Object(stored.size, stored.etag, stored.last_modified, None, dead, stored.key)
    sent: list[MutableMapping[str, Any]] = []
    with pytest.raises(StorageUnavailable):
        call(StreamedRendition(gone, "image/jpeg", {"etag": stored.etag}), "GET", None, sent)
    assert sent == [], "a status line went out before the store failed"


def test_an_object_replaced_after_its_head_is_not_sent_under_the_old_size(
    bucket_storage: tuple[S3Storage, str], s3_server: S3Server, tmp_path: Path
) -> None:
    """A re-render replaces an object between the HEAD (size, ETag sent) and the GET: the
    GET asks for the HEAD's ETag, so the new bytes never go out under the old length."""
    storage, bucket = bucket_storage
    source, sha = photo(tmp_path)
    assert run_render_task(RenderTask("j", str(source), sha, storage, SPEC, None)).result
    stored = storage.open_rendition(sha, "big.jpg")
    assert isinstance(stored, S3Object)
    s3_server.client().put_object(Bucket=bucket, Key=stored.key, Body=b"\xff\xd8 other bytes")
    with pytest.raises(StorageUnavailable, match=r"PreconditionFailed|412"):
        b"".join(stored.read())


def call(
    response: StreamedRendition,
    method: str,
    wanted: str | None,
    sent: list[MutableMapping[str, Any]] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Run the ASGI response as uvicorn would; its status, headers and body."""
    messages = sent if sent is not None else []
    headers = [(b"range", wanted.encode())] if wanted else []
    scope = {"type": "http", "method": method, "headers": headers}
    disconnected = anyio.Event()

    async def receive() -> dict[str, Any]:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    async def main() -> None:
        await response(scope, receive, send)

    anyio.run(main)
    start = messages[0]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], head, b"".join(m.get("body", b"") for m in messages[1:])


def stop_the_store_then_die(task: RenderTask) -> TaskResult:
    """A worker task: start a render (a scratch folder with a rendition), SIGKILL the S3
    server (its pid is beside the source), then itself."""
    folder = task.storage.local_dir(task.sha256)
    folder.mkdir(parents=True)
    (folder / "big.jpg").write_bytes(b"\xff\xd8\xff")
    server_pid = int(Path(task.source).with_suffix(".s3pid").read_text())
    os.killpg(server_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def test_a_worker_dying_while_the_store_is_down_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine cleans up after a dead worker; the store is down then: a warning line,
    not a traceback at ERROR (it is not a bug), and the image fails with a clear message."""
    if not Path(sys.executable).with_name("weed").is_file():
        pytest.skip("needs the SeaweedFS binary (see the s3_server fixture)")
    server = S3Server(tmp_path / "seaweedfs")
    server.start()
    try:
        bucket = server.new_bucket()
        for name, value in server.env(bucket, "rev").items():
            monkeypatch.setenv(name, value)
        storage = S3Storage(bucket, "rev", scratch_root=tmp_path / "scratch",
                            endpoint_url=server.endpoint_url, region=REGION)  # fmt: skip
        source, sha = photo(tmp_path)
        assert server.proc is not None
        source.with_suffix(".s3pid").write_text(str(server.proc.pid))
        outcomes: list[ImageOutcome] = []
        engine = LocalEngine(JPEG_ONLY, storage, workers=1, memory_budget_bytes=640 << 20,
                             max_tasks_per_child=50, on_outcome=outcomes.append,
                             task_function=stop_the_store_then_die).start()  # fmt: skip
        try:
            engine.submit(ImageJob("job", str(source), sha, "batch"))
            assert engine.join(timeout=120), "engine did not finish"
        finally:
            engine.shutdown()
        (outcome,) = outcomes
        assert outcome.status is ImageStatus.FAILED and outcome.error is not None
        assert outcome.error.message.startswith("cannot store renditions: "), outcome.error
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]
        assert any("cannot clean up after" in r.getMessage() for r in caplog.records)
        assert list(storage.scratch_root.iterdir()) == [], "the dead worker's scratch stayed"
    finally:
        server.stop()
