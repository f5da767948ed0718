"""Fixtures for the chat tests."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(fast_password_hasher):
    """Users made here are never logged in by a Daphne subprocess."""


@pytest.fixture
def make_thread():
    from chat.models import Thread

    def make(thread_id: str = "t1", *, private: bool = False, members=()):
        thread = Thread.objects.create(id=thread_id, private=private)
        thread.members.add(*members)
        return thread

    return make


@pytest.fixture
def post():
    """Store messages through the real service: post(thread_id, user, n)."""
    from chat.services import message_create

    def write(thread_id, user, n=1, prefix="m"):
        return [
            message_create(
                thread_id=thread_id,
                user=user,
                client_id=f"{prefix}{i}",
                text=f"text {prefix}{i}",
            ).message
            for i in range(1, n + 1)
        ]

    return write
