"""DynamicBatcher in-process: standard library only, so these run in the hub's own environment."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from runners.harness import batching
from runners.harness.batching import BatchSizeMismatch, DynamicBatcher


def run(coroutine):
    return asyncio.run(coroutine)


async def serve(predict, inputs, *, max_batch_size, max_wait_ms, stagger_s=0.0, delays=None):
    sizes = []
    with ThreadPoolExecutor(max_workers=1) as model_thread:
        batcher = DynamicBatcher(predict, executor=model_thread, max_batch_size=max_batch_size,
                                 max_wait_ms=max_wait_ms, observe_batch=lambda size, seconds: sizes.append(size))
        batcher.start()

        async def submit(index, item):
            await asyncio.sleep(delays[index] if delays else index * stagger_s)
            return await batcher.submit(item)

        results = await asyncio.gather(*(submit(i, item) for i, item in enumerate(inputs)), return_exceptions=True)
        await batcher.stop()
    return results, sizes


def test_it_fills_batches_up_to_the_maximum():
    results, sizes = run(serve(lambda batch: [x + 1 for x in batch], range(10), max_batch_size=4, max_wait_ms=50))

    assert results == list(range(1, 11))
    assert sizes == [4, 4, 2]


def test_a_batch_closes_after_max_wait_even_if_not_full():
    started = time.monotonic()
    results, sizes = run(serve(lambda batch: batch, ["only"], max_batch_size=64, max_wait_ms=30))

    assert results == ["only"] and sizes == [1]
    assert 0.025 <= time.monotonic() - started < 1


def test_zero_wait_still_takes_what_is_already_queued():
    _, sizes = run(serve(lambda batch: batch, range(6), max_batch_size=8, max_wait_ms=0))

    assert sum(sizes) == 6 and sizes[0] >= 1


def test_requests_arriving_during_a_predict_form_the_next_batch():
    def slow_predict(batch):
        time.sleep(0.05)
        return batch

    _, sizes = run(serve(slow_predict, range(12), max_batch_size=16, max_wait_ms=1, stagger_s=0.01))

    assert sizes[0] < 12 and max(sizes[1:]) > 1


def test_predict_runs_off_the_event_loop_thread():
    loop_thread = threading.get_ident()
    seen = []
    run(serve(lambda batch: seen.append(threading.get_ident()) or batch, [1], max_batch_size=1, max_wait_ms=0))

    assert seen and seen[0] != loop_thread


def test_a_wrong_number_of_outputs_fails_the_whole_batch():
    results, _ = run(serve(lambda batch: batch[:1], [1, 2], max_batch_size=2, max_wait_ms=50))

    assert all(isinstance(result, BatchSizeMismatch) for result in results)


def test_an_exception_in_place_of_an_output_fails_only_that_input():
    def predict(batch):
        return [ValueError("negative") if x < 0 else x for x in batch]

    results, sizes = run(serve(predict, [1, -1, 2], max_batch_size=3, max_wait_ms=50))

    assert results[0] == 1 and results[2] == 2 and isinstance(results[1], ValueError)
    assert sizes == [3]


@pytest.mark.parametrize("error", [RuntimeError("model on fire"), MemoryError()])
def test_a_raising_predict_fails_every_input_of_its_batch(error):
    def predict(batch):
        raise error

    results, _ = run(serve(predict, [1, 2], max_batch_size=2, max_wait_ms=50))

    assert all(result is error for result in results)


def test_a_full_batch_goes_without_waiting_for_the_deadline():
    started = time.monotonic()
    _, sizes = run(serve(lambda batch: batch, range(4), max_batch_size=4, max_wait_ms=10_000))

    assert sizes == [4] and time.monotonic() - started < 5


def test_inputs_that_fill_a_batch_during_a_predict_go_as_soon_as_the_model_is_free():
    calls = []

    def slow_predict(batch):
        calls.append(time.monotonic())
        time.sleep(0.2)
        return batch

    # "a" and "b" fill the first batch at once; "c" and "d" queue up during its predict() and fill the next.
    _, sizes = run(serve(slow_predict, ["a", "b", "c", "d"], max_batch_size=2, max_wait_ms=10_000, delays=[0, 0, 0.05, 0.05]))

    assert sizes == [2, 2]
    assert calls[1] - calls[0] < 0.2 + 0.15


def test_inputs_that_queued_during_a_predict_wait_for_late_arrivals_once_the_model_is_free():
    def slow_predict(batch):
        time.sleep(0.2)
        return batch

    # "first" runs alone from 100 ms to 300 ms; "second" queues at 150 ms, so its batch waits until
    # 300 + 100 ms, and "third", arriving at 350 ms, joins it instead of running on its own.
    _, sizes = run(serve(slow_predict, ["first", "second", "third"], max_batch_size=8, max_wait_ms=100,
                         delays=[0, 0.15, 0.35]))

    assert sizes == [1, 2]


def sleeping_predict(seconds: float):
    """A model whose batch takes the same time whatever its size, as on a GPU."""

    def predict(batch):
        time.sleep(seconds)
        return batch

    return predict


def test_inputs_trickling_in_close_together_wait_for_each_other():
    # As behind the hub's gateway, which relays a round's callers one after another: "a" runs
    # alone (0.1 s), then twelve inputs arrive 5 ms apart, from 0.15 s. A window fixed at
    # 20 ms after the first would close on five of them and leave seven for a batch of their own.
    delays = [0] + [0.15 + index * 0.005 for index in range(12)]
    _, sizes = run(serve(sleeping_predict(0.1), range(13), max_batch_size=64, max_wait_ms=20, delays=delays))

    assert sizes == [1, 12]


def test_a_steady_trickle_holds_a_batch_open_no_longer_than_the_last_predict_took():
    # Forty inputs 5 ms apart, 0.2 s in all: each batch is open 50 ms at most, and takes what
    # queued during the last predict() (~10) and what arrives while it is open (~10).
    delays = [0] + [0.1 + index * 0.005 for index in range(40)]
    _, sizes = run(serve(sleeping_predict(0.05), range(41), max_batch_size=64, max_wait_ms=20, delays=delays))

    assert sum(sizes) == 41 and len(sizes) >= 3 and max(sizes[1:]) <= 25


def second_round_seconds(predict_seconds: float, max_wait_ms: int, first: list, second: list, pause: float = 0) -> float:
    """Seconds from sending `second` (once `first` is answered, and `pause` later) to its answers."""

    async def scenario() -> float:
        with ThreadPoolExecutor(max_workers=1) as model_thread:
            batcher = DynamicBatcher(sleeping_predict(predict_seconds), executor=model_thread, max_batch_size=64,
                                     max_wait_ms=max_wait_ms)
            batcher.start()
            await batcher.submit_many(first)
            await asyncio.sleep(pause)
            sent = time.monotonic()
            await batcher.submit_many(second)
            elapsed = time.monotonic() - sent
            await batcher.stop()
            return elapsed

    return run(scenario())


def test_a_lone_input_after_a_long_predict_waits_only_max_wait():
    assert 0.3 + 0.015 <= second_round_seconds(0.3, 20, ["first"], ["lone"], pause=0.05) < 0.3 + 0.2


def test_until_the_last_batchs_callers_are_back_a_short_pause_does_not_split_the_batch():
    # A round of 12, then the next round of 12 from 0.25 s, with a 12 ms pause halfway (the
    # gateway busy relaying): predict() took 0.2 s, so the batch waits out gaps of up to 50 ms
    # until it holds 11 again (nine in ten), not only max_wait's 5.
    delays = [0] * 12 + [0.25 + index * 0.002 for index in range(6)] + [0.272 + index * 0.002 for index in range(6)]
    _, sizes = run(serve(sleeping_predict(0.2), range(24), max_batch_size=64, max_wait_ms=5, delays=delays))

    assert sizes == [12, 12]


def test_once_the_last_batchs_callers_are_back_the_batch_waits_only_max_wait(monkeypatch):
    monkeypatch.setattr(batching, "STRAGGLER_WAIT_MAX_S", 1.0)
    # 5 ms of waiting, not 125 (a quarter of predict()).
    assert 0.5 <= second_round_seconds(0.5, 5, [1, 2], [3, 4]) < 0.5 + 0.06


def test_the_batch_closes_soon_after_the_last_caller_is_back_not_a_long_pause_after_the_first(monkeypatch):
    monkeypatch.setattr(batching, "STRAGGLER_WAIT_MAX_S", 1.0)
    # The second round's two callers come 10 ms apart: the batch closes 5 ms after the second,
    # not 125 ms (a quarter of predict()) after the first.
    started = time.monotonic()
    _, sizes = run(serve(sleeping_predict(0.5), range(4), max_batch_size=64, max_wait_ms=5, delays=[0, 0, 0.55, 0.56]))

    assert sizes == [2, 2] and time.monotonic() - started < 0.56 + 0.005 + 0.5 + 0.06


def test_zero_wait_never_waits_for_a_later_input_even_after_a_long_predict():
    _, sizes = run(serve(sleeping_predict(0.2), range(3), max_batch_size=64, max_wait_ms=0, delays=[0, 0.25, 0.262]))

    assert sizes == [1, 1, 1]


def test_after_a_long_predict_a_caller_who_does_not_come_back_costs_the_next_at_most_50_ms():
    # predict() takes 1 s; of its two callers one comes back: the batch waits 50 ms for the
    # other, not 250 (a quarter of predict()).
    assert 1.0 + 0.04 <= second_round_seconds(1.0, 5, [1, 2], [3]) < 1.0 + 0.15
