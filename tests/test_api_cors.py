"""CORS over real HTTP: listed origins get the headers a browser page needs (preflights
answered without auth); other origins, and a service without the setting, get none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api_helpers import assert_error, small_jpeg, upload
from api_server import running_in_thread
from pixelmill.api.app import create_app
from pixelmill.config import Settings

API_KEY = "cors-test-key"
ALLOWED = "https://app.example"
BEARER = {"Authorization": f"Bearer {API_KEY}"}


def serve(tmp_path_factory: pytest.TempPathFactory, **settings: Any) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("cors")
    app = create_app(Settings(data_dir=data_dir, workers=1, api_key=API_KEY, **settings))
    with running_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def cors_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory, cors_origins=f"{ALLOWED}, http://localhost:3000")


@pytest.fixture(scope="module")
def rendition_path(cors_url: str) -> str:
    """The unsigned path of a rendition the service has made."""
    with httpx.Client(base_url=cors_url, headers=BEARER, timeout=60) as client:
        waited = client.post("/v1/images?wait=true", files={"file": ("a.jpg", small_jpeg(61))})
        assert waited.status_code == 200, waited.text
        path: str = waited.json()["renditions"][0]["path"]
    return path.split("?")[0]


def preflight(url: str, origin: str, method: str, headers: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def listed(header: str) -> set[str]:
    return {item.strip().lower() for item in header.split(",")}


def test_a_preflight_from_a_listed_origin_is_answered_without_auth(cors_url: str) -> None:
    response = preflight(f"{cors_url}/v1/batches", ALLOWED, "POST", "authorization,content-type")
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    methods = listed(response.headers["access-control-allow-methods"])
    assert methods >= {"get", "head", "post", "delete", "options"}
    allowed_headers = listed(response.headers["access-control-allow-headers"])
    assert allowed_headers >= {
        "authorization", "content-type", "last-event-id", "range", "if-none-match",
    }  # fmt: skip
    other = preflight(f"{cors_url}/v1/images/{'a' * 64}/large.webp", "http://localhost:3000",
                      "GET", "range,if-none-match")  # fmt: skip
    assert other.status_code == 200
    assert other.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_answers_to_a_listed_origin_carry_and_expose_the_headers(
    cors_url: str, rendition_path: str
) -> None:
    response = httpx.get(f"{cors_url}{rendition_path}", headers={**BEARER, "Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = listed(response.headers["access-control-expose-headers"])
    assert exposed >= {"etag", "content-range", "content-length", "accept-ranges", "retry-after"}
    assert "origin" in listed(response.headers["vary"])  # caches keep origins apart
    # A refusal is readable by the page too (it can tell 401 from a network error).
    refused = httpx.get(f"{cors_url}/v1/batches/{'a' * 32}", headers={"Origin": ALLOWED})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED


def test_an_unlisted_origin_gets_no_cors_headers(cors_url: str, rendition_path: str) -> None:
    stranger = "https://elsewhere.example"
    response = httpx.get(f"{cors_url}{rendition_path}", headers={**BEARER, "Origin": stranger})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    refused = preflight(f"{cors_url}/v1/batches", stranger, "POST", "authorization")
    assert_error(refused, 400, "invalid_request")
    assert "origin" in refused.json()["error"]["message"]
    assert "access-control-allow-origin" not in refused.headers


@pytest.fixture(scope="module")
def any_origin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory, cors_origins="*")


def test_a_star_allows_every_origin(any_origin_url: str) -> None:
    response = preflight(f"{any_origin_url}/v1/batches", "https://x.example", "POST", "range")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://x.example")
    health = httpx.get(f"{any_origin_url}/healthz", headers={"Origin": "https://y.example"})
    assert health.headers["access-control-allow-origin"] == "*"


@pytest.fixture(scope="module")
def no_cors_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tmp_path_factory)


def test_without_the_setting_there_are_no_cors_headers(no_cors_url: str) -> None:
    with httpx.Client(base_url=no_cors_url, headers=BEARER, timeout=60) as client:
        created = client.post("/v1/batches", files=[upload("a.jpg", small_jpeg(62))])
        assert created.status_code == 202
        status = client.get(created.json()["status_url"], headers={"Origin": ALLOWED})
        assert status.status_code == 200
    answers = [
        status,
        preflight(f"{no_cors_url}/v1/batches", ALLOWED, "POST", "authorization"),
        httpx.get(f"{no_cors_url}/healthz", headers={"Origin": ALLOWED}),
    ]
    for answer in answers:
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        assert answer.status_code < 500
