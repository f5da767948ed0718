"""Writes for threads and messages."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction

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


def _next_seq(*, thread_id: str) -> int:
    """Bump the thread's seq and return it; the row stays locked until commit."""
    # One UPDATE ... RETURNING instead of SELECT FOR UPDATE + UPDATE: a round trip and
    # an ORM query fewer per message. PostgreSQL and SQLite (3.35+) both take the row
    # lock / write lock on the UPDATE.
    quote = connection.ops.quote_name
    table = quote(Thread._meta.db_table)
    seq_column = quote(Thread._meta.get_field("last_seq").column)
    pk_column = quote(Thread._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {seq_column} = {seq_column} + 1 "
            f"WHERE {pk_column} = %s RETURNING {seq_column}",
            [thread_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Thread.DoesNotExist(f"no thread {thread_id!r}")
    return row[0]


def message_create(
    *, thread_id: str, user: Any, client_id: str, text: str
) -> MessageResult:
    """Store a message with the thread's next seq; idempotent on (thread, user, id).

    The seq comes from a row lock on the thread, so concurrent writers on any number
    of instances get 1, 2, 3 ... with no gaps: a failed insert rolls the bump back.
    A resend is found by the unique (thread, user, id) constraint rather than by a
    query before every message: resends are rare, messages are not.
    """
    try:
        with transaction.atomic():
            seq = _next_seq(thread_id=thread_id)
            message = Message.objects.create(
                thread_id=thread_id, seq=seq, client_id=client_id, user=user, text=text
            )
    except IntegrityError:
        # A resend of an id stored before (or concurrently): answer with its seq.
        existing = _existing(thread_id=thread_id, user=user, client_id=client_id)
        if existing is None:
            raise
        return MessageResult(existing, duplicate=True)
    message.user = user
    return MessageResult(message, duplicate=False)
