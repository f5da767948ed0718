"""Batched presence steps (*_many, sessions_reapable) equal their items one by one."""

import asyncio
import time

import pytest
import redis
from redis.exceptions import ResponseError

from ops import redis_client as shared
from realtime.presence import (
    DetachOutcome,
    LocalPresence,
    RedisPresence,
    new_marker,
)


@pytest.fixture(params=["redis", "local"])
def kind(request) -> str:
    return request.param


def make_store(kind: str):
    return RedisPresence() if kind == "redis" else LocalPresence()


async def setup_sockets(store, tag: str) -> dict[str, str]:
    """Sockets of several users and sessions; the markers every detach will use."""
    t = f"t{tag}"
    await store.attach(t, "alice", f"a{tag}", "c-a")  # leaves alone
    await store.attach(t, "bob", f"b1{tag}", "c-b1")  # two tabs, one closes
    await store.attach(t, "bob", f"b2{tag}", "c-b2")
    await store.attach(t, "carol", f"c{tag}", "c-c")  # comes back in the grace
    await store.attach(t, "dave", f"d{tag}", "c-d1")  # detaches twice
    return {name: new_marker() for name in ("a", "b", "c", "d1", "d2")}


def starts(tag: str, m: dict[str, str]) -> list[tuple]:
    t = f"t{tag}"
    return [
        (t, "alice", f"a{tag}", "c-a", m["a"]),
        (t, "bob", f"b1{tag}", "c-b1", m["b"]),
        (t, "carol", f"c{tag}", "c-c", m["c"]),
        (t, "dave", f"d{tag}", "c-d1", m["d1"]),
    ]


def finishes(tag: str, m: dict[str, str]) -> list[tuple]:
    t = f"t{tag}"
    return [
        (t, "alice", f"a{tag}", m["a"]),
        (t, "bob", f"b1{tag}", m["b"]),
        (t, "carol", f"c{tag}", m["c"]),
        (t, "dave", f"d{tag}", m["d1"]),  # superseded by d2
        (t, "dave", f"d{tag}", m["d2"]),
        (t, "alice", f"a{tag}", m["a"]),  # the same marker again: nothing left
        (t, "erin", f"e{tag}", new_marker()),  # never attached
    ]


async def one_by_one(call, items: list) -> list:
    """A batch call made once per item: what the batch must equal."""
    return [(await call([item]))[0] for item in items]


async def between(store, tag: str, m: dict[str, str]) -> None:
    """What happens within the grace: carol's tab returns, dave's closes again."""
    t = f"t{tag}"
    await store.attach(t, "carol", f"c{tag}", "c-c2")
    await store.attach(t, "dave", f"d{tag}", "c-d2")
    await store.detach_start_many([(t, "dave", f"d{tag}", "c-d2", m["d2"])])


async def observe(store, tag: str) -> tuple:
    sessions = [f"{s}{tag}" for s in ("a", "b1", "b2", "c", "d", "e")]
    reapable = await store.sessions_reapable(sessions, dry_run=True)
    return await store.present(f"t{tag}"), reapable


async def test_detach_many_results_and_state_equal_one_by_one(kind):
    single, batched = make_store(kind), make_store(kind)
    m1 = await setup_sockets(single, "1")
    m2 = await setup_sockets(batched, "2")

    started_one = await one_by_one(single.detach_start_many, starts("1", m1))
    started_many = await batched.detach_start_many(starts("2", m2))
    assert started_many == started_one == [None] * 4

    await between(single, "1", m1)
    await between(batched, "2", m2)

    one = await one_by_one(single.detach_finish_many, finishes("1", m1))
    many = await batched.detach_finish_many(finishes("2", m2))
    assert many == one
    assert one == [
        DetachOutcome(True, True),
        DetachOutcome(True, False),
        DetachOutcome(False, False),
        DetachOutcome(False, False),
        DetachOutcome(True, True),
        DetachOutcome(False, False),
        DetachOutcome(False, False),
    ]
    assert await observe(batched, "2") == await observe(single, "1")
    assert await observe(single, "1") == (
        ["bob", "carol"],
        [True, True, False, False, True, True],
    )


async def test_detach_many_of_nothing(kind):
    store = make_store(kind)
    assert await store.detach_start_many([]) == []
    assert await store.detach_finish_many([]) == []
    assert await store.sessions_reapable([]) == []


