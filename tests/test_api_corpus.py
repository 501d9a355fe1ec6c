"""Real photos and damaged files from the corpus through the HTTP service."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api_helpers import upload, wait_for_batch
from api_server import app_client
from images import format_by_magic
from pixelmill.config import Settings

pytestmark = pytest.mark.corpus

# Few and small, to keep the suite quick; the core's corpus tests cover the rest.
PHOTOS = (
    "photos/Channel_digital_image_CMYK_color.jpg",
    "photos/5_webp_a.webp",
    "photos/kodim01.png",
    "photos/image.heic",
    "exif_orientation/Portrait_6.jpg",
)
REJECTS = (
    "corrupt/sharp/truncated.png",
    "corrupt/thumbor/image_invalid.jpg",
    "corrupt/fuzzdb/POC_img_phpinfo-CR.gif",
    "photos/imagecompression_info_LICENSE.txt",
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with app_client(Settings(data_dir=tmp_path / "data", store="sqlite", workers=2)) as client:
        yield client


def test_corpus_photos_render_and_damaged_files_fail_cleanly(
    client: httpx.Client, corpus: Path
) -> None:
    files = [upload(Path(p).name, (corpus / p).read_bytes(), "application/octet-stream")
             for p in PHOTOS + REJECTS]  # fmt: skip
    created = client.post("/v1/batches", files=files)
    assert created.status_code == 202
    status = wait_for_batch(client, created.json()["batch_id"], timeout_s=90)
    outcomes = {image["filename"]: image for image in status["images"]}
    for path in PHOTOS:
        image = outcomes[Path(path).name]
        assert image["status"] == "done", image
        for rendition in image["renditions"]:
            data = client.get(rendition["path"]).content
            assert format_by_magic(data) == rendition["format"]
    for path in REJECTS:
        image = outcomes[Path(path).name]
        assert image["status"] == "failed", image
        assert image["error"]["code"] in ("corrupt_image", "unsupported_format")
    # Stored as 1800x1200 with EXIF orientation 6: upright, it is a portrait.
    portrait = outcomes["Portrait_6.jpg"]
    large = next(r for r in portrait["renditions"] if r["name"] == "large")
    with Image.open(io.BytesIO(client.get(large["path"]).content)) as decoded:
        assert decoded.size == (large["width"], large["height"]) == (1200, 1800)
