"""Fixtures for the chat tests."""

import logging

import pytest

from tests.sessions_app.conftest import (  # noqa: F401 - shared fixtures
    db_outage,
    fresh_channel_layer,
)


@pytest.fixture
def log_events(caplog):
    """Records of one structured event (the `event` extra), INFO and up captured."""
    caplog.set_level(logging.INFO)

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == name]

    return events


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


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2's real cost is 0.3 s per user; these tests do not measure hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
