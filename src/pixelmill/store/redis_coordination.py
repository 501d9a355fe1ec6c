"""What the distributed engine's services and workers coordinate through Redis.

Mixed into ``RedisBatchStore`` (the ``WorkCoordination`` protocol). Keys, under the prefix:

    {prefix}claim:{sha256}            string: the image id rendering that content (expires)
    {prefix}original:{sha256}         set: image ids that still need originals/<sha256>
    {prefix}original_deleting:{sha256} string: the last holder is deleting it (expires)
    {prefix}callback_lease:{batch}    string: the service sending that callback (expires)

and, written by the batch scripts themselves, ``{prefix}stats`` and ``{prefix}callbacks_owed``.
"""

from __future__ import annotations

from typing import cast

import redis

from pixelmill.store._common import unavailable_on

# KEYS: claim. ARGV: owner, ttl ms. The same owner may take its claim again (a redelivery).
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: claim. ARGV: owner, ttl ms.
REFRESH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: claim. ARGV: owner. Compare and delete: never drops another owner's claim.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: image. Counts a run only of an image that exists (an expired batch is not revived).
START_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# KEYS: originals set, delete lock. ARGV: image id, lock ms. Returns how many images still
# hold the original; at 0 the caller deletes it, under the lock (see hold_original).
RELEASE_ORIGINAL = """
redis.call('SREM', KEYS[1], ARGV[1])
local left = redis.call('SCARD', KEYS[1])
if left == 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return left
"""

# KEYS: originals set, delete lock. ARGV: image id, ttl s. 1: the original may be stored now;
# 0: a release is deleting it, store it once that is over (the hold is recorded either way).
HOLD_ORIGINAL = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return 1
"""
# A deleter that dies frees the original's lock after this; a delete takes far less.
ORIGINAL_DELETE_LOCK_S = 60


@unavailable_on(redis.ConnectionError, redis.TimeoutError)
class RedisCoordination:
    """Claims, run counts, original holds, owed callbacks and image stats (see module doc)."""

    _client: redis.Redis
    prefix: str
    ttl_s: int

    def _script(self, name: str, source: str) -> redis.commands.core.Script:
        scripts: dict[str, redis.commands.core.Script] = self.__dict__.setdefault(
            "_coordination_scripts", {}
        )
        if name not in scripts:
            scripts[name] = self._client.register_script(source)
        return scripts[name]

    def _image_key(self, batch_id: str, image_id: str) -> str:
        return f"{self.prefix}image:{batch_id}:{image_id}"

    def claim_content(self, sha256: str, owner: str, ttl_s: float) -> bool:
        """Take the right to render ``sha256`` (the same owner may take it again)."""
        keys = [f"{self.prefix}claim:{sha256}"]
        return bool(self._script("claim", CLAIM)(keys=keys, args=[owner, int(ttl_s * 1000)]))

    def claim_holder(self, sha256: str) -> str | None:
        """Who holds the claim on ``sha256`` now (None: nobody)."""
        return cast("str | None", self._client.get(f"{self.prefix}claim:{sha256}"))

    def refresh_claim(self, sha256: str, owner: str, ttl_s: float) -> bool:
        """Extend a claim ``owner`` holds; False when it lost it."""
        keys = [f"{self.prefix}claim:{sha256}"]
        return bool(self._script("refresh", REFRESH)(keys=keys, args=[owner, int(ttl_s * 1000)]))

    def release_claim(self, sha256: str, owner: str) -> bool:
        """Drop the claim when ``owner`` still holds it."""
        keys = [f"{self.prefix}claim:{sha256}"]
        return bool(self._script("release", RELEASE)(keys=keys, args=[owner]))

    def start_attempt(self, batch_id: str, image_id: str) -> int:
        """Count one more run of the image (across redeliveries); 0 when it is unknown."""
        keys = [self._image_key(batch_id, image_id)]
        return int(self._script("attempt", START_ATTEMPT)(keys=keys))

    def is_batch_cancelled(self, batch_id: str) -> bool:
        status = self._client.hget(f"{self.prefix}batch:{batch_id}", "status")
        return status == "cancelled"

    def _original_keys(self, sha256: str) -> list[str]:
        return [f"{self.prefix}original:{sha256}", f"{self.prefix}original_deleting:{sha256}"]

    def hold_original(self, sha256: str, image_id: str) -> bool:
        """Record that ``image_id`` needs ``originals/<sha256>`` until it is final. False: the
        last holder is deleting it right now; store the original only once
        ``original_deleted`` (or the lock's expiry) says the delete is over."""
        keys = self._original_keys(sha256)
        # A hold nobody releases does not outlive its batch.
        return bool(
            self._script("hold_original", HOLD_ORIGINAL)(keys=keys, args=[image_id, self.ttl_s])
        )

    def release_original(self, sha256: str, image_id: str) -> int:
        """``image_id`` no longer needs the original; returns how many images still do. At 0
        the caller deletes the original, then calls ``original_deleted``."""
        keys = self._original_keys(sha256)
        args: list[str | int] = [image_id, ORIGINAL_DELETE_LOCK_S * 1000]
        return int(self._script("release_original", RELEASE_ORIGINAL)(keys=keys, args=args))

    def original_deleted(self, sha256: str) -> None:
        """The delete ``release_original`` asked for is over: the original may be stored again."""
        self._client.delete(self._original_keys(sha256)[1])

    def owed_callbacks(self, limit: int = 100) -> list[str]:
        """Batches that finished with a callback_url whose callback is not settled, oldest first."""
        key = f"{self.prefix}callbacks_owed"
        return cast(list[str], self._client.zrange(key, 0, max(0, limit - 1)))

    def lease_callback(self, batch_id: str, owner: str, ttl_s: float) -> bool:
        """Take the sending of a callback for ``ttl_s`` (one service sends it at a time)."""
        key = f"{self.prefix}callback_lease:{batch_id}"
        taken = self._client.set(key, owner, nx=True, px=int(ttl_s * 1000))
        return bool(taken) or self._client.get(key) == owner

    def release_callback_lease(self, batch_id: str, owner: str) -> None:
        """``owner`` stops sending the callback (a shutdown): another service may send it."""
        keys = [f"{self.prefix}callback_lease:{batch_id}"]
        self._script("release", RELEASE)(keys=keys, args=[owner])

    def settle_callback(self, batch_id: str) -> None:
        """The callback was delivered or given up: no longer owed."""
        pipe = self._client.pipeline()
        pipe.zrem(f"{self.prefix}callbacks_owed", batch_id)
        pipe.delete(f"{self.prefix}callback_lease:{batch_id}")
        pipe.execute()

    def image_stats(self) -> dict[str, int]:
        """Images that reached each final status since the store began, by status."""
        fields = cast(dict[str, str], self._client.hgetall(f"{self.prefix}stats"))
        return {
            name.removeprefix("images_"): int(value)
            for name, value in fields.items()
            if name.startswith("images_")
        }
