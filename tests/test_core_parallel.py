"""One image on several threads: the same files as one thread, really side by side,
cancellable, and failures raised as they are."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import pixelmill.core.render as render_module
from images import pattern, save
from pixelmill.core import OutputFormat, Preset, RenderSpec, render_renditions
from pixelmill.core.encode import TEMP_PREFIX
from pixelmill.core.parallel import STRIPS, Lanes
from pixelmill.core.specs import Fit, Gravity
from pixelmill.errors import Cancelled

SHA = "cd" * 32
WITH_CROPS = RenderSpec(
    presets=(
        Preset("large", 1280, 1280),
        Preset("medium", 640, 640),
        Preset("square", 400, 400, fit=Fit.COVER, gravity=Gravity.ATTENTION),
        Preset("banner", 900, 300, fit=Fit.COVER, gravity=Gravity.ENTROPY),
    ),
    formats=(OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.PNG),
)


def _noise(width: int, height: int, mode: str) -> Image.Image:
    """Busy pixels: rounding differences between ways of resizing show up in them."""
    image = Image.effect_noise((width, height), 60).convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.effect_noise((width, height), 90))
    return image


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("name", "mode", "size", "spec"),
    [
        ("photo.jpg", "RGB", (3000, 2000), RenderSpec()),
        ("alpha.png", "RGBA", (1800, 1400), WITH_CROPS),
        ("grey.png", "L", (1700, 2300), WITH_CROPS),
    ],
)
def test_every_thread_count_writes_the_same_bytes(
    tmp_path: Path, name: str, mode: str, size: tuple[int, int], spec: RenderSpec
) -> None:
    """Threads change who does the work, never a byte of what is written. (Pillow keeps a
    save's options on the image object: two encodes sharing one object mixed them up.)"""
    source = save(_noise(*size, mode), tmp_path / name, "PNG" if mode != "RGB" else "JPEG")
    written = {}
    for threads in (1, 2, 3):
        out = tmp_path / f"out{threads}"
        result = render_renditions(source, out, spec, SHA, threads=threads)
        written[threads] = (_files(out), result.renditions, result.placeholder)
    assert written[1] == written[2] == written[3]
    assert len(written[1][0]) == len(spec.rendition_names())


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(200, 1600),
    height=st.integers(200, 1600),
    shrink=st.floats(1.0, 3.99),
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA"]),
)
def test_bands_are_the_same_on_any_thread_count_and_as_exact_as_one_resize(
    width: int, height: int, shrink: float, mode: str
) -> None:
    image = _noise(width, height, mode)
    size = (max(1, round(width / shrink)), max(1, round(height / shrink)))
    with Lanes(1) as one, Lanes(2) as two, Lanes(4) as four:
        bands = [lanes.resize(image, size, 2.0) for lanes in (one, two, four)]
    assert bands[0].tobytes() == bands[1].tobytes() == bands[2].tobytes()
    assert (bands[0].mode, bands[0].size) == (mode, size)
    if mode in ("RGB", "L"):  # as close to exact LANCZOS as one resize (alpha: premultiplied)
        whole = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        exact = _exact_lanczos(image, size)
        assert _mean_error(bands[0], exact) <= _mean_error(whole, exact) + 0.02


