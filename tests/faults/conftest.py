"""Fixtures of the fault tests."""

import pytest

from tests.e2e.wsclient import Clients, isolated_daphne


@pytest.fixture
def daphne(daphne):
    """The shared `daphne` fixture, with Redis keys of this test's own (see
    isolated_daphne): a concurrent test run cannot wipe our channel groups."""
    yield from isolated_daphne(daphne)


@pytest.fixture
async def clients():
    """Open sockets through clients.open(...); all closed at teardown."""
    registry = Clients()
    yield registry
    await registry.close_all()


@pytest.fixture
def carol(make_user):
    return make_user("carol")
