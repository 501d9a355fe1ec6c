"""The Celery application both sides of the distributed engine build from the same settings.

The service only sends ``pixelmill.render_image`` messages (by name: it never imports the
task); ``pixelmill worker`` registers and runs the task. Configured for no lost work: a
message is acknowledged only once its image's outcome is written (acks late), a worker
that dies gives its message back (reject on worker lost), each worker process holds one
message at a time (prefetch 1), and on a Redis broker an unacknowledged message comes back
after the visibility timeout (a dead machine), swept for every few seconds.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from pixelmill.config import Settings
from pixelmill.core.specs import Fit, Gravity, Limits, OutputFormat, Preset, RenderSpec
from pixelmill.preflight import redact_url as redact_url
from pixelmill.storage import Storage
from pixelmill.store.base import WorkCoordination

TASK_NAME = "pixelmill.render_image"
# Seconds the hard time limit leaves after the soft one: the task's own clean-up, then kill.
HARD_LIMIT_GRACE_S = 10.0


def is_redis_broker(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redis broker: redeliver a dead worker's messages after the visibility timeout.

    kombu sweeps unacknowledged messages every ``interval * throttle`` seconds (100 s by
    default); a throttle of 1 and an interval of a tenth of the timeout (1..10 s) bring a
    dead worker's images back within about the timeout. Every broker key lives under the
    store's prefix, so deployments (and tests) sharing one Redis do not see each other's.
    """
    if not is_redis_broker(settings.broker_url or ""):
        return {}
    timeout = settings.effective_visibility_timeout_s
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1, min(10, int(timeout / 10))),
        "unacked_restore_throttle": 1,
        "global_keyprefix": f"{settings.redis_prefix}celery:",
    }


def make_app(settings: Settings) -> Celery:
    """The Celery app for ``settings`` (broker, queue, limits); no result backend."""
    if not settings.broker_url:
        raise ValueError("the celery engine needs PIXELMILL_BROKER_URL")
    app = Celery("pixelmill", broker=settings.broker_url, set_as_current=False)
    queue = settings.celery_queue
    soft_limit = settings.image_timeout_s
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        # Control messages (ping) stay among the workers of this queue.
        control_exchange=f"{queue}.control",
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_max_tasks_per_child=settings.max_tasks_per_child,
        worker_send_task_events=False,
        task_soft_time_limit=soft_limit,
        task_time_limit=soft_limit + HARD_LIMIT_GRACE_S,
    )
    return app


def drop_original(store: WorkCoordination, storage: Storage, sha256: str, image_id: str) -> None:
    """``image_id`` is final: the last image needing ``originals/<sha256>`` deletes it, under
    the store's lock, so an upload of the same bytes meanwhile stores it again after."""
    if store.release_original(sha256, image_id) != 0:
        return
    try:
        storage.delete_original(sha256)
    finally:
        store.original_deleted(sha256)


def spec_to_dict(spec: RenderSpec) -> dict[str, Any]:
    """``spec`` as the JSON a task message carries (the service's spec rules the render)."""
    return {
        "presets": [_preset_to_dict(p) for p in spec.presets],
        "formats": [f.value for f in spec.formats],
        "quality": [[f.value, q] for f, q in spec.quality],
        "background": list(spec.background),
        "keep_metadata": spec.keep_metadata,
        "limits": {
            "max_bytes": spec.limits.max_bytes,
            "max_pixels": spec.limits.max_pixels,
            "timeout_s": spec.limits.timeout_s,
        },
    }


def spec_from_dict(data: dict[str, Any]) -> RenderSpec:
    """The RenderSpec ``spec_to_dict`` described; ValueError/KeyError on a bad message."""
    background = tuple(int(c) for c in data["background"])
    if len(background) != 3:
        raise ValueError("background needs three channels")
    limits = data["limits"]
    return RenderSpec(
        presets=tuple(_preset_from_message(p) for p in data["presets"]),
        formats=tuple(OutputFormat(f) for f in data["formats"]),
        quality=tuple((OutputFormat(f), int(q)) for f, q in data["quality"]),
        background=(background[0], background[1], background[2]),
        keep_metadata=bool(data["keep_metadata"]),
        limits=Limits(
            max_bytes=int(limits["max_bytes"]),
            max_pixels=int(limits["max_pixels"]),
            timeout_s=float(limits["timeout_s"]),
        ),
    )


def _preset_to_dict(preset: Preset) -> dict[str, Any]:
    return {
        "name": preset.name,
        "width": preset.width,
        "height": preset.height,
        "fit": preset.fit.value,
        "gravity": preset.gravity.value,
        "formats": None if preset.formats is None else [f.value for f in preset.formats],
        "quality": [[f.value, q] for f, q in preset.quality],
    }


def _preset_from_message(item: Any) -> Preset:
    """A preset as ``_preset_to_dict`` wrote it, or ``[name, width, height]`` (older messages)."""
    if isinstance(item, list):
        name, width, height = item
        return Preset(str(name), int(width), int(height))
    formats = item.get("formats")
    return Preset(
        str(item["name"]),
        int(item["width"]),
        int(item["height"]),
        Fit(item.get("fit", Fit.INSIDE.value)),
        Gravity(item.get("gravity", Gravity.CENTER.value)),
        None if formats is None else tuple(OutputFormat(f) for f in formats),
        tuple((OutputFormat(f), int(q)) for f, q in item.get("quality", [])),
    )
