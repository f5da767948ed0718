"""Per-user limits shared by every instance (PROTOCOL.md §2, limits per user).

In Redis, so that a user's sockets on every instance count together; in-process in
the embedded single-instance mode (no REDIS_URL), where this process is the whole
truth. Each check is one Lua script: atomic across instances; the sockets' counts of
a burst of connects or closes go in one pipeline.
"""

import time

from django.conf import settings

from ops import redis_client as shared
from ops.batching import Coalescer

# KEYS[1]: the user's bucket (hash: tokens, updated). ARGV: rate, burst, now.
_USER_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local ok = 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return ok
"""

# KEYS[1]: the user's open sockets (sorted set: channel -> expiry, refreshed by the
# presence heartbeat, so a SIGKILLed instance's sockets lapse by themselves).
# ARGV: channel, maximum, now, ttl.
_SOCKET_OPEN = """
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""

# The embedded mode's state: this process is the only instance.
_local_buckets: dict[str, tuple[float, float]] = {}
_local_sockets: dict[str, set[str]] = {}


def sockets_key(user: str) -> str:
    """The Redis key of a user's open sockets."""
    return shared.key("us", user)


async def frame_allowed(user: str) -> bool:
    """Spend one of the user's frame tokens (all their sockets share them)."""
    rate = settings.WS_USER_RATE_LIMIT
    burst = rate * 2
    client = shared.redis_client()
    if client is None:
        return _local_take(user, rate, burst)
    script = shared.script("user_bucket", _USER_BUCKET)
    args = [rate, burst, f"{time.time():.6f}"]
    return bool(await script(keys=[shared.key("ub", user)], args=args))


def _local_take(user: str, rate: float, burst: float) -> bool:
    now = time.monotonic()
    tokens, updated = _local_buckets.get(user, (burst, now))
    tokens = min(burst, tokens + (now - updated) * rate)
    allowed = tokens >= 1
    _local_buckets[user] = (tokens - 1 if allowed else tokens, now)
    return allowed


async def socket_open(user: str, channel: str) -> bool:
    """Count a new socket of the user; False when they hold the maximum already."""
    limit = settings.WS_MAX_SOCKETS_PER_USER
    client = shared.redis_client()
    if client is None:
        held = _local_sockets.setdefault(user, set())
        if channel not in held and len(held) >= limit:
            return False
        held.add(channel)
        return True
    return bool(await _opens.submit((user, channel)))


async def socket_closed(user: str, channel: str) -> None:
    """Stop counting a socket (its entry would lapse by itself otherwise)."""
    client = shared.redis_client()
    if client is None:
        held = _local_sockets.get(user)
        if held is not None:
            held.discard(channel)
            if not held:
                del _local_sockets[user]
        return
    await _closes.submit((user, channel))


# A burst of connects or closes shares one pipeline (and one pooled connection):
# one call each, a thousand dropped sockets queued for the shared pool's connections
# and held them past its wait, so that connects meanwhile failed with 1013.
async def _open_many(items: list[tuple[str, str]]) -> list:
    limit, ttl = settings.WS_MAX_SOCKETS_PER_USER, settings.PRESENCE_TTL_SECONDS
    now = f"{time.time():.3f}"
    calls = [
        ([sockets_key(user)], [channel, limit, now, ttl]) for user, channel in items
    ]
    return await shared.run_script_many("socket_open", _SOCKET_OPEN, calls)


async def _closed_many(items: list[tuple[str, str]]) -> list:
    async with shared.redis_client().pipeline(transaction=False) as pipe:
        for user, channel in items:
            pipe.zrem(sockets_key(user), channel)
        return await pipe.execute(raise_on_error=False)


_opens = Coalescer(_open_many)
_closes = Coalescer(_closed_many)
