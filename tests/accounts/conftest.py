"""Fixtures for the accounts tests."""

import pytest


@pytest.fixture(autouse=True)
def _fast_password_hasher(fast_password_hasher):
    """Users made here are never logged in by a Daphne subprocess."""
