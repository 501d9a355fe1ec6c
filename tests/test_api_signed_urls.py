"""Signed URLs and public renditions, over real HTTP to a real uvicorn: what the API hands
out works with no header, and nothing else does."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from api_helpers import assert_error, small_jpeg, upload
from api_server import running_in_thread
from images import format_by_magic
from pixelmill.api.app import create_app
from pixelmill.api.signing import UrlSigner, expiry, signature
from pixelmill.config import Settings
from webhook_receiver import webhook_receiver

API_KEY = "signed-urls-test-key"
OTHER_SHA = "0" * 64


def serve(tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("signed-urls")
    app = create_app(Settings(data_dir=data_dir, workers=1, **settings))
    with running_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory, api_key=API_KEY)


@pytest.fixture
def anonymous(keyed_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def finished(keyed_url: str) -> dict[str, Any]:
    """A batch of one image, finished: its answer at upload and its final status (both
    fetched as the API hands them out)."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=keyed_url, headers=headers, timeout=60) as client:
        response = client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(41))])
        assert response.status_code == 202, response.text
        created: dict[str, Any] = response.json()
    with httpx.Client(base_url=keyed_url, timeout=60) as anonymous:
        status = poll_until_finished(anonymous, created["status_url"])
    return {"created": created, "status": status}


def poll_until_finished(client: httpx.Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = client.get(status_url)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] == "completed":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def signer_of(key: bytes | str = API_KEY) -> UrlSigner:
    """A signer as a service with this API key (or this signing key) builds it."""
    if isinstance(key, bytes):
        return UrlSigner(key, 86_400)
    secret = Settings(api_key=key).url_signing_secret
    assert secret is not None
    return UrlSigner(secret, 86_400)


def renditions_of(finished: dict[str, Any]) -> list[dict[str, Any]]:
    renditions: list[dict[str, Any]] = finished["status"]["images"][0]["renditions"]
    assert len(renditions) == 6
    return renditions


def test_every_url_handed_out_is_signed(finished: dict[str, Any]) -> None:
    batch_id = finished["created"]["batch_id"]
    for name, path in (("status_url", ""), ("events_url", "/events")):
        url = finished["created"][name]
        assert urlsplit(url).path == f"/v1/batches/{batch_id}{path}"
        assert set(query_of(url)) == {"expires", "sig"}
    for rendition in renditions_of(finished):
        assert set(query_of(rendition["path"])) == {"expires", "sig"}


def test_a_signed_url_has_one_spelling(anonymous: httpx.Client, finished: dict[str, Any]) -> None:
    """Another spelling of the same expiry or digest is not that URL (one cache key per
    URL), and a second expires or sig is refused."""
    path, _, query = renditions_of(finished)[0]["path"].partition("?")
    fields = dict(item.split("=") for item in query.split("&"))
    expires, sig = fields["expires"], fields["sig"]
    assert anonymous.get(f"{path}?expires={expires}&sig={sig}").status_code == 200
    for variant in (
        f"{path}?expires=0{expires}&sig={sig}",
        f"{path}?expires=%20{expires}%20&sig={sig}",
        f"{path}?expires={expires}&sig={sig.upper()}",
        f"{path}?expires={expires}&sig={'0' * 64}&sig={sig}",
    ):
        assert anonymous.get(variant).status_code == 401, variant


def test_a_caller_without_the_key_learns_nothing_of_a_routes_parameters(
    anonymous: httpx.Client,
) -> None:
    assert_error(anonymous.get("/v1/batches?guess=1"), 401, "unauthorized")


