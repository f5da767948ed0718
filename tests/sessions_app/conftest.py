"""Fixtures for the sessions_app tests."""

import logging

import pytest


@pytest.fixture
def log_events(caplog):
    """Records of one structured event (the `event` extra), INFO and up captured."""
    caplog.set_level(logging.INFO)

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == name]

    return events
