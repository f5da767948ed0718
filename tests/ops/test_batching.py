"""ops.batching.Coalescer: one bulk call per burst, each caller its result."""

import asyncio
import threading

import pytest

from ops.batching import Coalescer, Turnstile
from tests.loops import LoopPasses, most_in_one_pass


async def settle(*aws) -> list:
    """Every result or error, failing (not hanging) if a caller is never answered."""
    return await asyncio.wait_for(asyncio.gather(*aws, return_exceptions=True), 5)


class Recorder:
    """A bulk function that records every batch and answers item * 10."""

    def __init__(self, *, gate: asyncio.Event | None = None, fail=None) -> None:
        self.batches: list[list] = []
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.gate = gate
        self.fail = fail

    async def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.loops.append(asyncio.get_running_loop())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [item if isinstance(item, Exception) else item * 10 for item in items]


async def test_a_burst_is_one_bulk_call_and_each_caller_gets_its_result():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(20)))
    assert bulk.batches == [list(range(20))]
    assert results == [i * 10 for i in range(20)]


async def test_a_single_item_is_its_own_batch():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    assert await coalescer.submit(7) == 70
    assert await coalescer.submit(8) == 80
    assert bulk.batches == [[7], [8]]


async def test_items_arriving_during_a_bulk_call_form_the_next_batch():
    gate = asyncio.Event()
    bulk = Recorder(gate=gate)
    coalescer = Coalescer(bulk)
    first = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
    while not bulk.batches:
        await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.submit(i)) for i in range(3, 8)]
    await asyncio.sleep(0.01)
    assert bulk.batches == [[0, 1, 2]]  # the second burst waits for the first call
    gate.set()
    assert await asyncio.gather(*first, *later) == [i * 10 for i in range(8)]
    assert bulk.batches == [[0, 1, 2], [3, 4, 5, 6, 7]]


async def test_an_exception_in_the_results_goes_to_that_caller_alone():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    bad = ValueError("item 2 failed")
    tasks = [asyncio.create_task(coalescer.submit(i)) for i in (1, bad, 3)]
    with pytest.raises(ValueError) as raised:
        await tasks[1]
    assert raised.value is bad
    assert await tasks[0] == 10 and await tasks[2] == 30
    assert len(bulk.batches) == 1


async def test_items_queued_while_the_drain_is_scheduled_join_its_batch():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)  # the first submit ran and scheduled the drain
    rest = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    assert await settle(first, *rest) == [0, 10, 20]
    assert bulk.batches == [[0, 1, 2]]


async def test_an_exception_from_bulk_goes_to_every_caller_of_the_batch():
    bulk = Recorder(fail=RuntimeError("db down"))
    coalescer = Coalescer(bulk)
    results = await settle(*(coalescer.submit(i) for i in range(4)))
    assert len(bulk.batches) == 1
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert {str(r) for r in results} == {"db down"}


async def test_a_failed_batch_does_not_stop_the_next_one():
    gate = asyncio.Event()
    calls = []

    async def bulk(items):
        calls.append(list(items))
        if len(calls) == 1:
            await gate.wait()
            raise RuntimeError("first batch failed")
        return [i * 10 for i in items]

    coalescer = Coalescer(bulk)
    first = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    while not calls:
        await asyncio.sleep(0)
    second = [asyncio.create_task(coalescer.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0)
    gate.set()
    done = await settle(*first, *second)
    assert [type(r) for r in done[:2]] == [RuntimeError, RuntimeError]
    assert done[2:] == [30, 40]
    assert calls == [[1, 2], [3, 4]]


async def test_max_batch_splits_a_big_burst_in_order():
    bulk = Recorder()
    coalescer = Coalescer(bulk, max_batch=4)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(10)))
    assert bulk.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert results == [i * 10 for i in range(10)]


async def test_a_cancelled_callers_item_is_still_written():
    gate = asyncio.Event()
    bulk = Recorder(gate=gate)
    coalescer = Coalescer(bulk)
    tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
    while not bulk.batches:
        await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await settle(*tasks)
    assert bulk.batches == [[0, 1, 2]]
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], asyncio.CancelledError)


