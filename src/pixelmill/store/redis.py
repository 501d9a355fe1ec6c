"""The Redis batch store: every state change is one Lua script, so it is atomic.

Keys, all under the prefix (``pixelmill:`` by default):

    {prefix}batch:{batch_id}                 hash: counters, status, times, version
    {prefix}batch:{batch_id}:images          list: image ids in upload order
    {prefix}batch:{batch_id}:changes         sorted set: finished image ids by their version
    {prefix}image:{batch_id}:{image_id}      hash: one image (JSON for error/renditions/timings)
    {prefix}unfinished                       sorted set: unfinished batch ids by creation order
    {prefix}batch_seq                        counter giving that creation order

and the pub/sub channel ``{prefix}events:{batch_id}`` carrying each new version.

The scripts derive image keys from the batch's list, which is fine on one Redis server; a
Redis Cluster would need hash tags to keep a batch's keys in one slot.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from pixelmill.states import BatchStatus, ImageStatus
from pixelmill.store._common import (
    dump_json,
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
)
from pixelmill.store.redis_changes import ChangeListener

DEFAULT_TTL_S = 7 * 86400
# A waiter re-reads the version this often even without a message (a dropped connection).
POLL_INTERVAL_S = 1.0

# Shared Lua: when the batch has nothing pending, finish it: final status, time, TTL on every
# key of the batch, out of the unfinished set. KEYS[1] batch, KEYS[2] images list,
# KEYS[3] unfinished; ARGV[1] now, ARGV[2] ttl, ARGV[3] image key prefix for this batch.
_LUA_FINISH_IF_DRAINED = """
local function finish_if_drained()
  if tonumber(redis.call('HGET', KEYS[1], 'pending')) ~= 0 then return 0 end
  if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
  if redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'status', 'completed')
  end
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[1])
  local ttl = tonumber(ARGV[2])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[1] .. ':changes', ttl)
  for _, image_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    redis.call('EXPIRE', ARGV[3] .. image_id, ttl)
  end
  redis.call('ZREM', KEYS[3], ARGV[4])
  return 1
end
"""

# KEYS: batch, images list, unfinished, batch_seq, then one hash per image.
# ARGV: now, ttl, image key prefix, batch_id, pending count, then per image: id and a flat
# field list as "n, f1, v1, ..., fn, vn"; then the batch's own fields the same way.
_CREATE = (
    _LUA_FINISH_IF_DRAINED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local i = 6
local failed = 0
for k = 5, #KEYS do
  local image_id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  redis.call('HSET', KEYS[k], unpack(ARGV, i + 2, i + 1 + 2 * n))
  redis.call('RPUSH', KEYS[2], image_id)
  if redis.call('HGET', KEYS[k], 'status') == 'failed' then
    failed = failed + 1
    redis.call('HSET', KEYS[k], 'version', failed)
    redis.call('ZADD', KEYS[1] .. ':changes', failed, image_id)
  end
  i = i + 2 + 2 * n
end
local n = tonumber(ARGV[i])
redis.call('HSET', KEYS[1], unpack(ARGV, i + 1, i + 2 * n))
redis.call('HSET', KEYS[1], 'version', failed + 1)
if finish_if_drained() == 0 then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[4])
end
return 1
"""
)

# KEYS: batch, image. ARGV: channel. Returns 1 when applied.
_MARK_PROCESSING = """
if redis.call('HGET', KEYS[2], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[2], 'status', 'processing')
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'processing')
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PUBLISH', ARGV[1], version)
return 1
"""

# KEYS: batch, images list, unfinished, image. ARGV: now, ttl, image key prefix, batch_id,
# channel, new status, counters to bump ("completed,duplicates"), then image field pairs.
# Returns {applied, finished}.
_FINISH_IMAGE = (
    _LUA_FINISH_IF_DRAINED
    + """
local current = redis.call('HGET', KEYS[4], 'status')
if current ~= 'pending' and current ~= 'processing' then return {0, 0} end
redis.call('HSET', KEYS[4], 'status', ARGV[6])
if #ARGV > 7 then redis.call('HSET', KEYS[4], unpack(ARGV, 8)) end
redis.call('HINCRBY', KEYS[1], 'pending', -1)
for counter in string.gmatch(ARGV[7], '[^,]+') do
  redis.call('HINCRBY', KEYS[1], counter, 1)
end
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'processing')
end
local finished = finish_if_drained()
-- Two steps: the image takes the first, the batch (progress) the second.
local version = redis.call('HINCRBY', KEYS[1], 'version', 2)
redis.call('HSET', KEYS[4], 'version', version - 1)
redis.call('ZADD', KEYS[1] .. ':changes', version - 1, redis.call('HGET', KEYS[4], 'image_id'))
redis.call('PUBLISH', ARGV[5], version)
return {1, finished}
"""
)

