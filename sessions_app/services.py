"""Writes for chat sessions and connection events."""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app.bulk import (
    events_insert,
    sessions_count_connects,
    sessions_insert_missing,
    sessions_lock,
    sessions_lock_owners,
    sessions_touch,
)
from sessions_app.models import ChatSession, ConnectionEvent


class SessionForbidden(Exception):
    """The session id belongs to another user."""


@dataclass(frozen=True)
class SessionOpened:
    """A socket's session, and whether it was seen before (resumed)."""

    session: ChatSession
    resumed: bool


@dataclass(frozen=True)
class SessionConnect:
    """One new socket's session request, as session_ensure_many takes it."""

    session_id: str
    user: Any  # an authenticated user
    thread_id: str
    instance: str


# Called with the owned requests once their rows are locked, before anything is
# counted: per request None (admitted) or the exception that refuses it.
Admit = Callable[[list[SessionConnect]], list[Exception | None]]
LOCK_PASSES = 3


def session_ensure(
    *, session_id: str, user: Any, thread_id: str, instance: str
) -> SessionOpened:
    """Load or create the session for a new socket; SessionForbidden if not the owner.

    Also records the connect event, in the same transaction as the session (the
    caller's, when it has one open), so a retry never half-applies it.
    """
    connect = SessionConnect(session_id, user, thread_id, instance)
    (result,) = session_ensure_many(connects=[connect])
    if isinstance(result, Exception):
        raise result
    return result


def session_ensure_many(
    *, connects: Sequence[SessionConnect], admit: Admit | None = None
) -> list[SessionOpened | Exception]:
    """Load or create many sockets' sessions and record their connect events.

    Four statements for the lot, in the caller's transaction (or one of its own):
    insert the missing rows, lock all rows, update the counted ones, insert the
    events. Per request: SessionOpened, SessionForbidden (another user's session),
    or the exception `admit` refused it with; nothing is recorded for a refusal.
    Requests for one session count in their order, as one by one would.
    """
    now = timezone.now()
    # No savepoint: nothing in here raises on purpose, refusals are results, so the
    # caller's transaction stays usable (a savepoint costs two statements).
    with transaction.atomic(savepoint=False):
        rows = _lock_sessions(connects, now)
        results: list[SessionOpened | Exception | None] = [
            None
            if rows[c.session_id].owner_id == c.user.pk
            else SessionForbidden(c.session_id)
            for c in connects
        ]
        owned = [i for i, result in enumerate(results) if result is None]
        if admit is not None:
            refusals = admit([connects[i] for i in owned])
            for i, refusal in zip(owned, refusals, strict=True):
                results[i] = refusal
        admitted = [i for i in owned if results[i] is None]
        refused = {connects[i].session_id for i in owned if results[i] is not None}
        resumed = []
        for i in admitted:
            row = rows[connects[i].session_id]
            resumed.append(
                _count_connect(row, thread_id=connects[i].thread_id, now=now)
            )
            results[i] = SessionOpened(session=row, resumed=resumed[-1])
        _drop_uncounted(rows, refused)
        _write_connects(rows, [connects[i] for i in admitted], resumed, now)
    return results  # type: ignore[return-value] - every slot is filled above


def _lock_sessions(
    connects: Sequence[SessionConnect], now: datetime
) -> dict[str, ChatSession]:
    """Every requested session row, created when missing, locked (FOR UPDATE).

    Inserts first, then locks, both in id order: two batches on any instances then
    take their row locks in one order and cannot deadlock. A row inserted here has
    connect_count 0 until counted, so it counts as new; one that another instance
    created and committed meanwhile (count 1 or more) counts as seen before.
    """
    creators: dict[str, SessionConnect] = {}
    for connect in connects:
        creators.setdefault(connect.session_id, connect)
    rows: dict[str, ChatSession] = {}
    # A row deleted between the insert and the lock (purge_sessions) is not
    # returned by the lock: insert it again.
    for _ in range(LOCK_PASSES):
        missing = sorted(creators.keys() - rows.keys())
        if not missing:
            return rows
        sessions_insert_missing(
            rows=[_new_row(creators[session_id]) for session_id in missing],
            now=now,
        )
        rows.update((row.pk, row) for row in sessions_lock(ids=missing))
    raise RuntimeError(f"sessions vanished while locked: {sorted(creators)}")


