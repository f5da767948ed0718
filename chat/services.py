"""Writes for threads and messages."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction

from chat import limits
from chat.models import Message, Thread
from ops import metrics
from ops.rows import rows_by_pk


class ThreadForbidden(Exception):
    """The thread is private and the user is not a member."""


class ThreadExists(Exception):
    """A thread with that id already exists."""


class ThreadQuotaExceeded(Exception):
    """The user created THREAD_CREATE_LIMIT threads within the hour already."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


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


def thread_join_many(
    *, joins: Sequence[tuple[str, Any]], create: bool = True
) -> list[Thread | ThreadForbidden | None]:
    """Threads for many (thread id, user) joins: one read, one membership query.

    Per join: the thread, created public on first use (one INSERT and one re-read
    for all the missing ones); ThreadForbidden if it is private to others; None for
    a missing thread when not `create`.
    """
    ids = sorted({thread_id for thread_id, _ in joins})
    threads = rows_by_pk(Thread, ids)
    missing = [thread_id for thread_id in ids if thread_id not in threads]
    if create and missing:
        # Another instance (or POST /api/threads, private) may create one at the same
        # time: insert what is still missing, then read back what won.
        # The first joiner is its creator: their own threads lead their sidebar.
        creators = dict(reversed(joins))
        Thread.objects.bulk_create(
            [Thread(id=tid, created_by=creators[tid]) for tid in missing],
            ignore_conflicts=True,
        )
        threads.update(rows_by_pk(Thread, missing))
    members = _memberships(threads, joins)
    joined: list[Thread | ThreadForbidden | None] = []
    for thread_id, user in joins:
        thread = threads.get(thread_id)
        allowed = thread is None or not thread.private
        if allowed or (thread_id, user.pk) in members:
            joined.append(thread)
        else:
            joined.append(ThreadForbidden(thread_id))
    return joined


def _memberships(
    threads: dict[str, Thread], joins: Sequence[tuple[str, Any]]
) -> set[tuple[str, Any]]:
    """The (thread id, user pk) pairs of private threads that are memberships."""
    private = {
        (thread_id, user.pk)
        for thread_id, user in joins
        if thread_id in threads and threads[thread_id].private
    }
    if not private:
        return set()
    through = Thread.members.through
    thread_field = Thread.members.field.m2m_field_name()
    user_field = Thread.members.field.m2m_reverse_field_name()
    rows = through.objects.filter(
        **{
            f"{thread_field}__in": {thread_id for thread_id, _ in private},
            f"{user_field}__in": {user_pk for _, user_pk in private},
        }
    ).values_list(f"{thread_field}_id", f"{user_field}_id")
    return private & set(rows)


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
    retry_after = limits.thread_quota_take(creator)
    if retry_after:
        raise ThreadQuotaExceeded(retry_after)
    try:
        with transaction.atomic():
            thread = Thread.objects.create(
                id=thread_id, private=private, created_by=creator
            )
            thread.members.add(creator, *users)
    except IntegrityError as exc:
        limits.thread_quota_refund(creator)
        raise ThreadExists(thread_id) from exc
    return thread


@dataclass(frozen=True)
class MessageResult:
    """A stored message and whether it was a resend of one stored before."""

    message: Message
    duplicate: bool


@dataclass(frozen=True)
class NewMessage:
    """One message to store: its thread, its sender, the sender's id for it, text."""

    thread_id: str
    user: Any
    client_id: str
    text: str


# (thread_id, user pk, client_id): what makes a message a resend of another.
MessageKey = tuple[str, Any, str]


def _key(item: NewMessage) -> MessageKey:
    return (item.thread_id, item.user.pk, item.client_id)


def message_create_many(*, items: list[NewMessage]) -> list[MessageResult | Exception]:
    """Store a batch in one transaction: one result (or error) per item, in order.

    Per thread, in one commit: the row lock, the resend lookup, one bump of last_seq
    by the number of new messages, one multi-row insert. A resend (of a stored id
    or of an earlier item) is answered with the original, duplicate=True. A missing
    thread or a private one the sender is not in fails that item alone. A failing
    statement rolls back the whole batch, bumps included (seqs stay gap-free), and
    raises: the caller decides whether to retry the items one by one.
    """
    if not items:
        return []
    with transaction.atomic():
        private = _lock_threads({item.thread_id for item in items})
        errors = _refusals(items, private)
        valid = [item for index, item in enumerate(items) if index not in errors]
        # Looked up after the locks, not before: in READ COMMITTED every statement
        # sees what was committed before it started, so a resend of the same id
        # that another instance committed while we waited for the lock is found
        # here rather than inserted twice. Everyone who writes a thread's messages
        # holds its lock until commit.
        # https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED
        stored = _stored_messages(valid)
        fresh: dict[MessageKey, Message] = {}
        for item in valid:
            key = _key(item)
            if key not in stored and key not in fresh:
                fresh[key] = Message(
                    thread_id=item.thread_id,
                    client_id=item.client_id,
                    user=item.user,
                    text=item.text,
                )
        _number(list(fresh.values()))
        Message.objects.bulk_create(list(fresh.values()))
        metrics.messages_stored(len(fresh))
    return _results(items, errors, stored, fresh)


