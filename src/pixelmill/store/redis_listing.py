"""Listing and deleting batches in the Redis store.

``{prefix}batches`` is a sorted set whose members are ``"<created_at> <batch_id>"``, all at
score 0, so Redis orders them by those bytes: by creation time (ISO 8601 with milliseconds
sorts as text), then by id. A page asks for the members before the last one it returned
(``ZREVRANGEBYLEX``), so a batch created while a client pages never shifts a later page.

Finished batches expire with the store's TTL; their members stay in the set until a listing
meets them, or until the trim that runs at each new batch reaches them: it looks at a few
members (``TRIM_PER_CREATE``) from where it stopped last time (``{prefix}batches_trimmed``),
oldest first, and starts over at the oldest once past the newest. As it looks at more
members per batch than each batch adds, it goes round the whole set, and the set holds
about as many members as there are live batches.
"""

from __future__ import annotations

from typing import cast

import redis

from pixelmill.store.base import cursor_position

# KEYS: batch, images list, unfinished, callbacks owed, listing index. ARGV: image key
# prefix, batch_id. Returns 1 when the batch existed.
DELETE_BATCH = """
local created = redis.call('HGET', KEYS[1], 'created_at')
if not created then return 0 end
for _, image_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  redis.call('DEL', ARGV[1] .. image_id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[1] .. ':changes')
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], created .. ' ' .. ARGV[2])
return 1
"""


# Members looked at by the trim of each new batch.
TRIM_PER_CREATE = 4

# KEYS: listing index, trim position. ARGV: batch key prefix, how many members to look at.
# Removes the members, among those after the trim position, whose batch hash is gone.
# Returns how many it removed.
TRIM_INDEX = """
local after = redis.call('GET', KEYS[2])
local lower = after and ('(' .. after) or '-'
local wanted = tonumber(ARGV[2])
local members = redis.call('ZRANGEBYLEX', KEYS[1], lower, '+', 'LIMIT', 0, wanted)
local removed = 0
for _, member in ipairs(members) do
  local batch_id = string.match(member, ' (.*)$')
  if batch_id and redis.call('EXISTS', ARGV[1] .. batch_id) == 0 then
    redis.call('ZREM', KEYS[1], member)
    removed = removed + 1
  end
end
if #members < wanted then
  -- The newest were reached: the next trim starts again from the oldest. (Resuming after
  -- the newest would only ever meet the batch just created, never the expired ones.)
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], members[#members])
end
return removed
"""


def index_member(created_at: str, batch_id: str) -> str:
    return f"{created_at} {batch_id}"


def list_batch_fields(
    client: redis.Redis, index_key: str, batch_key_prefix: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, str]], bool]:
    """The fields of up to ``limit`` live batches, newest first, after ``cursor``, and
    whether more follow. Members whose batch expired are removed on the way."""
    upper = "+" if cursor is None else "(" + index_member(*cursor_position(cursor))
    live: list[dict[str, str]] = []
    while len(live) <= limit:
        wanted = limit + 1 - len(live)
        members = cast(list[str], client.zrevrangebylex(index_key, upper, "-", 0, wanted))
        if not members:
            break
        pipe = client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(batch_key_prefix + member.partition(" ")[2])
        replies = cast(list[dict[str, str]], pipe.execute())
        gone = [member for member, fields in zip(members, replies, strict=True) if not fields]
        if gone:
            client.zrem(index_key, *gone)
        live += [fields for fields in replies if fields]
        if len(members) < wanted:
            break
        upper = "(" + members[-1]
    return live[:limit], len(live) > limit