def _new_row(connect: SessionConnect) -> ChatSession:
    # Active, seen now and uncounted: sessions_insert_missing sets the rest.
    return ChatSession(
        id=connect.session_id, owner_id=connect.user.pk, thread_key=connect.thread_id
    )


def _count_connect(session: ChatSession, *, thread_id: str, now: datetime) -> bool:
    """Count a connect on an owned, locked row (saved later); whether it resumes."""
    resumed = session.connect_count > 0
    # The row is locked (FOR UPDATE): plain values are safe, and the saved object
    # needs no refresh.
    session.thread_key = thread_id
    session.status = ChatSession.Status.ACTIVE
    session.last_seen_at = now
    session.connect_count += 1
    session.resumed_count += 1 if resumed else 0
    return resumed


def _drop_uncounted(rows: dict[str, ChatSession], refused: set[str]) -> None:
    """Delete the rows inserted above for requests that admit then refused."""
    # Still at count 0: no request counted them, and any committed row has a
    # count of 1 or more, so these were inserted by this transaction.
    strays = [pk for pk in sorted(refused) if rows[pk].connect_count == 0]
    if strays:
        ChatSession.objects.filter(pk__in=strays, connect_count=0).delete()


def _write_connects(
    rows: dict[str, ChatSession],
    admitted: list[SessionConnect],
    resumed: list[bool],
    now: datetime,
) -> None:
    """Save the counted rows and insert the connect events (one statement each)."""
    if not admitted:
        return
    # The rows are locked (FOR UPDATE): the increments equal the Python values.
    sessions_count_connects(
        thread_keys={c.session_id: rows[c.session_id].thread_key for c in admitted},
        connects=Counter(c.session_id for c in admitted),
        resumes=Counter(
            c.session_id for c, again in zip(admitted, resumed, strict=True) if again
        ),
        now=now,
    )
    events_insert(
        events=[
            ConnectionEvent(
                session_id=connect.session_id,
                session_key=connect.session_id,
                user_id=connect.user.pk,
                thread_key=connect.thread_id,
                kind=ConnectionEvent.Kind.CONNECT,
                instance=connect.instance,
            )
            for connect in admitted
        ],
        now=now,
    )


@dataclass(frozen=True)
class SocketClosed:
    """One closed socket, as session_detach_many records it."""

    session_id: str
    user: Any
    thread_id: str
    code: int
    reason: str
    duration_s: float
    instance: str


def session_detach_many(closed: list[SocketClosed]) -> None:
    """Record sockets' closes (last seen, ConnectionEvent) in three statements.

    The sessions' status is not touched here: the grace-period cleanup marks one idle
    once no socket of it came back on any instance (sessions_app/cleanup.py).
    """
    now = timezone.now()
    with transaction.atomic():
        wanted = {
            c.session_id for c in closed if getattr(c.user, "is_authenticated", False)
        }
        # Locked in id order, as session_ensure_many locks: no deadlock between a
        # burst of closes and the reconnects of the same sessions.
        owners = sessions_lock_owners(ids=wanted)

        def owned(c: SocketClosed) -> bool:
            user_pk = getattr(c.user, "pk", None)
            return user_pk is not None and owners.get(c.session_id) == user_pk

        sessions_touch(ids=(c.session_id for c in closed if owned(c)), now=now)
        events = [
            ConnectionEvent(
                session_id=c.session_id if owned(c) else None,
                session_key=c.session_id[:64],
                user=c.user if getattr(c.user, "is_authenticated", False) else None,
                thread_key=c.thread_id[:64],
                kind=ConnectionEvent.Kind.DISCONNECT,
                code=c.code,
                reason=c.reason,
                duration_s=c.duration_s,
                instance=c.instance[:128],
            )
            for c in closed
        ]
        events_insert(events=events, now=now)


def session_mark_idle_many(session_ids: list[str]) -> int:
    """Mark active sessions idle after their cleanup, in two statements; how many."""
    active = ChatSession.objects.filter(
        pk__in=set(session_ids), status=ChatSession.Status.ACTIVE
    )
    with transaction.atomic(savepoint=False):
        # Locked in id order first, as session_ensure_many locks: an UPDATE alone
        # locks rows in whatever order its plan reads them, which can deadlock
        # with a batch of reconnects holding some of them.
        ids = list(active.select_for_update().order_by("pk").values_list("pk"))
        if not ids:
            return 0
        return active.update(
            status=ChatSession.Status.IDLE, last_seen_at=timezone.now()
        )