def _lock_threads(thread_ids: set[str]) -> dict[str, bool]:
    """Lock the threads' rows until commit; thread id -> private (absent: missing)."""
    # In id order: two batches locking overlapping threads take the locks in the
    # same order and cannot deadlock. PostgreSQL sorts before it locks.
    # https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE
    rows = (
        Thread.objects.select_for_update()
        .filter(pk__in=thread_ids)
        .order_by("pk")
        .values_list("pk", "private")
    )
    return dict(rows)


def _refusals(
    items: list[NewMessage], private: dict[str, bool]
) -> dict[int, Exception]:
    """Item index -> why it cannot be stored: a missing thread, or not a member."""
    closed = {thread_id for thread_id, is_private in private.items() if is_private}
    members: set[tuple[str, Any]] = set()
    if closed:
        membership = Thread.members.through.objects.filter(
            thread_id__in=closed, user_id__in={item.user.pk for item in items}
        )
        members = set(membership.values_list("thread_id", "user_id"))
    errors: dict[int, Exception] = {}
    for index, item in enumerate(items):
        if item.thread_id not in private:
            errors[index] = Thread.DoesNotExist(f"no thread {item.thread_id!r}")
        elif item.thread_id in closed and (item.thread_id, item.user.pk) not in members:
            errors[index] = ThreadForbidden(item.thread_id)
    return errors


def _stored_messages(items: list[NewMessage]) -> dict[MessageKey, Message]:
    """The items' messages stored before (resends), by their key."""
    keys = {_key(item) for item in items}
    if not keys:
        return {}
    quote = connection.ops.quote_name
    meta = Message._meta
    fields = ("thread", "user", "client_id")
    columns = ", ".join(quote(meta.get_field(name).column) for name in fields)
    rows = ", ".join("(%s, %s, %s)" for _ in keys)
    # A row-value IN: one probe of the unique (thread, user, client_id) index per
    # key, exact. PostgreSQL and SQLite (3.15+) both have it; the ORM's OR of one
    # Q per key cost more to build and to plan than the whole insert.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote(meta.pk.column)} FROM {quote(meta.db_table)} "
            f"WHERE ({columns}) IN (VALUES {rows})",
            [value for key in keys for value in key],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return {}  # the usual case: resends are rare
    found = Message.objects.select_related("user").filter(pk__in=ids)
    return {(m.thread_id, m.user_id, m.client_id): m for m in found}


def _number(messages: list[Message]) -> None:
    """Give new messages their seqs: one bump of each thread's last_seq, RETURNING."""
    counts = Counter(message.thread_id for message in messages)
    if not counts:
        return
    quote = connection.ops.quote_name
    table = quote(Thread._meta.db_table)
    seq = quote(Thread._meta.get_field("last_seq").column)
    pk = quote(Thread._meta.pk.column)
    cases = " ".join("WHEN %s THEN %s" for _ in counts)
    listed = ", ".join("%s" for _ in counts)
    params = [value for pair in counts.items() for value in pair] + list(counts)
    # One statement for every thread of the batch. PostgreSQL and SQLite (3.35+)
    # both support RETURNING; the rows are already locked by _lock_threads.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {seq} = {seq} + CASE {pk} {cases} END "
            f"WHERE {pk} IN ({listed}) RETURNING {pk}, {seq}",
            params,
        )
        last = dict(cursor.fetchall())
    # The first new message of a thread gets last - count + 1, in item order.
    following = {thread_id: last[thread_id] - n for thread_id, n in counts.items()}
    for message in messages:
        following[message.thread_id] += 1
        message.seq = following[message.thread_id]


def _results(
    items: list[NewMessage],
    errors: dict[int, Exception],
    stored: dict[MessageKey, Message],
    fresh: dict[MessageKey, Message],
) -> list[MessageResult | Exception]:
    """One result per item: its error, its new message, or the original it resends."""
    results: list[MessageResult | Exception] = []
    answered: set[MessageKey] = set()
    for index, item in enumerate(items):
        key = _key(item)
        if index in errors:
            results.append(errors[index])
        elif key in stored:
            results.append(MessageResult(stored[key], duplicate=True))
        else:
            # The first item with a key stored it; a later one in the batch resends.
            results.append(MessageResult(fresh[key], duplicate=key in answered))
            answered.add(key)
    return results


def message_create(
    *, thread_id: str, user: Any, client_id: str, text: str
) -> MessageResult:
    """Store one message (message_create_many with one item); its error raised."""
    item = NewMessage(thread_id=thread_id, user=user, client_id=client_id, text=text)
    (result,) = message_create_many(items=[item])
    if isinstance(result, Exception):
        raise result
    return result
