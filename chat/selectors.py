"""Reads for threads and messages."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from chat.models import Message, Thread


def thread_get(*, thread_id: str) -> Thread | None:
    """The thread, or None."""
    return Thread.objects.filter(pk=thread_id).first()


def thread_user_allowed(*, thread: Thread, user: Any) -> bool:
    """Whether the user may read and write the thread."""
    if not thread.private:
        return True
    return thread.members.filter(pk=user.pk).exists()


def messages_after(*, thread_id: str, after_seq: int, limit: int) -> QuerySet[Message]:
    """Up to `limit` messages with seq > after_seq, seq ascending."""
    return (
        Message.objects.filter(thread_id=thread_id, seq__gt=after_seq)
        .select_related("user")
        .order_by("seq")[:limit]
    )


@dataclass(frozen=True)
class Replay:
    """What a reconnecting client missed: all of it, or nothing when too much.

    `reset`: the client's history is not the thread's (another epoch, or a last_seq
    above the thread's): it drops what it holds and reloads over HTTP.
    """

    last_seq: int
    messages: list[Message]
    recovered: bool
    epoch: str = ""
    reset: bool = False


def replay_window(
    *,
    thread_id: str,
    after_seq: int | None,
    max_replay: int,
    epoch: str | None = None,
) -> Replay:
    """The thread's newest seq and the messages after `after_seq`, never partial."""
    (replay,) = replay_windows(
        windows=[(thread_id, after_seq)], max_replay=max_replay, epochs=[epoch]
    )
    return replay


def replay_windows(
    *,
    windows: Sequence[tuple[str, int | None]],
    max_replay: int,
    last_seqs: Mapping[str, int] | None = None,
    epochs: Sequence[str | None] | None = None,
    thread_epochs: Mapping[str, str] | None = None,
) -> list[Replay]:
    """replay_window for many (thread id, after_seq) windows, in two queries at most.

    The threads' newest seqs and epochs in one query (unless the caller read them,
    after its sockets joined their groups: `last_seqs`, `thread_epochs`); then, for
    every thread with a socket behind, its messages from the smallest after_seq up
    to that seq in one more (never more than max_replay per thread), split per
    socket here. `epochs`: each window's epoch as its client sent it, or None.
    """
    if last_seqs is None or thread_epochs is None:
        ids = {thread_id for thread_id, _ in windows}
        rows = Thread.objects.filter(pk__in=ids).values_list("pk", "last_seq", "epoch")
        last_seqs = {pk: last_seq for pk, last_seq, _ in rows}
        thread_epochs = {pk: epoch for pk, _, epoch in rows}
    client_epochs = list(epochs) if epochs is not None else [None] * len(windows)
    stale = [
        _stale(after_seq, epoch, last_seqs.get(tid, 0), thread_epochs.get(tid, ""))
        for (tid, after_seq), epoch in zip(windows, client_epochs, strict=True)
    ]
    behind: dict[str, int] = {}
    for (thread_id, after_seq), reset in zip(windows, stale, strict=True):
        last_seq = last_seqs.get(thread_id, 0)
        if not reset and _replayable(after_seq, last_seq, max_replay):
            behind[thread_id] = min(after_seq, behind.get(thread_id, after_seq))
    by_thread = _messages_behind(behind, last_seqs)
    return [
        _window(
            after_seq,
            last_seqs.get(thread_id, 0),
            by_thread.get(thread_id, []),
            max_replay,
            epoch=thread_epochs.get(thread_id, ""),
            stale=reset,
        )
        for (thread_id, after_seq), reset in zip(windows, stale, strict=True)
    ]


def _messages_behind(
    behind: Mapping[str, int], last_seqs: Mapping[str, int]
) -> dict[str, list[Message]]:
    """Per thread, its messages after `behind[thread]` up to last_seq, in one query."""
    by_thread: dict[str, list[Message]] = {thread_id: [] for thread_id in behind}
    if behind:
        ranges = Q()
        for thread_id, after_seq in behind.items():
            upto = last_seqs[thread_id]
            ranges |= Q(thread_id=thread_id, seq__gt=after_seq, seq__lte=upto)
        for message in (
            Message.objects.filter(ranges).select_related("user").order_by("seq")
        ):
            by_thread[message.thread_id].append(message)
    return by_thread


def _stale(
    after_seq: int | None, epoch: str | None, last_seq: int, thread_epoch: str
) -> bool:
    """Whether a client holds another history: another epoch, or a seq above ours."""
    # A last_seq above the thread's means the database went back in time (a
    # failover or a restore): the seqs it hands out next would look old.
    if epoch is not None and epoch != thread_epoch:
        return True
    return after_seq is not None and after_seq > last_seq


def _replayable(after_seq: int | None, last_seq: int, max_replay: int) -> bool:
    """Whether a socket is behind by at least one and at most max_replay messages."""
    return after_seq is not None and 0 < last_seq - after_seq <= max_replay


def _window(
    after_seq: int | None,
    last_seq: int,
    messages: list[Message],
    max_replay: int,
    *,
    epoch: str,
    stale: bool,
) -> Replay:
    """One socket's Replay, from its thread's messages up to last_seq."""
    if stale:
        return Replay(last_seq, [], recovered=False, epoch=epoch, reset=True)
    if after_seq is None or after_seq >= last_seq:
        return Replay(last_seq=last_seq, messages=[], recovered=True, epoch=epoch)
    if not _replayable(after_seq, last_seq, max_replay):
        # Never partial: the client fetches them over HTTP.
        return Replay(last_seq=last_seq, messages=[], recovered=False, epoch=epoch)
    # Messages committed after last_seq was read reach the socket through the
    # group, which it joined before: the caller's seq dedup keeps the order.
    mine = [m for m in messages if m.seq > after_seq]
    return Replay(last_seq=last_seq, messages=mine, recovered=True, epoch=epoch)


def messages_between(*, thread_id: str, after_seq: int, upto_seq: int) -> list[Message]:
    """Messages with after_seq < seq <= upto_seq, to fill a gap in live delivery."""
    return list(
        Message.objects.filter(
            thread_id=thread_id, seq__gt=after_seq, seq__lte=upto_seq
        )
        .select_related("user")
        .order_by("seq")
    )


def messages_latest(*, thread_id: str, limit: int) -> list[Message]:
    """The thread's newest `limit` messages, seq ascending (the chat page's history)."""
    newest = (
        Message.objects.filter(thread_id=thread_id)
        .select_related("user")
        .order_by("-seq")[:limit]
    )
    return list(reversed(newest))


def messages_before(
    *, thread_id: str, before_seq: int | None, limit: int
) -> list[Message]:
    """The newest `limit` messages below before_seq (any if None), ascending."""
    rows = Message.objects.filter(thread_id=thread_id)
    if before_seq is not None:
        rows = rows.filter(seq__lt=before_seq)
    newest = rows.select_related("user").order_by("-seq")[:limit]
    return list(reversed(newest))


def threads_for_user(*, user: Any, limit: int) -> list[Thread]:
    """Threads the user may open: their own and private ones first, then public."""
    # Own threads first: anyone can create public threads whose ids sort early,
    # and must not push the user's own out of the sidebar's `limit`.
    own = list(
        Thread.objects.filter(Q(created_by=user) | Q(members=user))
        .distinct()
        .order_by("id")[:limit]
    )
    public = (
        Thread.objects.filter(private=False)
        .exclude(pk__in=[thread.pk for thread in own])
        .order_by("id")[: max(0, limit - len(own))]
    )
    return own + list(public) if len(own) < limit else own


def private_threads_for_user(*, user: Any, limit: int) -> list[str]:
    """The ids of the private threads the user is a member of, by id."""
    rows = Thread.objects.filter(private=True, members=user).order_by("id")
    return list(rows.values_list("id", flat=True)[:limit])
