"""GET /v1/batches through a real uvicorn, on both stores: pages, order, cursor, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import test_faults_redis
from api_helpers import assert_error, check_invariant, small_jpeg, upload, wait_for_batch
from api_server import app_client, one_worker_settings
from pixelmill.config import Settings
from test_faults_redis import ThrowawayRedis

throwaway_redis = test_faults_redis.throwaway_redis  # the fixture, shared

BATCH_STATUS_FIELDS = {
    "batch_id", "status", "total", "completed", "duplicates", "failed", "cancelled",
    "pending", "progress", "created_at", "finished_at",
}  # fmt: skip


@pytest.fixture(params=["sqlite", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    with app_client(one_worker_settings(request, tmp_path / "data", request.param)) as client:
        yield client


def new_batch(client: httpx.Client, seed: int) -> str:
    """A batch of one image (rendered) or, for a negative seed, of one failed upload."""
    files = (
        [upload("a.txt", b"not an image", "text/plain")]
        if seed < 0
        else [upload(f"{seed}.jpg", small_jpeg(seed))]
    )
    response = client.post("/v1/batches", files=files)
    assert response.status_code == 202, response.text
    batch_id: str = response.json()["batch_id"]
    return batch_id


def page(client: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    response = client.get("/v1/batches", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"batches", "next_cursor"}
    for batch in body["batches"]:
        assert set(batch) == BATCH_STATUS_FIELDS, "a batch status without its images"
        check_invariant(batch)
    return body["batches"], body["next_cursor"]


def ids(batches: list[dict[str, Any]]) -> list[str]:
    return [batch["batch_id"] for batch in batches]


def test_seven_batches_come_three_at_a_time_newest_first(client: httpx.Client) -> None:
    created = [new_batch(client, seed) for seed in (1, 2, -1, 3, 4, -2, 5)]
    for batch_id in created:
        wait_for_batch(client, batch_id)
    newest_first = created[::-1]
    first, cursor = page(client, limit=3)
    assert ids(first) == newest_first[:3] and cursor is not None
    # Created between two pages: page 2 neither repeats nor skips an older batch.
    latecomer = new_batch(client, 6)
    second, cursor = page(client, limit=3, cursor=cursor)
    assert ids(second) == newest_first[3:6] and cursor is not None
    third, cursor = page(client, limit=3, cursor=cursor)
    assert (ids(third), cursor) == (newest_first[6:], None)
    fresh, _ = page(client, limit=3)
    assert ids(fresh) == [latecomer, *newest_first[:2]]
    # What a listed batch says is what its own status says (without images).
    listed = {batch["batch_id"]: batch for batch in first + second + third}
    for batch_id in created:
        own = client.get(f"/v1/batches/{batch_id}").json()
        assert listed[batch_id] == {k: v for k, v in own.items() if k != "images"}
    assert sorted(b["failed"] for b in listed.values()) == [0, 0, 0, 0, 0, 1, 1]


def test_the_default_page_holds_fifty(client: httpx.Client) -> None:
    created = [new_batch(client, -1) for _ in range(51)]  # failed uploads: finished at once
    first, cursor = page(client)
    assert ids(first) == created[:0:-1] and cursor is not None
    rest, cursor = page(client, cursor=cursor)
    assert (ids(rest), cursor) == (created[:1], None)
    assert ids(page(client, limit=200)[0]) == created[::-1]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-3",
        "limit=abc",
        "limit=",
        "cursor=junk",
        "cursor=",
        "cursor=2026-01-01T00:00:00.000Z",
        "cursor=2026-01-01T00:00:00.000Z_not-an-id",
        "cursor=2026-01-01 00:00:00_" + "0" * 32,
        "cursor=" + "A" * 600,
        "offset=10",
    ],
)
def test_bad_limits_cursors_and_parameters_are_400(client: httpx.Client, query: str) -> None:
    new_batch(client, -1)
    response = client.get(f"/v1/batches?{query}")
    assert_error(response, 400, "invalid_request")
    message = response.json()["error"]["message"]
    assert "\\d" not in message and "[0-9" not in message, "no regular expression for people"
    assert query.split("=")[0] in message


def test_no_batches_is_an_empty_page(client: httpx.Client) -> None:
    assert page(client) == ([], None)


def test_the_openapi_document_names_the_listing_and_deleting_routes(
    client: httpx.Client,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths["/v1/batches"]["get"]
    assert listing["operationId"] == "list_batches"
    assert {"200", "400", "401"} <= set(listing["responses"])
    assert "422" not in listing["responses"]
    forget = paths["/v1/batches/{batch_id}"]["delete"]
    assert forget["operationId"] == "delete_batch"
    assert {"204", "404"} <= set(forget["responses"])
    erase = paths["/v1/images/{sha256}"]["delete"]
    assert erase["operationId"] == "delete_image"
    assert {"204", "404", "409"} <= set(erase["responses"])


def test_the_new_routes_need_the_key_and_answer_503_while_the_store_is_down(
    throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", workers=1, store=throwaway_redis.url, api_key="k"
    )
    routes = [
        ("GET", "/v1/batches", "/v1/batches", "get"),
        ("DELETE", f"/v1/batches/{'0' * 32}", "/v1/batches/{batch_id}", "delete"),
    ]
    with app_client(settings) as client:
        schema = client.get("/openapi.json").json()
        for method, url, _, _ in [*routes, ("DELETE", f"/v1/images/{'0' * 64}", "", "")]:
            assert_error(client.request(method, url), 401, "unauthorized")
        client.headers["Authorization"] = "Bearer k"
        assert client.get("/v1/batches").status_code == 200
        throwaway_redis.shut_down()
        for method, url, path, operation in routes:
            assert_error(client.request(method, url), 503, "unavailable")
            assert "503" in schema["paths"][path][operation]["responses"]
