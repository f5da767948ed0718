"""The accept never waits on the database (PROTOCOL.md §2): under Daphne's default
5 s handshake timeout, a connect while PostgreSQL refuses connections is accepted,
then told `db_unavailable` and closed with 1013 once the retry window is spent."""

import time

import pytest

from bench.servers import started
from tests.e2e.wsclient import isolated_daphne, wait_log
from tests.faults import test_database
from tests.servers import APP_NAME_PREFIX, DaphneProcess
from tests.servers import test_database_url as database_url

pytestmark = pytest.mark.faults

pg_proxy = test_database.pg_proxy  # a cuttable TCP proxy in front of PostgreSQL
# PROTOCOL.md: accepted "within a second of the handshake"; bounded generously.
ACCEPT_BOUND_S = 2.5


class DefaultTimeoutDaphne(DaphneProcess):
    """Daphne without --websocket_connect_timeout: its default 5 s applies."""

    flags = ["--ping-interval", "20", "--ping-timeout", "60"]


@pytest.fixture
def plain_daphne(transactional_db, tmp_path):
    def make(name: str = "a", **env: str) -> DefaultTimeoutDaphne:
        return DefaultTimeoutDaphne(name, tmp_path, **env)

    with started(make) as start:
        yield from isolated_daphne(start)


async def test_db_refusing_connections_socket_is_accepted_then_1013(
    plain_daphne, clients, pg_proxy, alice, token_for
):
    assert "--websocket_connect_timeout" not in DefaultTimeoutDaphne.flags
    url = database_url(f"{APP_NAME_PREFIX}-a", port=pg_proxy.port)
    server = plain_daphne("a", DATABASE_URL=url)
    pg_proxy.cut()
    started_at = time.monotonic()
    client = await clients.open(
        server, "sess-alice", token_for(alice), established=False
    )
    accepted_after = time.monotonic() - started_at
    assert accepted_after < ACCEPT_BOUND_S, accepted_after
    await test_database.refused_for_db(client)
    assert len(client.frames) == 1, client.frames
    closes = await wait_log(server, "ws_disconnect", code=1013)
    assert [r["reason"] for r in closes] == ["try_again_later"]
    test_database.assert_only_db_unavailable_errors(server, 1)
