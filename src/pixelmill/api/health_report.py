"""What ``/healthz`` reports: every part the service needs, and why it is not ok.

Built from values the service already holds (the celery engine asks its broker in the
background), so the probe answers at once even when the store or the broker hangs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixelmill.api.service import BatchService


def health_report(service: BatchService) -> dict[str, Any]:
    """The /healthz body; ``status`` is ``ok`` only when everything answers."""
    try:
        store_ok = service.store.ping()
    except Exception:  # a store that cannot even answer ping is unreachable, not a 500
        store_ok = False
    engine = service.engine
    engine_ok = engine.is_alive() and service.feeder_alive() and service.writes.is_alive()
    celery = service.celery
    workers = service.settings.workers if celery is None else celery.workers()
    unwritten = service.writes.waiting
    storage_ok = service.storage_probe.reachable()
    healthy = store_ok and storage_ok and engine_ok and not unwritten
    report: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "store": "ok" if store_ok else "unreachable",
        "storage": "ok" if storage_ok else "unreachable",
        "engine": "ok" if engine_ok else "stopped",
        "engine_kind": service.settings.engine,
        "workers": workers,
        "queued": engine.queued,
        "in_flight": engine.in_flight,
        "unwritten_outcomes": unwritten,
    }
    unsent_reason = None
    if celery is not None:
        # Images answered 202 that the broker does not have yet: not silently pending.
        report["unsent"] = service.backlog() + celery.engine.unsent
        error = celery.engine.enqueue_error
        if report["unsent"] and error:
            report["status"] = "unavailable"
            unsent_reason = (
                f"{report['unsent']} image(s) wait to be sent to the workers: {_part_down(error)}"
            )
        if not engine.is_alive():
            report["engine"] = "unreachable"
    if unwritten:
        # Reachable yet refusing writes (a full disk under SQLite) is still not healthy.
        report["store"] = "failing" if store_ok else "unreachable"
        report["reason"] = (
            f"{unwritten} image outcome(s) wait for the store: {service.writes.last_error}"
        )
    elif not store_ok:
        report["reason"] = "the store does not answer"
    elif not storage_ok:
        report["reason"] = "the storage does not answer"
    elif report["engine"] == "unreachable":
        report["reason"] = "the broker does not answer"
    elif not engine_ok:
        report["reason"] = "the engine is not running"
    elif unsent_reason:
        report["reason"] = unsent_reason
    return report


def _part_down(error: str) -> str:
    """Which part an enqueue error names (``Type: details``), without its details: the
    probe needs no key, and the log has the endpoint, bucket and broker URL."""
    if error.startswith("StorageUnavailable"):
        return "the storage does not answer"
    if error.startswith("StoreUnavailable"):
        return "the store does not answer"
    return "the broker does not answer"