# KEYS: batch, images list, unfinished. ARGV: now, ttl, image key prefix, batch_id, channel,
# the cancelled images' error (JSON). Returns {applied, finished, images cancelled}.
_CANCEL = (
    _LUA_FINISH_IF_DRAINED
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'processing' then return {0, 0, 0} end
redis.call('HSET', KEYS[1], 'status', 'cancelled')
local base = tonumber(redis.call('HGET', KEYS[1], 'version'))
local dropped = 0
for _, image_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local key = ARGV[3] .. image_id
  if redis.call('HGET', key, 'status') == 'pending' then
    dropped = dropped + 1
    -- Each dropped image takes a version of its own (upload order), the batch the next.
    redis.call('HSET', key, 'status', 'cancelled', 'error', ARGV[6], 'version', base + dropped)
    redis.call('ZADD', KEYS[1] .. ':changes', base + dropped, image_id)
  end
end
-- Not -dropped: Lua's -0 reaches Redis as "-0", which HINCRBY refuses as no integer.
if dropped > 0 then
  redis.call('HINCRBY', KEYS[1], 'cancelled', dropped)
  redis.call('HINCRBY', KEYS[1], 'pending', 0 - dropped)
end
local finished = finish_if_drained()
local version = redis.call('HINCRBY', KEYS[1], 'version', dropped + 1)
redis.call('PUBLISH', ARGV[5], version)
return {1, finished, dropped}
"""
)

# A consistent snapshot of a batch. KEYS: batch, images list. ARGV: image key prefix,
# "1" to include images. Returns {batch fields, {image fields}...} as flat field lists.
_READ_BATCH = """
local batch = redis.call('HGETALL', KEYS[1])
if #batch == 0 then return {} end
local out = {batch}
if ARGV[2] == '1' then
  for _, image_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    out[#out + 1] = redis.call('HGETALL', ARGV[1] .. image_id)
  end
end
return out
"""

# The batch (fields) and its images finished after a version. KEYS: batch, changes.
# ARGV: image key prefix, since version. Returns {batch fields, {image fields}...}.
_READ_CHANGES = """
local batch = redis.call('HGETALL', KEYS[1])
if #batch == 0 then return {} end
local out = {batch}
for _, image_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')) do
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. image_id)
end
return out
"""

_COUNTER_FIELDS = ("total", "completed", "duplicates", "failed", "cancelled", "pending")
_BUMPS = {
    ImageStatus.DONE: "completed",
    ImageStatus.DUPLICATE: "completed,duplicates",
    ImageStatus.FAILED: "failed",
    ImageStatus.CANCELLED: "cancelled",
}


@unavailable_on(redis.ConnectionError, redis.TimeoutError)
class RedisBatchStore:
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
        self._create = self._client.register_script(_CREATE)
        self._mark_processing = self._client.register_script(_MARK_PROCESSING)
        self._finish_image = self._client.register_script(_FINISH_IMAGE)
        self._cancel = self._client.register_script(_CANCEL)
        self._read_batch = self._client.register_script(_READ_BATCH)
        self._read_changes = self._client.register_script(_READ_CHANGES)
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
        self, batch_id: str, images: list[NewImage], callback_url: str | None = None
    ) -> BatchRecord:
        """A new batch; images with ``error`` set start (and count) as failed."""
        failed = sum(1 for image in images if image.error is not None)
        keys, args = self._finishing_keys_and_args(batch_id)
        keys.append(f"{self.prefix}batch_seq")
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
        )
        args += [len(fields) // 2, *fields]
        if not self._create(keys=keys, args=args):
            raise ValueError(f"batch {batch_id!r} already exists")
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
    ) -> Transition:
        """pending|processing -> a final status, counters updated in the same script."""
        status = require_final(status)
        keys, args = self._finishing_keys_and_args(batch_id)
        keys.append(self._image_prefix(batch_id) + image_id)
        args += [self._channel(batch_id), status.value, _BUMPS[status]]
        args += _present(
            sha256=sha256,
            error=dump_json(error),
            renditions=dump_json(renditions),
            timings_ms=dump_json(timings_ms),
        )
        applied, finished = self._finish_image(keys=keys, args=args)
        return Transition(applied=bool(applied), batch_finished=bool(finished))

    def cancel_batch(self, batch_id: str) -> tuple[BatchRecord | None, Transition]:
        """Batch -> cancelled; its pending (not processing) images -> cancelled. Idempotent."""
        keys, args = self._finishing_keys_and_args(batch_id)
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
        **counters,
    )