async def test_sessions_reapable_equals_one_by_one(kind, settings):
    async def prepare(store, tag: str) -> list[str]:
        t = f"t{tag}"
        await store.attach(t, "alice", f"live{tag}", "c1")
        await store.attach(t, "bob", f"grace{tag}", "c2")
        await store.attach(t, "carol", f"gone{tag}", "c3")
        await store.attach(t, "dave", f"overdue{tag}", "c4")
        marker, overdue = new_marker(), f"x|{time.time() - 1:.3f}"
        await store.detach_start_many(
            [
                (t, "bob", f"grace{tag}", "c2", new_marker()),
                (t, "carol", f"gone{tag}", "c3", marker),
                (t, "dave", f"overdue{tag}", "c4", overdue),
            ]
        )
        await store.detach_finish_many([(t, "carol", f"gone{tag}", marker)])
        return [f"{s}{tag}" for s in ("live", "grace", "gone", "overdue", "never")]

    def reapable(store, *, dry_run: bool = False):
        return lambda ids: store.sessions_reapable(ids, dry_run=dry_run)

    single, batched = make_store(kind), make_store(kind)
    ids1 = await prepare(single, "1")
    ids2 = await prepare(batched, "2")
    dry_one = await one_by_one(reapable(single, dry_run=True), ids1)
    dry_many = await batched.sessions_reapable(ids2, dry_run=True)
    assert dry_many == dry_one
    one = await one_by_one(reapable(single), ids1)
    many = await batched.sessions_reapable(ids2)
    assert many == one
    if kind == "redis":
        assert one == [False, False, True, True, True]
        # The overdue marker was cleared by the reap, in both forms.
        client = redis.Redis.from_url(settings.REDIS_URL)
        for tag in ("1", "2"):
            assert client.get(shared.key("dm", "s", f"overdue{tag}")) is None
            assert client.get(shared.key("dm", "s", f"grace{tag}")) is not None
        client.close()
    else:
        # In one process a marker never expires by time: the overdue one is pending.
        assert one == [False, False, True, False, True]
    # Order of the answers follows the order of the question.
    assert await batched.sessions_reapable(
        ids2[::-1], dry_run=True
    ) == await one_by_one(reapable(batched, dry_run=True), ids2[::-1])


