"""Close codes a client chooses are logged by their name, never at ERROR."""

import logging

import pytest

from tests.chat.test_consumers import (  # noqa: F401 - fixtures
    disconnect_records,
    join,
    open_socket,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


async def test_a_client_closing_with_1011_is_a_warning(join, alice, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    socket, _ = await join(alice)
    await socket.close(1011)
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason) == (1011, "server_error")
    assert record.levelno == logging.WARNING
    assert record.by_server is False
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
