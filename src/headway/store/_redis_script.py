"""The GCRA step of ``_gcra.py`` as one Redis Lua script, so a step is atomic across instances.

Time is the Redis server's (``TIME``), so gateway instances with skewed clocks agree. The TAT is
stored as an absolute server timestamp with a ``PX`` expiry equal to how long until the key is
fresh again, so Redis memory is bounded by the keys that are actually limiting. Requires
Redis >= 5 (scripts replicate their effects, which allows ``TIME`` before a write).

KEYS[1] = the prefixed key; ARGV = emission_interval, tolerance, cost, force ("1" or "0").
Returns {allowed (0/1), retry_after, remaining, reset_after}, the floats as strings (Lua numbers
returned as integers would be truncated); ``retry_after`` is "inf" when cost > burst.
"""

from __future__ import annotations

GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local increment = cost * interval
local new_tat = tat + increment
if not force then
  local allow_at = new_tat - tolerance
  if allow_at > now then
    local retry_after = 'inf'
    if increment <= tolerance then retry_after = string.format('%.17g', allow_at - now) end
    local remaining = (tolerance - (tat - now)) / interval
    if remaining < 0 then remaining = 0 end
    return {0, retry_after, string.format('%.17g', remaining), string.format('%.17g', tat - now)}
  end
end
if new_tat < now then new_tat = now end
local reset_after = new_tat - now
local ttl_ms = math.ceil(reset_after * 1000)
if ttl_ms > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
else
  redis.call('DEL', KEYS[1])
end
local remaining = (tolerance - reset_after) / interval
if remaining < 0 then remaining = 0 end
return {1, '0', string.format('%.17g', remaining), string.format('%.17g', reset_after)}
"""
