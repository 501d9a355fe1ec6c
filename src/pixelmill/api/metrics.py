"""Prometheus metrics, in a registry per app (so two apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from pixelmill.core.specs import STAGES, RenderResult
from pixelmill.states import ImageStatus

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Seconds: from a thumbnail of a tiny file to a 100 MP decode.
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


IMAGES_HELP = "Images that reached a final status."


class _StoreImageCounts(Collector):
    """``pixelmill_images_total{status}`` read from the shared store at each scrape."""

    def __init__(self, image_stats: Callable[[], dict[str, int]]) -> None:
        self._image_stats = image_stats

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily("pixelmill_images", IMAGES_HELP, labels=["status"])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("pixelmill_images", IMAGES_HELP, labels=["status"])
        try:
            counts = self._image_stats()
        except Exception:  # the store is down: /healthz says so, the scrape still answers
            return
        for status in ImageStatus:
            if status.is_final:
                family.add_metric([status.value], float(counts.get(status.value, 0)))
        yield family


class Metrics:
    """The service's counters, gauges and stage-time histograms."""

    def __init__(self, image_stats: Callable[[], dict[str, int]] | None = None) -> None:
        """``image_stats``: where ``pixelmill_images_total`` comes from when workers elsewhere
        finish the images (the store's counts); this process's own count is then unused."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.images = Counter(
            "pixelmill_images",
            IMAGES_HELP,
            ["status"],
            registry=self.registry if image_stats is None else CollectorRegistry(),
        )
        if image_stats is not None:
            self.registry.register(_StoreImageCounts(image_stats))
        self.stage_seconds = Histogram(
            "pixelmill_stage_seconds",
            "Time per rendering stage of one image.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.image_seconds = Histogram(
            "pixelmill_image_seconds",
            "Time from queueing an image to its final status.",
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "pixelmill_bytes_in", "Bytes of uploaded files spooled.", registry=self.registry
        )
        self.bytes_out = Counter(
            "pixelmill_bytes_out", "Bytes of renditions written.", registry=self.registry
        )
        self.batches = Counter("pixelmill_batches", "Batches created.", registry=self.registry)
        self.queue_depth = Gauge(
            "pixelmill_queue_depth", "Images waiting for a worker.", registry=self.registry
        )
        self.in_flight = Gauge(
            "pixelmill_in_flight", "Images being rendered now.", registry=self.registry
        )
        for status in ImageStatus:
            if status.is_final:
                self.images.labels(status=status.value)  # export zeros from the start
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)

    def watch_engine(self, queued: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read the engine's queue depth and in-flight count at every scrape."""
        self.queue_depth.set_function(lambda: float(queued()))
        self.in_flight.set_function(lambda: float(in_flight()))

    def observe_outcome(
        self, status: ImageStatus, result: RenderResult | None, elapsed_s: float
    ) -> None:
        self.images.labels(status=status.value).inc()
        self.image_seconds.observe(elapsed_s)
        if status is ImageStatus.DONE and result is not None:
            timings = result.timings
            for stage in STAGES:
                self.stage_seconds.labels(stage=stage).observe(getattr(timings, stage) / 1000)
            self.bytes_out.inc(sum(r.bytes for r in result.renditions))

    def render(self) -> bytes:
        return generate_latest(self.registry)
