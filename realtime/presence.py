"""Presence and grace-period detach, shared by every instance through Redis.

State (all TTL'd, so a dead instance's entries expire by themselves):
- `pt:<thread>:<user>`  ZSET channel -> expiry: the user's live sockets in a thread
- `ss:<session>`        ZSET channel -> expiry: the session's live sockets
- `pu:<thread>`         SET of users announced present in the thread
- `dm:s:<session>`, `dm:u:<thread>:<user>`: the newest detach marker, "token|deadline"
- `threads`             SET of threads that have had presence (for the reaper)

A socket's entries are refreshed by its process every PRESENCE_REFRESH_SECONDS; the
detach markers decide a cleanup, not a local task handle: whichever instance's timer
fires acts only if its marker is still the newest and no socket came back (any
instance). In the embedded mode (no REDIS_URL) one process is the whole system and a
local store with the same semantics is used.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from channels.layers import get_channel_layer
from django.conf import settings

from ops import metrics
from ops import redis_client as shared
from ops.batching import Coalescer
from realtime import limits

logger = logging.getLogger(__name__)

_ATTACH = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local joined = redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], 86400)
redis.call('SADD', KEYS[4], ARGV[5])
return {joined, redis.call('SMEMBERS', KEYS[3])}
"""

_DETACH_START = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
return 1
"""

_DETACH_FINISH = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local session_exec = 0
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
  if redis.call('ZCARD', KEYS[2]) == 0 then session_exec = 1 end
end
local left = 0
if redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('DEL', KEYS[4])
  if redis.call('ZCARD', KEYS[1]) == 0 then
    left = redis.call('SREM', KEYS[5], ARGV[3])
  end
end
return {session_exec, left}
"""

# Sockets all expired and the detach marker (if any) overdue: reapable. With a third
# key (a thread's present users) the user ARGV[2] is removed from it; returns 1 only
# for the one caller that did the removal, so a leave is broadcast once.
_REAP = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
local marker = redis.call('GET', KEYS[2])
if marker then
  local deadline = tonumber(string.match(marker, '|(.+)$'))
  if deadline and deadline > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[2])
