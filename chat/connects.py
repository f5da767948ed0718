"""Sockets opening at once share one database round (one transaction, one hop).

Every socket's connect needs its thread, its session, a connect event and its
replay. One by one that is a thread hop and a commit per socket, and commits are
what the database can do fewest of; so the sockets of a burst on this process are
coalesced (ops.batching.Coalescer) into one call of bulk statements whose count
does not grow with the burst. Each socket still gets its own answer or refusal.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from chat import limits
from chat.models import Thread
from chat.selectors import Replay, replay_windows
from chat.services import ThreadForbidden, ThreadQuotaExceeded, thread_join_many
from ops.batching import Coalescer
from ops.db import db_call
from sessions_app.services import SessionConnect, session_ensure_many


@dataclass(frozen=True)
class SocketOpen:
    """One socket's connect, as socket_open_many takes it."""

    session_id: str
    user: Any  # an authenticated user
    thread_id: str
    instance: str
    after_seq: int | None  # the client's last_seq, if it sent one
    epoch: str | None = None  # the thread's epoch as the client last saw it


@dataclass(frozen=True)
class SocketOpened:
    """A socket's session is set up: whether it was seen before, and its replay."""

    resumed: bool
    replay: Replay


def socket_open_many(
    *, opens: Sequence[SocketOpen], max_replay: int
) -> list[SocketOpened | Exception]:
    """Many sockets' DB work at connect, for one db_call (one thread hop).

    Threads, sessions and connect events commit together, so a retry never
    half-applies them. Per socket: SocketOpened, or ThreadForbidden /
    SessionForbidden for that socket alone, with nothing recorded for it; a
    refused socket creates no thread. The threads' seqs are read first, the
    replays after the commit; the callers joined their threads' groups before, so
    nothing committed in between is missed (seq dedups the overlap).
    """
    results: list[SocketOpened | Exception | None] = [None] * len(opens)
    threads: dict[str, Thread] = {}  # the sockets' threads, as read or created
    with transaction.atomic():
        # Threads are read first and created only for sockets whose session is
        # theirs (admit, below): a refused socket must not leave a thread behind.
        joins = [(o.thread_id, o.user) for o in opens]
        pending = []
        for i, thread in enumerate(thread_join_many(joins=joins, create=False)):
            if isinstance(thread, ThreadForbidden):
                results[i] = thread
                continue
            pending.append(i)
            if thread is not None:
                threads[thread.pk] = thread
        sessions = session_ensure_many(
            connects=[_session_connect(opens[i]) for i in pending],
            admit=lambda connects: _create_threads(connects, threads),
        )
    admitted = [
        opens[i]
        for i, session in zip(pending, sessions, strict=True)
        if not isinstance(session, Exception)
    ]
    replays = iter(_replays(admitted, threads, max_replay))
    for i, session in zip(pending, sessions, strict=True):
        if isinstance(session, Exception):
            results[i] = session
        else:
            results[i] = SocketOpened(resumed=session.resumed, replay=next(replays))
    return results  # type: ignore[return-value] - every slot is filled above


def _replays(
    admitted: list[SocketOpen], threads: dict[str, Thread], max_replay: int
) -> list[Replay]:
    """The admitted sockets' replays, against their threads as read above."""
    # The threads' seqs and epochs as this round read them from the database (never
    # a cache: a database gone back in time must show), after the callers joined
    # their groups.
    return replay_windows(
        windows=[(o.thread_id, o.after_seq) for o in admitted],
        max_replay=max_replay,
        last_seqs={tid: thread.last_seq for tid, thread in threads.items()},
        epochs=[o.epoch for o in admitted],
        thread_epochs={tid: thread.epoch for tid, thread in threads.items()},
    )


def _session_connect(open_: SocketOpen) -> SessionConnect:
    return SessionConnect(
        session_id=open_.session_id,
        user=open_.user,
        thread_id=open_.thread_id,
        instance=open_.instance,
    )


def _create_threads(
    connects: list[SessionConnect], threads: dict[str, Thread]
) -> list[Exception | None]:
    """Create the admitted sockets' missing threads; refuse a raced private one."""
    refusals: list[Exception | None] = [None] * len(connects)
    todo = [k for k, c in enumerate(connects) if c.thread_id not in threads]
    creating: set[str] = set()
    for k in todo:
        if connects[k].thread_id in creating:
            continue  # joins a thread this burst creates: as if it existed
        # Creating a thread counts once against its creator's THREAD_CREATE_LIMIT,
        # the first joiner let through (thread_join_many's creator), as it did when
        # each socket opened alone and the rest found the thread there.
        retry_after = limits.thread_quota_take(connects[k].user)
        if retry_after:
            refusals[k] = ThreadQuotaExceeded(retry_after)
        else:
            creating.add(connects[k].thread_id)
    todo = [k for k in todo if refusals[k] is None]
    if todo:
        joined = thread_join_many(
            joins=[(connects[k].thread_id, connects[k].user) for k in todo]
        )
        for k, thread in zip(todo, joined, strict=True):
            if isinstance(thread, ThreadForbidden):
                refusals[k] = thread
            else:
                threads[connects[k].thread_id] = thread
    return refusals


async def socket_open_batched(request: SocketOpen) -> SocketOpened:
    """Open one socket's session with the rest of its burst (DB retry helper).

    Raises DatabaseUnavailable, ThreadForbidden or SessionForbidden.
    """
    return await _opens.submit(request)


async def _open_many(opens: list[SocketOpen]) -> list[SocketOpened | Exception]:
    return await db_call(
        socket_open_many,
        opens=opens,
        max_replay=settings.WS_MAX_REPLAY,
        op="session_open",
    )


_opens: Coalescer[SocketOpen, SocketOpened | Exception] = Coalescer(_open_many)
