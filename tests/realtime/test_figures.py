"""The shared disconnect figures (/ws-metrics): in Redis, and embedded without it."""

import pytest

from realtime import figures


@pytest.fixture(params=["redis", "embedded"])
async def mode(request, monkeypatch):
    """Run each test against Redis and against the embedded (no REDIS_URL) store."""
    if request.param == "embedded":
        monkeypatch.setattr(figures.shared, "redis_client", lambda: None)
    await figures.ws_metrics_reset()
    yield request.param
    await figures.ws_metrics_reset()
    client = figures.shared.redis_client()
    if client is not None:
        await client.aclose()


async def test_counts_reasons_and_frequent_disconnectors(mode, settings):
    settings.WS_FREQUENT_DISCONNECTS = 2
    assert await figures.record_disconnect("bob", "going_away", abnormal=False) == 0
    for expected in (1, 2):
        count = await figures.record_disconnect(
            "alice", "abnormal_closure", abnormal=True
        )
        assert count == expected
    shown = await figures.ws_metrics()
    assert shown["total_users_tracked"] == 2
    assert shown["top_disconnects"] == [["alice", 2], ["bob", 1]]
    assert shown["all_reasons"] == {
        "alice": {"abnormal_closure": 2},
        "bob": {"going_away": 1},
    }
    assert sorted(shown["last_disconnect"]) == ["alice", "bob"]
    assert shown["frequent_disconnectors"] == ["alice"]


async def test_one_user_and_reset(mode):
    await figures.record_disconnect("alice", "normal_closure", abnormal=False)
    await figures.record_disconnect("bob", "going_away", abnormal=False)
    only = await figures.ws_metrics(user="bob")
    assert only["top_disconnects"] == [["bob", 1]]
    assert list(only["all_reasons"]) == ["bob"]
    await figures.ws_metrics_reset()
    assert (await figures.ws_metrics())["total_users_tracked"] == 0