def test_ids_ending_in_a_newline_name_nothing(keyed_url: str, finished: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    sha = renditions_of(finished)[0]["path"].split("/")[3]
    batch_id = finished["created"]["batch_id"]
    with httpx.Client(base_url=keyed_url, headers=headers, timeout=60) as client:
        assert_error(client.delete(f"/v1/images/{sha}%0A"), 404, "not_found")
        assert_error(client.get(f"/v1/batches/{batch_id}%0A"), 404, "not_found")
        assert client.get(f"/v1/images/{sha}").status_code == 200, "the image is still there"


def test_a_previous_signing_key_is_still_accepted_for_rotation(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """URLs signed with a key listed in PIXELMILL_URL_SIGNING_PREVIOUS_KEYS still work;
    new ones are signed with the current key."""
    old_key, new_key = "old-signing-key-0123", "new-signing-key-4567"
    path = "/v1/presets"
    old_url = UrlSigner(old_key.encode(), 3600).sign(path)
    for url in serve(
        tmp_path_factory,
        api_key=API_KEY,
        url_signing_key=new_key,
        url_signing_previous_keys=old_key,
    ):
        assert httpx.get(url + old_url, timeout=60).status_code == 200
        stranger = UrlSigner(b"someone-elses-key-89", 3600).sign(path)
        assert httpx.get(url + stranger, timeout=60).status_code == 401


def test_a_signed_rendition_is_served_with_no_header(
    anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    for rendition in renditions_of(finished):
        response = anonymous.get(rendition["path"])
        assert response.status_code == 200, response.text
        assert format_by_magic(response.content) == rendition["format"]
        with Image.open(io.BytesIO(response.content)) as decoded:
            assert decoded.size == (rendition["width"], rendition["height"])
        head = anonymous.head(rendition["path"])
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(response.content))
        part = anonymous.get(rendition["path"], headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == response.content[:10]
        # Other query parameters (a cache buster) change nothing.
        assert anonymous.get(rendition["path"] + "&v=2").content == response.content


def test_without_a_valid_signature_a_rendition_is_401(
    anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    signed = renditions_of(finished)[0]["path"]
    path, query = signed.split("?")
    expires, sig = query_of(signed)["expires"][0], query_of(signed)["sig"][0]
    assert_error(anonymous.get(path), 401, "unauthorized")
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    other_preset = renditions_of(finished)[1]["path"].split("?")[0]
    other_sha = path.replace(finished["status"]["images"][0]["sha256"], OTHER_SHA)
    tampered = [
        f"{path}?expires={expires}&sig={flipped}",
        f"{path}?expires={int(expires) + 3600}&sig={sig}",
        f"{other_preset}?{query}",
        f"{other_sha}?{query}",
        f"{path}?expires={expires}&sig=",
        f"{path}?expires=soon&sig={sig}",
        f"{path}?sig={sig}",
    ]
    for url in tampered:
        response = anonymous.get(url)
        assert_error(response, 401, "unauthorized")
        assert "signature does not match" in response.json()["error"]["message"], url
        assert anonymous.head(url).status_code == 401


def test_an_expired_signature_is_401_saying_so(
    anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    path = renditions_of(finished)[0]["path"].split("?")[0]
    past = int(time.time()) - 60
    sig = signature(Settings(api_key=API_KEY).url_signing_secret or b"", path, past)
    response = anonymous.get(f"{path}?expires={past}&sig={sig}")
    assert_error(response, 401, "unauthorized")
    assert "expired" in response.json()["error"]["message"]
    # The same key with an expiry to come: served (so the 401 above is the expiry's).
    assert anonymous.get(signer_of().sign(path)).status_code == 200


def test_a_signed_url_authorises_reading_only(
    anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    cancel = signer_of().sign(f"/v1/batches/{finished['created']['batch_id']}/cancel")
    response = anonymous.post(cancel)
    assert_error(response, 401, "unauthorized")
    assert "GET and HEAD only" in response.json()["error"]["message"]


def test_a_signed_events_url_streams_with_no_header(
    anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    with anonymous.stream("GET", finished["created"]["events_url"]) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    assert [name for name, _ in events] == ["image", "progress", "done"]
    image = events[0][1]
    for rendition in image["renditions"]:
        assert set(query_of(rendition["path"])) == {"expires", "sig"}
    assert anonymous.get(image["renditions"][0]["path"]).status_code == 200
    unsigned = urlsplit(finished["created"]["events_url"]).path
    assert_error(anonymous.get(unsigned), 401, "unauthorized")


def test_manifest_and_waited_image_hand_out_signed_paths(
    keyed_url: str, anonymous: httpx.Client, finished: dict[str, Any]
) -> None:
    sha = finished["status"]["images"][0]["sha256"]
    manifest_url = signer_of().sign(f"/v1/images/{sha}")
    manifest = anonymous.get(manifest_url)
    assert manifest.status_code == 200, manifest.text
    assert anonymous.head(manifest_url).status_code == 200
    paths = [r["path"] for r in manifest.json()["renditions"]]
    assert paths and all(set(query_of(p)) == {"expires", "sig"} for p in paths)
    assert anonymous.get(paths[0]).status_code == 200
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=keyed_url, headers=headers, timeout=60) as client:
        waited = client.post("/v1/images?wait=true", files={"file": ("b.jpg", small_jpeg(42))})
        accepted = client.post("/v1/images", files={"file": ("c.jpg", small_jpeg(43))})
    assert waited.status_code == 200, waited.text
    waited_paths = [r["path"] for r in waited.json()["renditions"]]
    assert waited_paths and all(set(query_of(p)) == {"expires", "sig"} for p in waited_paths)
    assert anonymous.get(waited_paths[-1]).status_code == 200
    assert accepted.status_code == 202
    assert anonymous.get(accepted.json()["status_url"]).status_code == 200


def test_signed_urls_are_stable_within_the_expiry_bucket(finished: dict[str, Any]) -> None:
    """Same path, same hour: same URL (caches hit); never valid for less than the TTL."""
    signer = signer_of()
    on_the_hour = 1_800_000_000 - 1_800_000_000 % 3600
    assert expiry(on_the_hour + 1, 86_400) == on_the_hour + 86_400 + 3600
    assert expiry(on_the_hour, 86_400) == on_the_hour + 86_400
    assert signer.sign("/p", on_the_hour + 1) == signer.sign("/p", on_the_hour + 3599.5)
    assert signer.sign("/p", on_the_hour + 1) != signer.sign("/p", on_the_hour + 3601)
    assert expiry(on_the_hour + 7, 600) == on_the_hour + 660  # a tenth of a short TTL
    for now in (on_the_hour + 0.5, on_the_hour + 1234.25, on_the_hour + 3599.9):
        assert 86_400 <= expiry(now, 86_400) - now <= 86_400 + 3600 + 1


@pytest.fixture(scope="module")
def open_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory)


def test_without_an_api_key_urls_are_not_signed(open_url: str) -> None:
    with httpx.Client(base_url=open_url, timeout=60) as client:
        created = client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(44))]).json()
        assert "?" not in created["status_url"] and "?" not in created["events_url"]
        status = poll_until_finished(client, created["status_url"])
        paths = [r["path"] for r in status["images"][0]["renditions"]]
        assert paths and not any("?" in p for p in paths)
        assert client.get(paths[0]).status_code == 200


@pytest.fixture(scope="module")
def public_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    signing_key = "a-signing-key-of-its-own-0123456789"
    yield from serve(
        tmp_path_factory, api_key=API_KEY, public_renditions=True, url_signing_key=signing_key
    )


def test_public_renditions_need_nothing_other_routes_still_do(public_url: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=public_url, headers=headers, timeout=60) as client:
        created = client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(45))]).json()
        status = poll_until_finished(client, created["status_url"])
    sha = status["images"][0]["sha256"]
    path = status["images"][0]["renditions"][0]["path"].split("?")[0]
    with httpx.Client(base_url=public_url, timeout=60) as anonymous:
        for url in (path, f"/v1/images/{sha}"):
            assert anonymous.get(url).status_code == 200, url
            assert anonymous.head(url).status_code == 200, url
        batch = f"/v1/batches/{created['batch_id']}"
        assert_error(anonymous.get(batch), 401, "unauthorized")
        assert_error(anonymous.get(f"{batch}/events"), 401, "unauthorized")
        assert_error(anonymous.post("/v1/images"), 401, "unauthorized")
        # PIXELMILL_URL_SIGNING_KEY, not the API key, signs: the derived key's URLs fail.
        assert_error(anonymous.get(signer_of().sign(batch)), 401, "unauthorized")
        own = anonymous.get(signer_of(b"a-signing-key-of-its-own-0123456789").sign(batch))
        assert own.status_code == 200


