"""Fixtures of the end-to-end tests."""

import pytest

from tests.e2e.wsclient import Clients


@pytest.fixture
async def clients():
    """Open sockets through clients.open(...); all closed at teardown."""
    registry = Clients()
    yield registry
    await registry.close_all()


@pytest.fixture
def carol(make_user):
    return make_user("carol")
