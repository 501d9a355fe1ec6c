"""``Client`` on the routes that choose, list and erase: presets/formats on uploads,
``GET /v1/presets``, ``GET /v1/batches``, ``DELETE /v1/batches/{id}`` and
``DELETE /v1/images/{sha256}`` (real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from api_helpers import small_jpeg
from client_service import client_fixture, service_fixture  # noqa: F401
from pixelmill.client import Client, PixelmillError


def write_jpeg(folder: Path, seed: int) -> Path:
    path = folder / f"image-{seed}.jpg"
    path.write_bytes(small_jpeg(seed, (640, 480)))
    return path


def test_presets_and_formats_choose_the_renditions(client: Client, tmp_path: Path) -> None:
    """presets/formats travel as comma-separated fields: only thumbnail.webp is made."""
    path = write_jpeg(tmp_path, 800)
    accepted = client.create_batch([path], presets=["thumbnail"], formats=["webp"])
    [image] = client.wait(accepted.batch_id, timeout=60).images
    assert image.status == "done"
    assert [(r.name, r.format) for r in image.renditions] == [("thumbnail", "webp")]


def test_batches_are_listed_newest_first_page_by_page(client: Client, tmp_path: Path) -> None:
    """list_batches pages with a cursor, newest first; iter_batches walks every page."""
    created = []
    for seed in range(900, 903):
        created.append(client.create_batch([write_jpeg(tmp_path, seed)]).batch_id)
        time.sleep(0.01)  # distinct creation times, so "newest first" has one answer
    page = client.list_batches(limit=2)
    assert len(page.batches) == 2 and page.next_cursor is not None
    assert [b.batch_id for b in page.batches] == created[::-1][:2]
    listed = [batch.batch_id for batch in client.iter_batches(page_size=2)]
    assert listed[:3] == created[::-1]
    assert len(listed) == len(set(listed))


def test_deleted_batches_and_images_are_gone(client: Client, tmp_path: Path) -> None:
    """After delete_batch and delete_image both are not_found, and so is a second delete."""
    path = write_jpeg(tmp_path, 1000)
    batch = client.wait(client.create_batch([path]).batch_id, timeout=60)
    [image] = batch.images
    assert image.sha256 is not None
    client.delete_batch(batch.batch_id)
    client.delete_image(image.sha256)
    for call in (
        lambda: client.get_batch(batch.batch_id),
        lambda: client.manifest(image.sha256 or ""),
        lambda: client.delete_batch(batch.batch_id),
    ):
        with pytest.raises(PixelmillError) as raised:
            call()
        assert raised.value.code == "not_found"


def test_the_presets_catalogue(client: Client) -> None:
    """presets() reads the catalogue: the default presets and every output format."""
    catalogue = client.presets()
    assert {p.name for p in catalogue.presets} == {"thumbnail", "medium", "large"}
    assert {"jpeg", "webp", "avif", "png"} <= set(catalogue.formats)
    large = next(p for p in catalogue.presets if p.name == "large")
    assert (large.width, large.height, large.fit) == (1920, 1920, "inside")