def test_services_sharing_an_api_key_accept_each_others_urls(
    keyed_url: str, finished: dict[str, Any], tmp_path: Path
) -> None:
    """The default signing key comes from the API key alone: a second service (own data dir,
    own start) hands out rendition URLs the first one serves with no header."""
    other = create_app(Settings(data_dir=tmp_path, workers=1, api_key=API_KEY))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        running_in_thread(other) as other_url,
        httpx.Client(base_url=other_url, headers=headers, timeout=60) as client,
    ):
        # The bytes of the module's batch: the same renditions at the same paths.
        waited = client.post("/v1/images?wait=true", files={"file": ("a.jpg", small_jpeg(41))})
    assert waited.status_code == 200, waited.text
    handed_out = waited.json()["renditions"][0]["path"]
    assert handed_out.split("?")[0] in [r["path"].split("?")[0] for r in renditions_of(finished)]
    assert httpx.get(keyed_url + handed_out).status_code == 200
    assert_error(httpx.get(keyed_url + handed_out.split("?")[0]), 401, "unauthorized")


def test_a_webhook_hands_out_signed_rendition_urls(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The callback body is the batch status: its rendition paths are signed too, so the
    receiver can fetch them without the key."""
    with (
        webhook_receiver() as receiver,
        httpx.Client(timeout=60) as anonymous,
    ):
        for url in serve(tmp_path_factory, api_key=API_KEY, webhook_allow_private=True):
            headers = {"Authorization": f"Bearer {API_KEY}"}
            created = httpx.post(
                f"{url}/v1/batches",
                files=[upload("w.jpg", small_jpeg(43))],
                data={"callback_url": receiver.url},
                headers=headers,
                timeout=60,
            )
            assert created.status_code == 202, created.text
            payload = json.loads(receiver.wait_for(1)[0].body)
            [image] = payload["images"]
            assert image["status"] == "done"
            for rendition in image["renditions"]:
                assert {"expires", "sig"} <= set(query_of(rendition["path"]))
                fetched = anonymous.get(url + rendition["path"])
                assert fetched.status_code == 200, fetched.text
