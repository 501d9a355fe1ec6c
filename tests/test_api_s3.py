"""The service on S3 storage (a real SeaweedFS) with the local engine, through real uvicorn.

Renditions go to the bucket under the documented keys and nothing stays in the data dir;
serving answers as it does on folder storage (the serving tests run on both); a storage
that is down fails images with a clear message or answers 503, never 500.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import assert_error, small_jpeg, upload, wait_for_batch, wait_for_empty_spool
from api_server import ServerProcess, free_port
from s3_server import S3Server

PREFIX = "site/v1"
NAMES = {f"{p}.{f}" for p in ("thumbnail", "medium", "large") for f in ("jpg", "webp")}
IMMUTABLE = "public, max-age=31536000, immutable"
STORAGE_DOWN_RECORD = "cannot store renditions: the storage does not answer"
STORAGE_DOWN_ANSWER = "the storage does not answer; try again later"


@dataclass
class Service:
    client: httpx.Client
    data_dir: Path
    bucket: str | None  # None: folder storage
    server: S3Server | None

    def image_prefix(self, sha256: str) -> str:
        return f"{PREFIX}/renditions/{sha256[:2]}/{sha256}/"


@contextmanager
def service(
    data_dir: Path, server: S3Server | None, bucket: str | None, **env: str
) -> Iterator[Service]:
    """``pixelmill serve`` (the real command, in a process of its own: its workers get the
    AWS_* variables) on folder storage, or on ``bucket`` at ``server``."""
    env = {"PIXELMILL_DATA_DIR": str(data_dir), "PIXELMILL_WORKERS": "2", **env}
    if server is not None and bucket is not None:
        env |= server.env(bucket, PREFIX)
    process = ServerProcess(env, data_dir.parent / f"{data_dir.name}.log")
    try:
        process.start()
        with httpx.Client(base_url=process.url, timeout=60) as client:
            yield Service(client, data_dir, bucket, server)
        assert process.terminate() in (0, -signal.SIGTERM), process.log()  # drained
        assert "Traceback" not in process.log(), process.log()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()


@pytest.fixture(scope="module", params=["folder", "s3"])
def any_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "folder":
        with service(data_dir, None, None) as running:
            yield running
        return
    server: S3Server = request.getfixturevalue("s3_server")
    with service(data_dir, server, server.new_bucket()) as running:
        yield running


@pytest.fixture(scope="module")
def s3_service(any_service: Service) -> Service:
    if any_service.server is None:
        pytest.skip("S3 storage only")  # never reported: the test is parametrised on s3 only
    return any_service


def render(svc: Service, *seeds: int) -> list[str]:
    """Upload photos in one batch, wait; their SHA-256s."""
    files = [upload(f"p{seed}.jpg", small_jpeg(seed, (900, 600))) for seed in seeds]
    created = svc.client.post("/v1/batches", files=files)
    assert created.status_code == 202, created.text
    status = wait_for_batch(svc.client, created.json()["batch_id"])
    assert status["completed"] == len(seeds) and status["failed"] == 0, status
    return [image["sha256"] for image in status["images"]]


@pytest.mark.parametrize("any_service", ["s3"], indirect=True)
def test_renditions_are_in_the_bucket_and_nothing_stays_in_the_data_dir(
    s3_service: Service,
) -> None:
    svc = s3_service
    assert svc.server is not None and svc.bucket is not None
    shas = render(svc, 1, 2, 3)
    keys = set(svc.server.keys(svc.bucket))
    expected = {svc.image_prefix(sha) + name for sha in shas for name in NAMES | {"manifest.json"}}
    assert keys == expected
    wait_for_empty_spool(svc.data_dir)
    left = [p for p in (svc.data_dir / "tmp").rglob("*") if p.is_file()]
    assert left == [], "scratch files stayed in the data dir"
    assert not (svc.data_dir / "renditions").exists(), "renditions were written locally"


@pytest.mark.parametrize("any_service", ["s3"], indirect=True)
def test_a_duplicate_upload_renders_and_uploads_nothing(s3_service: Service) -> None:
    svc = s3_service
    assert svc.server is not None and svc.bucket is not None
    (sha,) = render(svc, 10)
    client = svc.server.client()
    before = client.head_object(Bucket=svc.bucket, Key=svc.image_prefix(sha) + "manifest.json")
    again = svc.client.post(
        "/v1/images?wait=true", files={"file": ("again.jpg", small_jpeg(10, (900, 600)))}
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    after = client.head_object(Bucket=svc.bucket, Key=svc.image_prefix(sha) + "manifest.json")
    assert after["LastModified"] == before["LastModified"] and after["ETag"] == before["ETag"]
    assert len(svc.server.keys(svc.bucket, svc.image_prefix(sha))) == len(NAMES) + 1


def test_renditions_are_served_alike_from_a_folder_and_a_bucket(any_service: Service) -> None:
    """GET, HEAD, Range, ETag and If-None-Match: the same answers on both siblings."""
    svc = any_service
    (sha,) = render(svc, 20)
    path = f"/v1/images/{sha}/large.webp"
    got = svc.client.get(path)
    assert got.status_code == 200
    headers = got.headers
    assert headers["content-type"] == "image/webp"
    assert headers["cache-control"] == IMMUTABLE
    assert headers["accept-ranges"] == "bytes"
    assert int(headers["content-length"]) == len(got.content) > 100
    # HTTP dates are in GMT (RFC 9110), as Starlette writes a file's.
    assert headers["last-modified"].endswith(" GMT"), headers["last-modified"]
    assert parsedate_to_datetime(headers["last-modified"]).tzinfo is not None
    etag = headers["etag"]
    if svc.server is not None:  # the object's own ETag, and the bucket's bytes
        assert svc.bucket is not None
        stored = svc.server.client().get_object(
            Bucket=svc.bucket, Key=svc.image_prefix(sha) + "large.webp"
        )
        assert etag == stored["ETag"] and got.content == stored["Body"].read()
    else:
        assert etag == f'"{sha[:32]}-large.webp-{len(got.content)}"'
    head = svc.client.head(path)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-type", "content-length", "etag", "cache-control", "accept-ranges"):
        assert head.headers[name] == headers[name], name
    cached = svc.client.get(path, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    part = svc.client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == got.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(got.content)}"
    tail = svc.client.get(path, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == got.content[-5:]
    assert_error(svc.client.get(path, headers={"Range": "bytes=zz"}), 400, "invalid_request")
    beyond = svc.client.get(path, headers={"Range": "bytes=99999999-"})
    assert_error(beyond, 416, "invalid_request")
    assert beyond.headers["content-range"] == f"bytes */{len(got.content)}"
    assert_error(svc.client.get(f"/v1/images/{sha}/huge.webp"), 404, "not_found")
    assert_error(svc.client.get(f"/v1/images/{sha}/..%2Fmanifest.json"), 404, "not_found")
    assert_error(svc.client.get(f"/v1/images/{'0' * 64}/large.webp"), 404, "not_found")
    assert svc.client.head(f"/v1/images/{'0' * 64}/large.webp").status_code == 404
    manifest = svc.client.get(f"/v1/images/{sha}")
    assert manifest.status_code == 200 and manifest.headers["cache-control"] == "no-cache"
    head = svc.client.head(f"/v1/images/{sha}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == manifest.headers["etag"]
    assert head.headers["content-length"] == str(len(manifest.content))
    assert {r["path"] for r in manifest.json()["renditions"]} == {
        f"/v1/images/{sha}/{name}" for name in NAMES
    }


@pytest.mark.parametrize("any_service", ["s3"], indirect=True)
def test_an_object_the_manifest_does_not_list_is_not_served(s3_service: Service) -> None:
    svc = s3_service
    assert svc.server is not None and svc.bucket is not None
    (sha,) = render(svc, 30)
    stray = svc.image_prefix(sha) + "huge.jpg"
    svc.server.client().put_object(Bucket=svc.bucket, Key=stray, Body=b"\xff\xd8\xff")
    assert_error(svc.client.get(f"/v1/images/{sha}/huge.jpg"), 404, "not_found")


@pytest.mark.parametrize("any_service", ["s3"], indirect=True)
def test_a_public_url_redirects_what_the_manifest_lists(
    s3_service: Service, tmp_path: Path
) -> None:
    svc = s3_service
    (sha,) = render(svc, 40)
    public = "https://cdn.example.test/img"
    with service(tmp_path / "data", svc.server, svc.bucket,
                 PIXELMILL_STORAGE_PUBLIC_URL=public) as other:  # fmt: skip
        moved = other.client.get(f"/v1/images/{sha}/medium.jpg")
        assert moved.status_code == 307
        assert moved.headers["location"] == f"{public}/{svc.image_prefix(sha)}medium.jpg"
        assert_error(other.client.get(f"/v1/images/{sha}/huge.jpg"), 404, "not_found")
        assert_error(other.client.get(f"/v1/images/{'1' * 64}/medium.jpg"), 404, "not_found")


def wait_for_health(
    client: httpx.Client, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
) -> httpx.Response:
    """/healthz once ``wanted`` holds for its body (the storage is probed every 2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = client.get("/healthz")
        if wanted(answer.json()) or time.monotonic() > deadline:
            assert wanted(answer.json()), answer.text
            return answer
        time.sleep(0.2)


def test_storage_down_fails_images_clearly_and_answers_503(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An S3 server of its own, stopped mid-life: uploads fail with a clear message, reads
    answer 503 ``unavailable``; started again, the service renders again."""
    if not Path(sys.executable).with_name("weed").is_file():
        pytest.skip("needs the SeaweedFS binary (see the s3_server fixture)")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs-down"))
    server.start()
    try:
        bucket = server.new_bucket()
        data_dir = tmp_path_factory.mktemp("api-down")
        with service(data_dir, server, bucket) as svc:
            (sha,) = render(svc, 50)
            server.stop()
            failed = svc.client.post(
                "/v1/images?wait=true", files={"file": ("down.jpg", small_jpeg(51))}
            )
            assert failed.status_code == 200, failed.text
            record = failed.json()
            assert record["status"] == "failed"
            assert record["error"]["code"] == "internal"
            # The cause, not where the storage lives (the log has that).
            assert record["error"]["message"] == STORAGE_DOWN_RECORD, record
            for path in (f"/v1/images/{sha}", f"/v1/images/{sha}/large.jpg"):
                answer = svc.client.get(path)
                assert_error(answer, 503, "unavailable")
                assert answer.json()["error"]["message"] == STORAGE_DOWN_ANSWER
                assert answer.headers["retry-after"].isdigit()
                assert bucket not in answer.text and str(server.s3_port) not in answer.text
            health = wait_for_health(svc.client, lambda h: h["storage"] == "unreachable")
            assert health.status_code == 503
            assert health.json()["reason"] == "the storage does not answer"
            assert bucket not in health.text
            server.start()
            health = wait_for_health(svc.client, lambda h: h["storage"] == "ok")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            (again,) = render(svc, 52)
            assert svc.client.get(f"/v1/images/{again}/large.jpg").status_code == 200
        # The operator's log names the storage the client was not told about.
        assert (
            f"{bucket}/{PREFIX} at {server.endpoint_url}"
            in (data_dir.parent / f"{data_dir.name}.log").read_text()
        )
    finally:
        server.stop()


def test_a_missing_bucket_stops_the_start_with_one_line(
    s3_server: S3Server, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **s3_server.env("no-such-bucket-here", PREFIX),
        "PIXELMILL_DATA_DIR": str(tmp_path / "data"),
        "PIXELMILL_WORKERS": "1",
    }
    args = [sys.executable, "-m", "pixelmill", "serve", "--port", str(free_port())]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "bucket 'no-such-bucket-here' does not exist" in done.stderr, done.stderr
