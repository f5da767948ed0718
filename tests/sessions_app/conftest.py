"""Fixtures for the sessions_app tests."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(fast_password_hasher):
    """Users made here are never logged in by a Daphne subprocess."""


@pytest.fixture(params=["arrays", "orm"])
def statements(request, monkeypatch):
    """Run a test with sessions_app.bulk's array statements, then with the ORM's."""
    from sessions_app import bulk

    if request.param == "orm":  # as on SQLite, the embedded default
        monkeypatch.setattr(bulk, "ARRAY_VENDORS", frozenset())
    return request.param
