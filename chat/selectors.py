"""Reads for threads and messages."""

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
    """What a reconnecting client missed: all of it, or nothing when too much."""

    last_seq: int
    messages: list[Message]
    recovered: bool


def replay_window(*, thread_id: str, after_seq: int | None, max_replay: int) -> Replay:
    """The thread's newest seq and the messages after `after_seq`, never partial."""
    last_seq = (
        Thread.objects.filter(pk=thread_id).values_list("last_seq", flat=True).first()
        or 0
    )
    if after_seq is None or after_seq >= last_seq:
        return Replay(last_seq=last_seq, messages=[], recovered=True)
    if last_seq - after_seq > max_replay:
        return Replay(last_seq=last_seq, messages=[], recovered=False)
    messages = list(
        messages_after(thread_id=thread_id, after_seq=after_seq, limit=max_replay)
    )
    # Rows committed after we read last_seq are fine: seq order is kept by the caller.
    return Replay(last_seq=last_seq, messages=messages, recovered=True)


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


def threads_for_user(*, user: Any, limit: int) -> list[Thread]:
    """Threads the user may open: every public one and their private ones, by id."""
    return list(
        Thread.objects.filter(Q(private=False) | Q(members=user))
        .distinct()
        .order_by("id")[:limit]
    )
