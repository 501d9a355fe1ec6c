"""The Redis batch store: every state change is one Lua script, so it is atomic.

Keys, all under the prefix (``pixelmill:`` by default):

    {prefix}batch:{batch_id}                 hash: counters, status, times, version, the
                                             request's presets/formats (absent: all)
    {prefix}batch:{batch_id}:images          list: image ids in upload order
    {prefix}batch:{batch_id}:changes         sorted set: finished image ids by their version
    {prefix}image:{batch_id}:{image_id}      hash: one image (JSON for error/renditions/timings)
    {prefix}unfinished                       sorted set: unfinished batch ids by creation order
    {prefix}batch_seq                        counter giving that creation order
    {prefix}stats                            hash: images_<status> counts (all time)
    {prefix}callbacks_owed                   sorted set: finished batches owing a callback
    {prefix}batches                          sorted set: "<created_at> <batch_id>" (listing)
    {prefix}batches_trimmed                  string: where the listing's trim stopped

plus the distributed engine's keys (``redis_coordination``), and the pub/sub channel
``{prefix}events:{batch_id}`` carrying each new version.

The scripts derive image keys from the batch's list, which is fine on one Redis server; a
Redis Cluster would need hash tags to keep a batch's keys in one slot.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from pixelmill.states import BatchStatus, ImageStatus
from pixelmill.store._common import (
    dump_choice,
    dump_json,
    load_choice,
    load_json,
    require_final,
    unavailable_on,
    utc_now,
)
from pixelmill.store.base import (
    CANCELLED_ERROR,
    BatchRecord,
    ImageRecord,
    NewImage,
    Transition,
    listing_cursor,
)
from pixelmill.store.redis_changes import ChangeListener
from pixelmill.store.redis_coordination import RedisCoordination
from pixelmill.store.redis_listing import (
    DELETE_BATCH,
    TRIM_INDEX,
    TRIM_PER_CREATE,
    index_member,
    list_batch_fields,
)
from pixelmill.store.redis_scripts import (
    CANCEL,
    CREATE,
    FINISH_IMAGE,
    MARK_PROCESSING,
    READ_BATCH,
    READ_CHANGES,
)

DEFAULT_TTL_S = 7 * 86400
# A waiter re-reads the version this often even without a message (a dropped connection).
POLL_INTERVAL_S = 1.0

_COUNTER_FIELDS = ("total", "completed", "duplicates", "failed", "cancelled", "pending")
_BUMPS = {
    ImageStatus.DONE: "completed",
    ImageStatus.DUPLICATE: "completed,duplicates",
    ImageStatus.FAILED: "failed",
    ImageStatus.CANCELLED: "cancelled",
}


@unavailable_on(redis.ConnectionError, redis.TimeoutError)
class RedisBatchStore(RedisCoordination):
    """Batches and images in Redis; finished batches expire after ``ttl_s``."""

    def __init__(
        self,
        client_or_url: redis.Redis | str,
        prefix: str = "pixelmill:",
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        if isinstance(client_or_url, str):
            self._client = redis.Redis.from_url(client_or_url, decode_responses=True)
            self._owns_client = True
        else:
            if not client_or_url.get_connection_kwargs().get("decode_responses"):
                raise ValueError("RedisBatchStore needs a client with decode_responses=True")
            self._client = client_or_url
            self._owns_client = False
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._create = self._client.register_script(CREATE)
        self._mark_processing = self._client.register_script(MARK_PROCESSING)
        self._finish_image = self._client.register_script(FINISH_IMAGE)
        self._cancel = self._client.register_script(CANCEL)
        self._read_batch = self._client.register_script(READ_BATCH)
        self._read_changes = self._client.register_script(READ_CHANGES)
        self._delete_batch = self._client.register_script(DELETE_BATCH)
        self._trim_index = self._client.register_script(TRIM_INDEX)
        self._changes = ChangeListener(self._client, f"{prefix}events:")

    # -- key names ------------------------------------------------------------------------

    def _batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def _images_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}:images"

    def _image_prefix(self, batch_id: str) -> str:
        return f"{self.prefix}image:{batch_id}:"

    def _channel(self, batch_id: str) -> str:
        return f"{self.prefix}events:{batch_id}"

    @property
    def _unfinished_key(self) -> str:
        return f"{self.prefix}unfinished"

    @property
    def _stats_key(self) -> str:
        return f"{self.prefix}stats"

    @property
    def _owed_key(self) -> str:
        return f"{self.prefix}callbacks_owed"

    def _finishing_keys_and_args(self, batch_id: str) -> tuple[list[str], list[Any]]:
        """KEYS[1..3] and ARGV[1..4] that ``finish_if_drained`` in the scripts expects."""
        keys = [self._batch_key(batch_id), self._images_key(batch_id), self._unfinished_key]
        return keys, [utc_now(), self.ttl_s, self._image_prefix(batch_id), batch_id]

    # -- the BatchStore protocol ----------------------------------------------------------

    def ping(self) -> bool:
        """True when Redis answers PING."""
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def create_batch(
        self,
        batch_id: str,
        images: list[NewImage],
        callback_url: str | None = None,
        *,
        presets: tuple[str, ...] | None = None,
        formats: tuple[str, ...] | None = None,
    ) -> BatchRecord:
        """A new batch; images with ``error`` set start (and count) as failed."""
        failed = sum(1 for image in images if image.error is not None)
        keys, args = self._finishing_keys_and_args(batch_id)
        keys += [f"{self.prefix}batch_seq", self._stats_key, self._owed_key]
        image_prefix = self._image_prefix(batch_id)
        args.append(len(images) - failed)
        for seq, image in enumerate(images):
            keys.append(image_prefix + image.image_id)
            fields = _present(
                image_id=image.image_id,
                batch_id=batch_id,
                seq=seq,
                filename=image.filename,
                status=ImageStatus.FAILED if image.error is not None else ImageStatus.PENDING,
                sha256=image.sha256,
                spool_path=image.spool_path,
                declared_type=image.declared_type,
                detected_type=image.detected_type,
                error=dump_json(image.error),
            )
            args += [image.image_id, len(fields) // 2, *fields]
        fields = _present(
            batch_id=batch_id,
            status=BatchStatus.QUEUED,
            total=len(images),
            completed=0,
            duplicates=0,
            failed=failed,
            cancelled=0,
            pending=len(images) - failed,
            created_at=args[0],
            callback_url=callback_url,
            version=1,
            presets=dump_choice(presets),
            formats=dump_choice(formats),
        )
        args += [len(fields) // 2, *fields]
        if not self._create(keys=keys, args=args):
            raise ValueError(f"batch {batch_id!r} already exists")
        self._client.zadd(self._listing_key, {index_member(args[0], batch_id): 0})
        self._trim_index(
            keys=[self._listing_key, f"{self._listing_key}_trimmed"],
            args=[f"{self.prefix}batch:", TRIM_PER_CREATE],
        )
        record = self.get_batch(batch_id)
        assert record is not None
        return record

    def get_batch(self, batch_id: str, include_images: bool = True) -> BatchRecord | None:
        """The batch with its images in upload order, or None (unknown or expired)."""
        reply = self._read_batch(
            keys=[self._batch_key(batch_id), self._images_key(batch_id)],
            args=[self._image_prefix(batch_id), "1" if include_images else "0"],
        )
        if not reply:
            return None
        batch, *images = (_pairs(flat) for flat in reply)
        return _batch_record(batch, [_image_record(image) for image in images if image])

    def get_image(self, batch_id: str, image_id: str) -> ImageRecord | None:
        """One image of a batch, or None."""
        fields = cast(dict[str, str], self._client.hgetall(self._image_prefix(batch_id) + image_id))
        return _image_record(fields) if fields else None

    def mark_processing(self, batch_id: str, image_id: str) -> Transition:
        """pending -> processing (batch queued -> processing). Not applied once final."""
        applied = self._mark_processing(
            keys=[self._batch_key(batch_id), self._image_prefix(batch_id) + image_id],
            args=[self._channel(batch_id)],
        )
        return Transition(applied=bool(applied))

    def finish_image(
        self,
        batch_id: str,
        image_id: str,
        status: ImageStatus,
        *,
        sha256: str | None = None,
        error: dict[str, str] | None = None,
        renditions: list[dict[str, Any]] | None = None,
        timings_ms: dict[str, float] | None = None,
        placeholder: str | None = None,
    ) -> Transition:
        """pending|processing -> a final status, counters updated in the same script."""
        status = require_final(status)
        keys, args = self._finishing_keys_and_args(batch_id)
        keys += [self._image_prefix(batch_id) + image_id, self._stats_key, self._owed_key]
        args += [self._channel(batch_id), status.value, _BUMPS[status]]
        args += _present(
            sha256=sha256,
            error=dump_json(error),
            renditions=dump_json(renditions),
            timings_ms=dump_json(timings_ms),
            placeholder=placeholder,
        )
        applied, finished = self._finish_image(keys=keys, args=args)
        return Transition(applied=bool(applied), batch_finished=bool(finished))

    def cancel_batch(self, batch_id: str) -> tuple[BatchRecord | None, Transition]:
        """Batch -> cancelled; its pending (not processing) images -> cancelled. Idempotent."""
        keys, args = self._finishing_keys_and_args(batch_id)
        keys += [self._stats_key, self._owed_key]
        args += [self._channel(batch_id), dump_json(CANCELLED_ERROR)]
        applied, finished, dropped = self._cancel(keys=keys, args=args)
        transition = Transition(
            applied=bool(applied), batch_finished=bool(finished), cancelled_images=int(dropped)
        )
        return self.get_batch(batch_id), transition

    def batch_changes(
        self, batch_id: str, since_version: int
    ) -> tuple[BatchRecord | None, list[ImageRecord]]:
        """The batch (without images) and its images finished after ``since_version``."""
        batch_key = self._batch_key(batch_id)
        reply = self._read_changes(
            keys=[batch_key, f"{batch_key}:changes"],
            args=[self._image_prefix(batch_id), int(since_version)],
        )
        if not reply:
            return None, []
        batch, *images = (_pairs(flat) for flat in reply)
        return _batch_record(batch, []), [_image_record(image) for image in images if image]

    def unfinished_images(self) -> list[ImageRecord]:
        """Every pending or processing image of every batch, oldest batch first (resume)."""
        batch_ids = cast(list[str], self._client.zrange(self._unfinished_key, 0, -1))
        unfinished = []
        for batch_id in batch_ids:
            batch = self.get_batch(batch_id)
            if batch is None:
                continue
            unfinished += [image for image in batch.images if not image.status.is_final]
        return unfinished

    def wait_for_change(self, batch_id: str, since_version: int, timeout_s: float) -> int:
        """Block until the batch's version exceeds ``since_version`` or the timeout; return it.

        An unknown (or expired) batch returns 0 at once. Woken by the store's one shared
        pub/sub listener; the version is read again now and then in case a message was lost.
        """
        deadline = time.monotonic() + timeout_s
        self._changes.watch(batch_id)
        try:
            while True:
                # Read after watching: a change published before is seen here, one
                # published after wakes the wait below.
                version = self._version(batch_id)
                remaining = deadline - time.monotonic()
                if version is None:
                    return 0
                if version > since_version or remaining <= 0:
                    return version
                announced = self._changes.wait(
                    batch_id, since_version, min(remaining, POLL_INTERVAL_S)
                )
                if announced is not None:
                    return announced
        finally:
            self._changes.unwatch(batch_id)

    def close(self) -> None:
        """Close the connection pool, when this store built it from a URL."""
        self._changes.close()
        if self._owns_client:
            self._client.close()

    def _version(self, batch_id: str) -> int | None:
        version = self._client.hget(self._batch_key(batch_id), "version")
        return None if version is None else int(cast(str, version))

    @property
    def _listing_key(self) -> str:
        return f"{self.prefix}batches"

    def list_batches(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[BatchRecord], str | None]:
        """Up to ``limit`` batches (without images), newest first, after ``cursor``."""
        page, more = list_batch_fields(
            self._client, self._listing_key, f"{self.prefix}batch:", limit, cursor
        )
        batches = [_batch_record(fields, []) for fields in page]
        return batches, listing_cursor(batches[-1]) if more else None

    def delete_batch(self, batch_id: str) -> bool:
        """Forget the batch: its hash, images, change feed and its place in every index."""
        keys = [self._batch_key(batch_id), self._images_key(batch_id), self._unfinished_key]
        keys += [self._owed_key, self._listing_key]
        return bool(self._delete_batch(keys=keys, args=[self._image_prefix(batch_id), batch_id]))


def _present(**fields: Any) -> list[Any]:
    """Flat ``[name, value, ...]`` of the fields that are not None (absent means None)."""
    return [item for name, value in fields.items() if value is not None for item in (name, value)]


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _image_record(fields: dict[str, str]) -> ImageRecord:
    return ImageRecord(
        image_id=fields["image_id"],
        batch_id=fields["batch_id"],
        filename=fields["filename"],
        status=ImageStatus(fields["status"]),
        sha256=fields.get("sha256"),
        spool_path=fields.get("spool_path"),
        declared_type=fields.get("declared_type"),
        detected_type=fields.get("detected_type"),
        error=load_json(fields.get("error")),
        renditions=load_json(fields.get("renditions")) or [],
        timings_ms=load_json(fields.get("timings_ms")),
        seq=int(fields["seq"]),
        version=int(fields.get("version", 0)),
        placeholder=fields.get("placeholder"),
    )


def _batch_record(fields: dict[str, str], images: list[ImageRecord]) -> BatchRecord:
    counters = {name: int(fields[name]) for name in _COUNTER_FIELDS}
    return BatchRecord(
        batch_id=fields["batch_id"],
        status=BatchStatus(fields["status"]),
        created_at=fields["created_at"],
        finished_at=fields.get("finished_at"),
        callback_url=fields.get("callback_url"),
        version=int(fields["version"]),
        images=images,
        presets=load_choice(fields.get("presets")),
        formats=load_choice(fields.get("formats")),
        **counters,
    )