def _exact_lanczos(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Pillow's LANCZOS in floating point, without its 8-bit step between the passes."""
    pixels = np.asarray(image, dtype=np.float64)
    vertical, horizontal = _weights(image.height, size[1]), _weights(image.width, size[0])
    if pixels.ndim == 2:
        return np.asarray(vertical @ pixels @ horizontal.T)
    return np.stack([vertical @ pixels[..., c] @ horizontal.T for c in range(3)], axis=-1)


def _weights(source: int, target: int) -> np.ndarray:
    scale = source / target
    support = 3 * max(scale, 1.0)
    weights = np.zeros((target, source))
    for row in range(target):
        centre = (row + 0.5) * scale
        low, high = max(0, int(centre - support + 0.5)), min(source, int(centre + support + 0.5))
        x = (np.arange(low, high) - centre + 0.5) / max(scale, 1.0)
        taps = np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
        weights[row, low:high] = taps / taps.sum()
    return weights


def _mean_error(image: Image.Image, exact: np.ndarray) -> float:
    return float(np.abs(np.asarray(image, dtype=np.float64) - np.clip(exact, 0, 255)).mean())


def test_a_big_resize_is_split_into_bands_that_run_on_free_threads() -> None:
    image = pattern(2400, 1600)
    seen: list[str] = []
    original = image.crop

    def crop(*args: object, **kwargs: object) -> Image.Image:
        seen.append(threading.current_thread().name)  # each band crops its source rows
        return original(*args, **kwargs)  # type: ignore[arg-type]

    image.crop = crop  # type: ignore[method-assign]
    with Lanes(2) as lanes:
        lanes.resize(image, (1200, 800), 2.0)
    assert len(seen) == STRIPS
    assert len(set(seen)) == 2, seen  # this thread and a free one


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((0, 0, 2464, 3248), (1457, 1920)),  # Pillow goes across, then down
        ((0, 0, 1232, 3248), (728, 1920)),  # more than twice as tall: down, then across
    ],
)
def test_bands_run_the_passes_in_the_order_one_resize_does(
    box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    """A fax-like black-and-white page: the order of the passes shows (LANCZOS overshoots
    are clipped to 8 bits between them). In the other order, the bands differed from one
    resize by 24 levels on the whole page and on its tall half; in Pillow's, within 1."""
    page = Image.new("L", (2464, 3248), 255)
    for top in range(0, 3248, 24):
        page.paste(0, (0, top, 2464, top + 3))
    for left in range(0, 2464, 17):
        page.paste(0, (left, 0, left + 2, 3248))
    page = page.crop(box)
    with Lanes(1) as lanes:
        banded = np.asarray(lanes.resize(page, size, 2.0), dtype=np.int16)
    whole = np.asarray(page.resize(size, Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(banded - whole).max() <= 1


def test_encodes_run_on_other_threads_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = save(pattern(2400, 1600), tmp_path / "p.jpg", "JPEG")
    threads_seen: list[str] = []
    real_save = render_module.save_rendition

    def recording_save(*args: object, **kwargs: object) -> int:
        threads_seen.append(threading.current_thread().name)
        return real_save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render_module, "save_rendition", recording_save)
    render_renditions(source, tmp_path / "one", RenderSpec(), SHA, threads=1)
    assert set(threads_seen) == {threading.current_thread().name}
    threads_seen.clear()
    render_renditions(source, tmp_path / "two", RenderSpec(), SHA, threads=2)
    assert len(threads_seen) == 6
    assert "pixelmill-render_0" in threads_seen  # the helper encodes while this thread resizes
    assert set(threads_seen) <= {"pixelmill-render_0", threading.current_thread().name}


def test_a_cancel_stops_the_render_and_every_thread_has_ended(tmp_path: Path) -> None:
    """Cancelled after the first rendition: ``Cancelled``, asked only on the caller's
    thread (a worker's check reads its pipe), and no encode still running afterwards."""
    source = save(pattern(2400, 1600), tmp_path / "p.jpg", "JPEG")
    askers: list[str] = []

    def should_cancel() -> bool:
        askers.append(threading.current_thread().name)
        return len(askers) > 1

    with pytest.raises(Cancelled):
        render_renditions(
            source, tmp_path / "out", RenderSpec(), SHA, should_cancel=should_cancel, threads=2
        )
    assert set(askers) == {threading.current_thread().name}
    assert not [t for t in threading.enumerate() if t.name.startswith("pixelmill-render")]
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_a_write_error_on_a_thread_is_raised_unchanged(tmp_path: Path) -> None:
    """The output side's OSError reaches the caller as it is (not the image's fault)."""
    source = save(pattern(2400, 1600), tmp_path / "p.jpg", "JPEG")
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")
    with pytest.raises(OSError):
        render_renditions(source, blocked, RenderSpec(), SHA, threads=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("pixelmill-render")]


def test_a_helper_failure_stops_the_render_before_the_next_rendition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed encode on a helper is raised at the next rendition, not after every later
    resize and encode has run for nothing."""
    source = save(pattern(2400, 1600), tmp_path / "p.jpg", "JPEG")
    saved: list[str] = []
    real_save = render_module.save_rendition
    real_cascade = render_module._cascade_source

    def failing_save(image: Image.Image, path: Path, *args: object) -> int:
        saved.append(path.name)
        if path.name == "large.webp":
            raise OSError(28, "No space left on device")
        return real_save(image, path, *args)  # type: ignore[arg-type]

    def slow_cascade(*args: object) -> Image.Image:
        time.sleep(0.2)  # the helper has failed long before the next rendition starts
        return real_cascade(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(render_module, "save_rendition", failing_save)
    monkeypatch.setattr(render_module, "_cascade_source", slow_cascade)
    with pytest.raises(OSError, match="No space"):
        render_renditions(source, tmp_path / "out", RenderSpec(), SHA, threads=2)
    assert not [name for name in saved if name.startswith("thumbnail")]


def test_a_cancel_wins_over_a_helper_failure() -> None:
    """Cancelled by the user while a helper failed: the image ends cancelled, as asked."""

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with Lanes(2, should_cancel=lambda: True) as lanes:
        lanes.run(fail)
        time.sleep(0.1)  # the helper has failed
        with pytest.raises(Cancelled):
            lanes.check_cancel()