def _break_key(settings, *parts: str) -> None:
    """Make one key a plain string, so a script touching it fails (WRONGTYPE)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(shared.key(*parts), "not-a-zset")
    client.close()


async def test_one_failed_detach_start_does_not_fail_the_others(settings):
    store = RedisPresence()
    await store.attach("t", "alice", "s1", "c1")
    await store.attach("t", "carol", "s3", "c3")
    _break_key(settings, "pt", "t", "bob")
    m1, m2, m3 = new_marker(), new_marker(), new_marker()
    results = await store.detach_start_many(
        [
            ("t", "alice", "s1", "c1", m1),
            ("t", "bob", "s2", "c2", m2),
            ("t", "carol", "s3", "c3", m3),
        ]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ResponseError)
    assert "WRONGTYPE" in str(results[1])
    # The others' detaches took effect: their markers finish them.
    assert await store.detach_finish_many(
        [("t", "alice", "s1", m1), ("t", "carol", "s3", m3)]
    ) == [DetachOutcome(True, True), DetachOutcome(True, True)]


async def test_one_failed_detach_finish_does_not_fail_the_others(settings):
    store = RedisPresence()
    markers = {}
    for user, session in (("alice", "s1"), ("carol", "s3")):
        await store.attach("t", user, session, f"c-{session}")
        markers[user] = new_marker()
        started = await store.detach_start_many(
            [("t", user, session, f"c-{session}", markers[user])]
        )
        assert started == [None]
    _break_key(settings, "ss", "s2")
    results = await store.detach_finish_many(
        [
            ("t", "alice", "s1", markers["alice"]),
            ("t", "bob", "s2", new_marker()),
            ("t", "carol", "s3", markers["carol"]),
        ]
    )
    assert results[0] == results[2] == DetachOutcome(True, True)
    assert isinstance(results[1], ResponseError)
    assert "WRONGTYPE" in str(results[1])
    assert await store.present("t") == []


async def test_a_failed_reap_check_raises(settings):
    """The reaper must not mark sessions idle on a half-answered check."""
    store = RedisPresence()
    _break_key(settings, "ss", "bad")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.sessions_reapable(["ok", "bad"])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.sessions_reapable(["bad"])
    assert await store.sessions_reapable(["ok"]) == [True]


class _Spy:
    """Counts pipelines and the commands sent outside them."""

    def __init__(self, client) -> None:
        self.pipelines = 0
        self.direct: list[str] = []
        real_pipeline, real_execute = client.pipeline, client.execute_command

        def pipeline(*args, **kwargs):
            self.pipelines += 1
            return real_pipeline(*args, **kwargs)

        async def execute_command(*args, **kwargs):
            self.direct.append(str(args[0]).upper())
            return await real_execute(*args, **kwargs)

        client.pipeline = pipeline
        client.execute_command = execute_command
        self.undo = lambda: (
            client.__dict__.pop("pipeline"),
            client.__dict__.pop("execute_command"),
        )


@pytest.fixture
async def spy():
    client = shared.redis_client()
    watcher = _Spy(client)
    yield watcher
    watcher.undo()


async def test_many_detaches_are_one_pipeline(spy):
    store = RedisPresence()
    markers = [new_marker() for _ in range(50)]
    detaches = [("t", f"u{i}", f"s{i}", f"c{i}", markers[i]) for i in range(50)]
    assert await store.detach_start_many(detaches) == [None] * 50
    assert spy.pipelines == 1
    finished = await store.detach_finish_many(
        [("t", f"u{i}", f"s{i}", markers[i]) for i in range(50)]
    )
    assert spy.pipelines == 2
    assert all(o.session_executed for o in finished)
    assert await store.sessions_reapable([f"s{i}" for i in range(50)]) == [True] * 50
    assert spy.pipelines == 3
    assert not [c for c in spy.direct if c.startswith("EVAL")], spy.direct


# --- attach_many: a burst of sockets entering presence ------------------------------


def attaches(tag: str) -> list[tuple]:
    t, u = f"t{tag}", f"u{tag}"
    return [
        (t, "alice", f"s1{tag}", "c1"),
        (t, "alice", f"s2{tag}", "c2"),  # her second tab: no new join
        (t, "bob", f"s3{tag}", "c3"),
        (u, "bob", f"s4{tag}", "c4"),  # another thread: a join there
        (t, "alice", f"s1{tag}", "c5"),
    ]


async def test_attach_many_equals_one_by_one(kind):
    single, batched = make_store(kind), make_store(kind)
    one = [await single.attach(*a) for a in attaches("1")]
    many = await batched.attach_many(attaches("2"))
    assert many == one
    assert [a.joined for a in many] == [True, False, True, True, False]
    assert many[-1].present == ["alice", "bob"]


async def test_concurrent_attaches_are_one_pipeline(spy):
    store = RedisPresence()
    attached = await asyncio.gather(
        *(store.attach("t", f"u{i}", f"s{i}", f"c{i}") for i in range(30))
    )
    assert spy.pipelines == 1
    assert not [c for c in spy.direct if c.startswith("EVAL")], spy.direct
    assert all(a.joined for a in attached)
    assert len(attached[-1].present) == 30


async def test_one_failed_attach_does_not_fail_the_others(settings):
    store = RedisPresence()
    _break_key(settings, "ss", "s2")
    ok1, broken, ok3 = await asyncio.gather(
        store.attach("t", "alice", "s1", "c1"),
        store.attach("t", "bob", "s2", "c2"),
        store.attach("t", "carol", "s3", "c3"),
        return_exceptions=True,
    )
    assert isinstance(broken, ResponseError) and "WRONGTYPE" in str(broken)
    assert ok1.joined and ok3.joined


async def test_a_reconnect_in_a_burst_cancels_the_pending_detach(kind):
    store = make_store(kind)
    await store.attach("t", "alice", "s1", "c1")
    marker = new_marker()
    await store.detach_start_many([("t", "alice", "s1", "c1", marker)])
    # The reconnect arrives among other sockets attaching at once.
    await store.attach_many([("t", "bob", "s2", "c2"), ("t", "alice", "s1", "c9")])
    assert await store.detach_finish_many([("t", "alice", "s1", marker)]) == [
        DetachOutcome(False, False)
    ]
    assert await store.present("t") == ["alice", "bob"]
