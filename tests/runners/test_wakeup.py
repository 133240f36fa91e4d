"""runners.wakeup.SharedWaits: one shared piece of work per key, each waiter bounded by its
own timeout, and nothing left running once nobody waits."""

import asyncio

import pytest

from runners.wakeup import SharedWaits


def test_it_runs_the_work_once_for_a_hundred_waiters_and_all_get_its_result():
    calls = []

    async def work():
        calls.append(1)
        await asyncio.sleep(0.05)
        return "awake"

    async def main():
        waits = SharedWaits()
        results = await asyncio.gather(*(waits.wait("d-1", work, timeout=5) for _ in range(100)))
        return results, waits.waiting("d-1")

    results, left = asyncio.run(main())

    assert results == ["awake"] * 100 and calls == [1] and left == 0


def test_one_waiters_timeout_leaves_the_work_running_for_the_others():
    cancelled = []

    async def work():
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "awake"

    async def impatient(waits):
        with pytest.raises(TimeoutError):
            await waits.wait("d-1", work, timeout=0.05)
        return "gave up"

    async def main():
        waits = SharedWaits()
        return await asyncio.gather(impatient(waits), waits.wait("d-1", work, timeout=5))

    assert asyncio.run(main()) == ["gave up", "awake"] and not cancelled


def test_when_the_last_waiter_gives_up_the_work_is_cancelled():
    cancelled = []

    async def work():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        waits = SharedWaits()
        with pytest.raises(TimeoutError):
            await asyncio.gather(*(waits.wait("d-1", work, timeout=0.05) for _ in range(3)))
        await asyncio.sleep(0.01)  # let the cancellation reach the work
        return waits.waiting("d-1")

    assert asyncio.run(main()) == 0 and cancelled == [True]


def test_keys_are_separate_and_a_finished_wait_starts_afresh():
    calls = []

    def work_for(key):
        async def work():
            calls.append(key)
            return key.upper()

        return work

    async def main():
        waits = SharedWaits()
        a, b = await asyncio.gather(waits.wait("a", work_for("a"), timeout=1), waits.wait("b", work_for("b"), timeout=1))
        again = await waits.wait("a", work_for("a"), timeout=1)
        return a, b, again

    assert asyncio.run(main()) == ("A", "B", "A") and sorted(calls) == ["a", "a", "b"]


def test_an_error_in_the_work_reaches_every_waiter():
    async def work():
        await asyncio.sleep(0.01)
        raise RuntimeError("the database is gone")

    async def main():
        waits = SharedWaits()
        return await asyncio.gather(*(waits.wait("d-1", work, timeout=1) for _ in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert len(results) == 5 and all(isinstance(result, RuntimeError) for result in results)
