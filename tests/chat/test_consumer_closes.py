"""Close codes a client chooses are logged by their name, never at ERROR."""

import logging

import pytest
from channels.db import database_sync_to_async

from tests.chat.test_consumers import (  # noqa: F401 - fixtures
    chat,
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


async def test_removed_from_a_private_thread_while_connected_closes_4403(
    join,  # noqa: F811
    alice,
    make_thread,
    caplog,
):
    thread = await database_sync_to_async(make_thread)(
        "secret", private=True, members=[alice]
    )
    socket, _ = await join(alice, session_id="a1", thread_id="secret")
    await database_sync_to_async(thread.members.remove)(alice)
    await socket.send(chat("after-removal"))
    assert await socket.closed_with() == 4403
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
