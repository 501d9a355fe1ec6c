"""Encoder settings per rendition size (chosen by `python -m bench.encoders`)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageChops

from images import pattern
from pixelmill.core.encode import encoder_options, save_rendition
from pixelmill.core.specs import OutputFormat


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_settings_follow_the_rendition_size() -> None:
    webp, jpeg = OutputFormat.WEBP, OutputFormat.JPEG
    assert encoder_options(webp, 80, 1920 * 1280) == {"quality": 80, "method": 3}
    assert encoder_options(webp, 80, 800 * 533) == {"quality": 80}
    assert encoder_options(jpeg, 85, 150 * 100) == {"quality": 85, "optimize": True}
    assert encoder_options(jpeg, 85, 1920 * 1280) == {"quality": 85}
    assert encoder_options(OutputFormat.PNG, 100, 150 * 100) == {"optimize": False}


def test_a_large_webp_is_encoded_with_the_quicker_method(tmp_path: Path) -> None:
    image = pattern(1600, 1000)
    size = save_rendition(image, tmp_path / "large.webp", OutputFormat.WEBP, 80)
    written = (tmp_path / "large.webp").read_bytes()
    assert size == len(written)
    assert written == encoded(image, "WEBP", quality=80, method=3)
    assert written != encoded(image, "WEBP", quality=80)  # Pillow's default, method 4


def test_a_thumbnail_jpeg_is_huffman_optimised_with_the_same_pixels(tmp_path: Path) -> None:
    image = pattern(150, 100)
    save_rendition(image, tmp_path / "thumbnail.jpg", OutputFormat.JPEG, 85)
    written = (tmp_path / "thumbnail.jpg").read_bytes()
    plain = encoded(image, "JPEG", quality=85)
    assert len(written) < len(plain)
    with Image.open(io.BytesIO(written)) as ours, Image.open(io.BytesIO(plain)) as theirs:
        assert ImageChops.difference(ours.convert("RGB"), theirs.convert("RGB")).getbbox() is None
