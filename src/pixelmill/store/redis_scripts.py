"""The Lua scripts of the Redis store: every state change is one script, so it is atomic."""

from __future__ import annotations

# Shared Lua: when the batch has nothing pending, finish it: final status, time, TTL on every
# key of the batch, out of the unfinished set. KEYS[1] batch, KEYS[2] images list,
# KEYS[3] unfinished; ARGV[1] now, ARGV[2] ttl, ARGV[3] image key prefix for this batch.
LUA_FINISH_IF_DRAINED = """
local function finish_if_drained()
  if tonumber(redis.call('HGET', KEYS[1], 'pending')) ~= 0 then return 0 end
  if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
  -- Only a cancel cancels images: a batch with one ends cancelled, whichever came first.
  local cancelled = tonumber(redis.call('HGET', KEYS[1], 'cancelled') or '0')
  if redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' and cancelled == 0 then
    redis.call('HSET', KEYS[1], 'status', 'completed')
  else
    redis.call('HSET', KEYS[1], 'status', 'cancelled')
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
-- Images that became final, counted once per status (the /metrics of the distributed engine).
local function note_final(stats_key, status, n)
  if n > 0 then redis.call('HINCRBY', stats_key, 'images_' .. status, n) end
end
-- A finished batch with a callback_url owes its callback until a service settles it; entries
-- older than the batch TTL are trimmed (a callback nobody could send).
local function owe_callback(owed_key)
  if not redis.call('HGET', KEYS[1], 'callback_url') then return end
  local now = redis.call('TIME')
  local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
  redis.call('ZADD', owed_key, t, ARGV[4])
  redis.call('ZREMRANGEBYSCORE', owed_key, '-inf', t - tonumber(ARGV[2]))
end
"""

# KEYS: batch, images list, unfinished, batch_seq, stats, callbacks owed, then one hash per
# image.
# ARGV: now, ttl, image key prefix, batch_id, pending count, then per image: id and a flat
# field list as "n, f1, v1, ..., fn, vn"; then the batch's own fields the same way.
CREATE = (
    LUA_FINISH_IF_DRAINED
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local i = 6
local failed = 0
for k = 7, #KEYS do
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
note_final(KEYS[5], 'failed', failed)
if finish_if_drained() == 0 then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[4])
else
  owe_callback(KEYS[6])
end
return 1
"""
)

# KEYS: batch, image. ARGV: channel. Returns 1 when applied.
MARK_PROCESSING = """
if redis.call('HGET', KEYS[2], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[2], 'status', 'processing')
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'processing')
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('PUBLISH', ARGV[1], version)
return 1
"""

# KEYS: batch, images list, unfinished, image, stats, callbacks owed. ARGV: now, ttl, image
# key prefix, batch_id, channel, new status, counters to bump ("completed,duplicates"), then
# image field pairs. Returns {applied, finished}.
FINISH_IMAGE = (
    LUA_FINISH_IF_DRAINED
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
note_final(KEYS[5], ARGV[6], 1)
-- Two steps: the image takes the first, the batch (progress) the second. The change is
-- written before the batch may finish, so the TTL it then sets covers the change feed too.
local version = redis.call('HINCRBY', KEYS[1], 'version', 2)
redis.call('HSET', KEYS[4], 'version', version - 1)
redis.call('ZADD', KEYS[1] .. ':changes', version - 1, redis.call('HGET', KEYS[4], 'image_id'))
local finished = finish_if_drained()
if finished == 1 then owe_callback(KEYS[6]) end
redis.call('PUBLISH', ARGV[5], version)
return {1, finished}
"""
)

# KEYS: batch, images list, unfinished, stats, callbacks owed. ARGV: now, ttl, image key
# prefix, batch_id, channel,
# the cancelled images' error (JSON). Returns {applied, finished, images cancelled}.
CANCEL = (
    LUA_FINISH_IF_DRAINED
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
note_final(KEYS[4], 'cancelled', dropped)
local finished = finish_if_drained()
if finished == 1 then owe_callback(KEYS[5]) end
local version = redis.call('HINCRBY', KEYS[1], 'version', dropped + 1)
redis.call('PUBLISH', ARGV[5], version)
return {1, finished, dropped}
"""
)

# A consistent snapshot of a batch. KEYS: batch, images list. ARGV: image key prefix,
# "1" to include images. Returns {batch fields, {image fields}...} as flat field lists.
READ_BATCH = """
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
READ_CHANGES = """
local batch = redis.call('HGETALL', KEYS[1])
if #batch == 0 then return {} end
local out = {batch}
for _, image_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')) do
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. image_id)
end
return out
"""
