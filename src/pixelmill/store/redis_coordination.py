"""What the distributed engine's services and workers coordinate through Redis.

Mixed into ``RedisBatchStore`` (the ``WorkCoordination`` protocol). Keys, under the prefix:

    {prefix}claim:{sha256}            string: the image id rendering that content (expires)
    {prefix}original:{sha256}         set: image ids that still need originals/<sha256>
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

# KEYS: originals set. ARGV: image id. Returns how many images still hold the original.
RELEASE_ORIGINAL = """
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
"""


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

    def hold_original(self, sha256: str, image_id: str) -> None:
        """Record that ``image_id`` needs ``originals/<sha256>`` until it is final."""
        key = f"{self.prefix}original:{sha256}"
        pipe = self._client.pipeline()
        pipe.sadd(key, image_id)
        pipe.expire(key, self.ttl_s)  # a hold nobody releases does not outlive its batch
        pipe.execute()

    def release_original(self, sha256: str, image_id: str) -> int:
        """``image_id`` no longer needs the original; returns how many images still do."""
        keys = [f"{self.prefix}original:{sha256}"]
        return int(self._script("release_original", RELEASE_ORIGINAL)(keys=keys, args=[image_id]))

    def owed_callbacks(self, limit: int = 100) -> list[str]:
        """Batches that finished with a callback_url whose callback is not settled, oldest first."""
        key = f"{self.prefix}callbacks_owed"
        return cast(list[str], self._client.zrange(key, 0, max(0, limit - 1)))

    def lease_callback(self, batch_id: str, owner: str, ttl_s: float) -> bool:
        """Take the sending of a callback for ``ttl_s`` (one service sends it at a time)."""
        key = f"{self.prefix}callback_lease:{batch_id}"
        taken = self._client.set(key, owner, nx=True, px=int(ttl_s * 1000))
        return bool(taken) or self._client.get(key) == owner

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
