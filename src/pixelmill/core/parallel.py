"""One image on several cores: the big resize in strips, the encodes side by side.

Pillow lets go of the GIL while it resamples and while libjpeg, libwebp and libavif encode,
so threads in one worker process use the cores the engine found idle, with no pixels copied
between processes. With one thread everything runs at once, in order, on the caller's
thread: exactly the serial render.

Only the thread that made a ``Lanes`` asks ``should_cancel`` (a worker's cancel check reads
its pipe, which one thread at a time may do); the encodes see a plain flag.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar, cast

from PIL import Image

from pixelmill.errors import Cancelled

T = TypeVar("T")

# How often a render waiting for its encodes asks whether it was cancelled.
_CANCEL_POLL_S = 0.05
# A resize to at least this many pixels runs in STRIPS bands, on as many threads as are free.
_MIN_SPLIT_PIXELS = 250_000
STRIPS = 4
_LANCZOS = Image.Resampling.LANCZOS
_ORDER_UNSURE = 0.01  # how close to 2:1 (height to width) Pillow's pass order is not known
_LANCZOS_SUPPORT = 3.0  # Pillow's LANCZOS reads 3 source pixels each side, times the scale


class Lanes:
    """Runs the encodes of one render: at once (one thread), or on ``threads`` threads (this
    one and ``threads - 1`` helpers; this thread takes on any job no helper has started).

    Use as a context manager: leaving it waits for every encode that started, so no file is
    written after the render returned or raised.
    """

    def __init__(self, threads: int, should_cancel: Callable[[], bool] | None = None) -> None:
        self.threads = max(1, threads)
        self._should_cancel = should_cancel
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._done: list[object] = []  # the values of jobs already run on this thread
        self._jobs: list[tuple[Callable[[], object], Future[object]]] = []
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="pixelmill-render")

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def check_cancel(self) -> None:
        """Raise ``Cancelled`` if the render was asked to stop (a cancel wins), else a
        helper's failure as it is: no more work for a render that cannot finish (caller's
        thread only)."""
        if self._should_cancel is not None and self._should_cancel():
            self._stop.set()
            raise Cancelled("cancelled between renditions")
        for _, future in self._jobs:
            if future.done() and not future.cancelled() and future.exception() is not None:
                self._stop.set()
                raise cast(BaseException, future.exception())

    def run(self, job: Callable[[], T]) -> None:
        """Run ``job`` now (one thread) or hand it to a helper; ``results`` gives its value."""
        if self._pool is None:
            self._done.append(job())
            return
        self._jobs.append((job, self._pool.submit(self._guarded, job)))

    def _guarded(self, job: Callable[[], T]) -> T:
        if self._stop.is_set():
            raise Cancelled("cancelled between renditions")
        return job()

    def results(self) -> list[object]:
        """Every job's value, in the order they were given. Jobs no helper has started run
        here first, then the running ones are waited for; a failure is raised as it is."""
        values: dict[int, object] = dict(enumerate(self._done))
        given = len(values)
        for index, (job, future) in enumerate(self._jobs, start=given):
            if future.cancel():
                self.check_cancel()
                values[index] = job()
        for index, (_, future) in enumerate(self._jobs, start=given):
            if index not in values:
                values[index] = self._wait(future)
        return [values[index] for index in range(len(values))]

    def _wait(self, future: Future[object]) -> object:
        while True:
            try:
                return future.result(timeout=_CANCEL_POLL_S)
            except TimeoutError:
                self.check_cancel()

    def resize(self, image: Image.Image, size: tuple[int, int], reducing_gap: float) -> Image.Image:
        """LANCZOS ``image`` to ``size``; a big one in ``STRIPS`` bands of rows.

        The bands are the same whatever the thread count, so the pixels are too. Each band
        runs the two passes in the order one resize does, so it matches one resize to within
        a level (a band's box places its rows with its own rounding).
        Bands no free thread has started are resized on this thread.
        """
        if not _splittable(image.size, size, reducing_gap):
            return image.resize(size, _LANCZOS, reducing_gap=reducing_gap)
        mode = image.mode
        if mode in ("LA", "RGBA"):  # Pillow resizes these premultiplied: do that once
            image = image.convert("La" if mode == "LA" else "RGBa")
        width, height = size
        scale = image.height / height
        bounds = [height * i // STRIPS for i in range(STRIPS + 1)]

        # What LANCZOS reads above and below an output row, in source rows, plus a spare.
        reach = math.ceil(_LANCZOS_SUPPORT * max(scale, 1.0)) + 2

        across_first = _across_first(image.size)

        def band(top: int, bottom: int) -> Image.Image:
            # The two passes in the order one resize would run them (an 8-bit image lies
            # between them), over the source rows this band's output reads.
            first = max(0, math.floor(top * scale) - reach)
            last = min(image.height, math.ceil(bottom * scale) + reach)
            rows = image.crop((0, first, image.width, last))
            if across_first:
                rows = rows.resize((width, last - first), _LANCZOS)
            box = (0.0, top * scale - first, float(rows.width), bottom * scale - first)
            down = rows.resize((rows.width, bottom - top), _LANCZOS, box)
            return down if across_first else down.resize((width, bottom - top), _LANCZOS)

        pairs = list(itertools.pairwise(bounds))
        later = [None if self._pool is None else self._pool.submit(band, *p) for p in pairs[1:]]
        bands = {0: band(*pairs[0])}
        for index, future in enumerate(later, start=1):  # bands no helper has started
            if future is None or future.cancel():
                bands[index] = band(*pairs[index])
        for index, future in enumerate(later, start=1):
            if index not in bands and future is not None:
                bands[index] = future.result()
        out = Image.new(image.mode, size)
        for index, top in enumerate(bounds[:-1]):
            out.paste(bands[index], (0, top))
        return out if out.mode == mode else out.convert(mode)


def _across_first(source: tuple[int, int]) -> bool:
    """Whether Pillow 13 resizes an image of this shape across first (measured: it goes down
    first once the image is more than twice as tall as wide; see ``_splittable``)."""
    return source[1] < 2 * source[0]


def _splittable(source: tuple[int, int], size: tuple[int, int], reducing_gap: float) -> bool:
    """Big enough to be worth it, and shrunk by less than twice the reducing gap (beyond
    that Pillow reduces first, in blocks aligned to each band rather than to the image)."""
    width, height = size
    if width * height < _MIN_SPLIT_PIXELS or height < 2 * STRIPS:
        return False
    if abs(source[1] / source[0] - 2) < _ORDER_UNSURE:
        return False  # near 2:1 Pillow's pass order depends on the exact sizes: one piece
    return all(s / t < 2 * reducing_gap for s, t in zip(source, size, strict=True))


def timed(job: Callable[[], T]) -> Callable[[], tuple[T, float]]:
    """``job`` that also returns how long it ran (each thread times its own work)."""

    def run() -> tuple[T, float]:
        began = time.perf_counter()
        return job(), time.perf_counter() - began

    return run
