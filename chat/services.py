"""Writes for threads and messages."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F

from chat.models import Message, Thread


class ThreadForbidden(Exception):
    """The thread is private and the user is not a member."""


class ThreadExists(Exception):
    """A thread with that id already exists."""


class UnknownMembers(Exception):
    """Some member usernames name no user."""

    def __init__(self, usernames: list[str]) -> None:
        super().__init__(", ".join(usernames))
        self.usernames = usernames


def thread_join(*, thread_id: str, user: Any) -> Thread:
    """The thread, created public on first use; ThreadForbidden if private to others."""
    thread, _ = Thread.objects.get_or_create(pk=thread_id)
    if thread.private and not thread.members.filter(pk=user.pk).exists():
        raise ThreadForbidden(thread_id)
    return thread


def thread_create(
    *, thread_id: str, private: bool, member_usernames: list[str], creator: Any
) -> Thread:
    """Create a thread with its members (the creator always among them)."""
    users = list(
        get_user_model()._default_manager.filter(username__in=member_usernames)
    )
    missing = sorted(set(member_usernames) - {u.get_username() for u in users})
    if missing:
        raise UnknownMembers(missing)
    try:
        with transaction.atomic():
            thread = Thread.objects.create(
                id=thread_id, private=private, created_by=creator
            )
            thread.members.add(creator, *users)
    except IntegrityError as exc:
        raise ThreadExists(thread_id) from exc
    return thread


@dataclass(frozen=True)
class MessageResult:
    """A stored message and whether it was a resend of one stored before."""

    message: Message
    duplicate: bool


def _existing(*, thread_id: str, user: Any, client_id: str) -> Message | None:
    return (
        Message.objects.select_related("user")
        .filter(thread_id=thread_id, user=user, client_id=client_id)
        .first()
    )


def message_create(
    *, thread_id: str, user: Any, client_id: str, text: str
) -> MessageResult:
    """Store a message with the thread's next seq; idempotent on (thread, user, id).

    The seq comes from a row lock on the thread, so concurrent writers on any number
    of instances get 1, 2, 3 ... with no gaps: a failed insert rolls the bump back.
    """
    existing = _existing(thread_id=thread_id, user=user, client_id=client_id)
    if existing is not None:
        return MessageResult(existing, duplicate=True)
    try:
        with transaction.atomic():
            thread = (
                Thread.objects.select_for_update().only("last_seq").get(pk=thread_id)
            )
            seq = thread.last_seq + 1
            Thread.objects.filter(pk=thread_id).update(last_seq=F("last_seq") + 1)
            message = Message.objects.create(
                thread_id=thread_id, seq=seq, client_id=client_id, user=user, text=text
            )
    except IntegrityError:
        # A concurrent resend of the same id won the race: answer with its seq.
        existing = _existing(thread_id=thread_id, user=user, client_id=client_id)
        if existing is None:
            raise
        return MessageResult(existing, duplicate=True)
    message.user = user
    return MessageResult(message, duplicate=False)