async def test_an_item_cancelled_before_its_batch_started_is_still_written():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
    await asyncio.sleep(0)  # every submit queued, the drain not yet run
    tasks[0].cancel()
    results = await settle(*tasks)
    assert bulk.batches == [[0, 1, 2]]
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [10, 20]
    # The coalescer still serves the next caller.
    assert await coalescer.submit(5) == 50


async def test_cancelling_the_drain_cancels_every_waiting_caller():
    gate = asyncio.Event()
    bulk = Recorder(gate=gate)
    coalescer = Coalescer(bulk, max_batch=2)
    tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(4)]
    while not bulk.batches:
        await asyncio.sleep(0)
    [drain] = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_drain"]
    drain.cancel()
    results = await settle(*tasks)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert bulk.batches == [[0, 1]]  # the queued rest was never handed to bulk
    gate.set()
    assert await coalescer.submit(9) == 90  # a new drain for the next burst


def test_each_event_loop_has_its_own_queue():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    barrier = threading.Barrier(2)
    results: dict[str, list] = {}

    def run(name: str, items: list[int]) -> None:
        async def main():
            await asyncio.to_thread(barrier.wait, 5)
            results[name] = await asyncio.gather(*(coalescer.submit(i) for i in items))

        asyncio.run(main())

    threads = [
        threading.Thread(target=run, args=("a", [1, 2, 3])),
        threading.Thread(target=run, args=("b", [4, 5])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"a": [10, 20, 30], "b": [40, 50]}
    assert sorted(bulk.batches) == [[1, 2, 3], [4, 5]]
    assert len(set(map(id, bulk.loops))) == 2


def test_a_coalescer_outlives_the_loop_that_used_it():
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    assert asyncio.run(coalescer.submit(1)) == 10
    assert asyncio.run(coalescer.submit(2)) == 20
    assert bulk.batches == [[1], [2]]


@pytest.mark.parametrize("size", [1, 499, 500, 501])
async def test_default_max_batch_is_500(size):
    bulk = Recorder()
    coalescer = Coalescer(bulk)
    await asyncio.gather(*(coalescer.submit(i) for i in range(size)))
    expected = [min(size, 500)] + ([size - 500] if size > 500 else [])
    assert [len(b) for b in bulk.batches] == expected
    assert [i for b in bulk.batches for i in b] == list(range(size))


async def test_a_bulk_function_returning_too_few_results_fails_its_callers():
    """A miscounting bulk call raises to every caller instead of stranding them."""
    calls = 0

    async def short(items: list) -> list:
        nonlocal calls
        calls += 1
        return items[:-1] if calls == 1 else [item * 10 for item in items]

    coalescer = Coalescer(short)
    results = await settle(*(coalescer.submit(i) for i in range(3)))
    assert [type(r) for r in results] == [RuntimeError] * 3, results
    # The next burst goes through.
    assert await settle(coalescer.submit(7)) == [70]


# --- Turnstile ------------------------------------------------------------------------


async def passes_through(turns: Turnstile, callers: int) -> list[tuple[int, int]]:
    """(caller, the pass it went on in), in the order the callers went on."""
    went_on: list[tuple[int, int]] = []

    async def caller(i: int) -> None:
        await turns.turn()
        went_on.append((i, loop_passes.count))

    async with LoopPasses() as loop_passes:
        await asyncio.wait_for(asyncio.gather(*map(caller, range(callers))), 5)
    return went_on


async def test_the_turnstile_lets_a_few_on_per_pass_in_order():
    went_on = await passes_through(Turnstile(16), 100)
    assert [i for i, _ in went_on] == list(range(100)), "in the order they came"
    assert most_in_one_pass([n for _, n in went_on]) == 16


async def test_a_caller_cancelled_in_line_is_skipped():
    turns = Turnstile(1)
    await turns.turn()
    first, gone, last = (asyncio.create_task(turns.turn()) for _ in range(3))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(asyncio.gather(first, last), 5)
    assert gone.cancelled()
    assert not turns.queue


def test_a_turnstile_left_mid_pass_by_a_loop_serves_the_next_loop():
    turns = Turnstile(1)
    gone = asyncio.new_event_loop()
    # A pass full, and the callback that would open the next one never run.
    turns.loop, turns.passed = gone, 1
    turns.next_pass = gone.call_soon(lambda: None)
    gone.close()
    went_on = asyncio.run(passes_through(turns, 3))
    assert len(went_on) == 3
