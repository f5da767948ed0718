"""Fixtures for the sessions_app tests."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(fast_password_hasher):
    """Users made here are never logged in by a Daphne subprocess."""


@pytest.fixture(params=["arrays", "orm"])
def statements(request, monkeypatch):
    """A test with the array statements (bulk, ops.rows), then with the ORM's."""
    from ops import rows

    if request.param == "orm":  # as on SQLite, the embedded default
        monkeypatch.setattr(rows, "ARRAY_VENDORS", frozenset())
    return request.param