end
if KEYS[3] then return redis.call('SREM', KEYS[3], ARGV[2]) end
return 1
"""


@dataclass(frozen=True)
class Attached:
    """A socket joined presence; `joined` when the user was not present before."""

    joined: bool
    present: list[str]


@dataclass(frozen=True)
class DetachOutcome:
    """What a fired cleanup found."""

    session_executed: bool
    user_left: bool


@dataclass
class LocalSocket:
    """A socket of this process, for the heartbeat that keeps its entries alive."""

    thread_id: str
    user: str
    session_id: str


REFRESH_CHUNK = 200


def _ttl() -> int:
    return settings.PRESENCE_TTL_SECONDS


def _marker_ttl() -> int:
    return int(settings.WS_CLEANUP_GRACE_SECONDS + settings.PRESENCE_TTL_SECONDS + 60)


class RedisPresence:
    """Presence in Redis, each step one Lua script (atomic across instances)."""

    def __init__(self) -> None:
        # Sockets attaching at the same time share one pipeline (attach_many).
        self._attaches: Coalescer[tuple, Attached | Exception] = Coalescer(
            self.attach_many
        )

    @staticmethod
    def _keys(thread_id: str, user: str, session_id: str) -> dict[str, str]:
        return {
            "pt": shared.key("pt", thread_id, user),
            "ss": shared.key("ss", session_id),
            "pu": shared.key("pu", thread_id),
            "dms": shared.key("dm", "s", session_id),
            "dmu": shared.key("dm", "u", thread_id, user),
            "threads": shared.key("threads"),
        }

    async def attach(self, thread_id, user, session_id, channel) -> Attached:
        """Enter presence, in one pipeline with the sockets attaching meanwhile."""
        return await self._attaches.submit((thread_id, user, session_id, channel))

    async def attach_many(self, attaches: list[tuple]) -> list:
        """Attach (thread, user, session, channel) sockets: results or errors.

        Each socket's script adds it to its session's sockets, which is what
        cancels a pending detach of that session (_DETACH_FINISH counts them).
        """
        expiry = time.time() + _ttl()
        calls = []
        for thread_id, user, session_id, channel in attaches:
            k = self._keys(thread_id, user, session_id)
            calls.append(
                (
                    [k["pt"], k["ss"], k["pu"], k["threads"]],
                    [channel, expiry, _ttl(), user, thread_id],
                )
            )
        results = await shared.run_script_many("attach", _ATTACH, calls)
        return [
            r
            if isinstance(r, Exception)
            else Attached(bool(r[0]), sorted(m.decode() for m in r[1]))
            for r in results
        ]

    async def detach_start_many(self, detaches: list[tuple]) -> list:
        """Leave presence, set the markers: (thread, user, session, channel, marker)."""
        calls = []
        for thread_id, user, session_id, channel, marker in detaches:
            k = self._keys(thread_id, user, session_id)
            calls.append(
                (
                    [k["pt"], k["ss"], k["dms"], k["dmu"]],
                    [channel, marker, _marker_ttl()],
                )
            )
        results = await shared.run_script_many("detach_start", _DETACH_START, calls)
        return [r if isinstance(r, Exception) else None for r in results]

    async def detach_finish_many(self, detaches: list[tuple]) -> list:
        """Decide (thread, user, session, marker) detaches: outcomes or errors."""
        now = time.time()
        calls = []
        for thread_id, user, session_id, marker in detaches:
            k = self._keys(thread_id, user, session_id)
            calls.append(
                (
                    [k["pt"], k["ss"], k["dms"], k["dmu"], k["pu"]],
                    [marker, now, user],
                )
            )
        results = await shared.run_script_many("detach_finish", _DETACH_FINISH, calls)
        return [
            r if isinstance(r, Exception) else DetachOutcome(bool(r[0]), bool(r[1]))
            for r in results
        ]

    async def refresh(self, sockets: dict[str, LocalSocket]) -> None:
        client = shared.redis_client()
        expiry = time.time() + _ttl()
        items = list(sockets.items())
        # In chunks: packing and parsing one pipeline for thousands of sockets is one
        # long stretch of the event loop; between chunks other work gets its turn.
        for at in range(0, len(items), REFRESH_CHUNK):
            async with client.pipeline(transaction=False) as pipe:
                for channel, s in items[at : at + REFRESH_CHUNK]:
                    k = self._keys(s.thread_id, s.user, s.session_id)
                    pipe.zadd(k["pt"], {channel: expiry})
                    pipe.expire(k["pt"], _ttl())
                    pipe.zadd(k["ss"], {channel: expiry})
                    pipe.expire(k["ss"], _ttl())
                    # The user's socket count (realtime.limits) lapses with them.
                    pipe.zadd(limits.sockets_key(s.user), {channel: expiry}, xx=True)
                    pipe.expire(limits.sockets_key(s.user), _ttl())
                    # Re-add after a Redis restart lost the set (no new join is sent).
                    pipe.sadd(k["pu"], s.user)
                    pipe.sadd(k["threads"], s.thread_id)
                await pipe.execute()

    async def present(self, thread_id: str) -> list[str]:
        members = await shared.redis_client().smembers(shared.key("pu", thread_id))
        return sorted(m.decode() for m in members)

    async def _overdue(self, socket_key: str, marker_key: str, now: float) -> bool:
        """Read-only twin of the reap scripts, for --dry-run."""
        client = shared.redis_client()
        if await client.zcount(socket_key, now, "+inf"):
            return False
        marker = await client.get(marker_key)
        return marker is None or float(marker.decode().rsplit("|", 1)[1]) <= now

    async def reap_users(self, *, dry_run: bool = False) -> list[tuple[str, str]]:
        """(thread, user) pairs whose presence expired with no live detach pending."""
        client = shared.redis_client()
        left = []
        now = time.time()
        for raw_thread in await client.smembers(shared.key("threads")):
            thread_id = raw_thread.decode()
            users = await client.smembers(shared.key("pu", thread_id))
            if not users:
                await client.srem(shared.key("threads"), thread_id)
            for raw_user in users:
                user = raw_user.decode()
                k = self._keys(thread_id, user, "-")
                if dry_run:
                    reaped = await self._overdue(k["pt"], k["dmu"], now)
                else:
                    reaped = await shared.script("reap", _REAP)(
                        keys=[k["pt"], k["dmu"], k["pu"]], args=[now, user]
                    )
                if reaped:
                    left.append((thread_id, user))
        return left

    async def sessions_reapable(
        self, session_ids: list[str], *, dry_run: bool = False
    ) -> list[bool]:
        """Per session: no live socket and no detach within its grace (clears it)."""
        now = time.time()
        keys = [self._keys("-", "-", session_id) for session_id in session_ids]
        if dry_run:
            return [await self._overdue(k["ss"], k["dms"], now) for k in keys]
        calls = [([k["ss"], k["dms"]], [now]) for k in keys]
        results = await shared.run_script_many("reap", _REAP, calls)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(r) for r in results]


@dataclass
class LocalPresence:
    """The same semantics in one process (embedded mode: no other instance exists)."""

    sockets_by_user: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    sockets_by_session: dict[str, set[str]] = field(default_factory=dict)
    present_users: dict[str, set[str]] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)

    async def attach(self, thread_id, user, session_id, channel) -> Attached:
        self.sockets_by_user.setdefault((thread_id, user), set()).add(channel)
        self.sockets_by_session.setdefault(session_id, set()).add(channel)
        users = self.present_users.setdefault(thread_id, set())
        joined = user not in users
        users.add(user)
        return Attached(joined, sorted(users))

    async def attach_many(self, attaches: list[tuple]) -> list:
        return [await self.attach(*a) for a in attaches]

    def _detach_start(self, thread_id, user, session_id, channel, marker) -> None:
        self.sockets_by_user.get((thread_id, user), set()).discard(channel)
        self.sockets_by_session.get(session_id, set()).discard(channel)
        self.markers[f"s:{session_id}"] = marker
        self.markers[f"u:{thread_id}:{user}"] = marker

    def _detach_finish(self, thread_id, user, session_id, marker) -> DetachOutcome:
        session_exec = left = False
        if self.markers.get(f"s:{session_id}") == marker:
            del self.markers[f"s:{session_id}"]
            session_exec = not self.sockets_by_session.get(session_id)
        if self.markers.get(f"u:{thread_id}:{user}") == marker:
            del self.markers[f"u:{thread_id}:{user}"]
            if not self.sockets_by_user.get((thread_id, user)):
                users = self.present_users.get(thread_id, set())
                left = user in users
                users.discard(user)
        return DetachOutcome(session_exec, left)

    async def detach_start_many(self, detaches: list[tuple]) -> list:
        return [self._detach_start(*d) for d in detaches]

    async def detach_finish_many(self, detaches: list[tuple]) -> list:
        return [self._detach_finish(*d) for d in detaches]

    async def refresh(self, sockets: dict[str, LocalSocket]) -> None:
        return None  # nothing expires in a single process

    async def present(self, thread_id: str) -> list[str]:
        return sorted(self.present_users.get(thread_id, set()))

    async def reap_users(self, *, dry_run: bool = False) -> list[tuple[str, str]]:
        return []  # the process that would have died is this one

    async def sessions_reapable(
        self, session_ids: list[str], *, dry_run: bool = False
    ) -> list[bool]:
        return [
            not self.sockets_by_session.get(s) and not self.markers.get(f"s:{s}")
            for s in session_ids
        ]


_local = LocalPresence()
_redis = RedisPresence()


def store() -> RedisPresence | LocalPresence:
    """The presence store for this configuration."""
    return _redis if settings.REDIS_URL else _local


def new_marker() -> str:
    """A detach marker: unique token and the time after which a reaper may act."""
    deadline = time.time() + settings.WS_CLEANUP_GRACE_SECONDS + 5
    return f"{uuid.uuid4().hex}|{deadline:.3f}"


# --- this process's sockets and its heartbeat ---------------------------------

_local_sockets: dict[str, LocalSocket] = {}
_heartbeat: "asyncio.Task | None" = None


def register_local(channel: str, socket: LocalSocket) -> None:
    """Track a socket of this process so its presence entries stay alive."""
    global _heartbeat
    _local_sockets[channel] = socket
    if _heartbeat is None or _heartbeat.done():
        _heartbeat = asyncio.get_running_loop().create_task(_heartbeat_loop())


def unregister_local(channel: str) -> None:
    _local_sockets.pop(channel, None)


def local_socket_count() -> int:
    """Sockets of this process (the emergence_ws_active_sockets gauge)."""
    return len(_local_sockets)


metrics.ACTIVE_SOCKETS.set_function(local_socket_count)


# Resyncs after an outage, a second apart: the layer resubscribes its channels a
# little after Redis answers again, and a message published in between reaches no
# open socket until a later message reveals the gap.
RESYNC_PASSES = 4


async def _heartbeat_loop() -> None:
    failing = False
    owed = 0
    while _local_sockets:
        # While Redis is away, look again every second: recovery starts the resync.
        pause = 1.0 if failing or owed else settings.PRESENCE_REFRESH_SECONDS
        await asyncio.sleep(pause)
        try:
            await asyncio.wait_for(
                store().refresh(dict(_local_sockets)), settings.PRESENCE_REFRESH_SECONDS
            )
        except Exception as exc:
            # Redis away: entries may lapse; reconnecting clients re-attach them.
            shared.warn_shared_failure(
                logger,
                exc,
                "presence_refresh_failed sockets=%d",
                len(_local_sockets),
                extra={"event": "presence_refresh_failed"},
            )
            failing = True
            continue
        if failing:
            failing = False
            owed = RESYNC_PASSES
        if owed:
            owed -= 1
            await _resync_local_sockets(announce=owed == RESYNC_PASSES - 1)


async def _resync_local_sockets(*, announce: bool = True) -> None:
    """After a Redis outage, ask every local socket to fill its gap from the DB.

    Messages broadcast while Redis was away never reached the layer; sockets that
    stayed open (the pubsub layer keeps them) would wait for the next message.
    """
    layer = get_channel_layer()
    channels = list(_local_sockets)
    if announce:
        logger.info(
            "channel_layer_recovered resync_sockets=%d",
            len(channels),
            extra={"event": "channel_layer_recovered", "sockets": len(channels)},
        )
    for channel in channels:
        try:
            await layer.send(channel, {"type": "chat.sync"})
        except Exception as exc:
            shared.warn_shared_failure(
                logger,
                exc,
                "resync_failed",
                extra={"event": "resync_failed"},
            )
            return
