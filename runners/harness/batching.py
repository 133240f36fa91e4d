"""Dynamic batching: many concurrent requests, one `predict(batch)` call.

Inputs queue up on the event loop while the single model thread runs the previous batch. A
batch opens when its first input arrives, or, for inputs that queued up during the previous
predict(), when the model becomes free. It closes when it holds `max_batch_size` inputs, or
once no input has arrived for `max_wait_ms`; until nine in ten of the last batch's callers
are back, it waits out a pause of up to a quarter of the last predict()'s time instead (if
that is longer; 50 ms at most). At the latest it closes when it has been open as long as the last predict()
took (or `max_wait_ms`, if longer). `max_wait_ms: 0` never waits.

Why it waits: the answers of one batch go out while its callers' next inputs are on their
way, and without the wait the first few would run as a batch of their own, splitting every
later round in two (bench/serve.py, 32 clients: a third of the batches held 16 inputs or
fewer with no wait).

Why a quiet gap, and a longer one until the callers are back: behind the hub's gateway a
round's inputs arrive one by one as the gateway relays them (~0.5 ms each on one core, so 32
callers spread over ~20 ms), and now and then one comes first and the rest 10-20 ms later,
while the gateway relays the other answers. A window fixed at 5 ms after the first closed on
the first few; the rest waited out a whole predict() and formed a batch of their own, for
good when predict() takes as long for 8 inputs as for 32 (a GPU): half the throughput, twice
the latency. An input left behind waits a whole predict(), four times the longest pause
waited out for it. Once the callers are back, the model idles no longer than `max_wait_ms`
(called directly, a round is back within 2 ms). The cap: an input left behind would wait
that long anyway, and a steady trickle cannot hold a batch open.

A GPU-like stand-in (100 ms a batch, 32 callers through the gateway on a 2-core machine):
0.55 of direct throughput with the fixed window, 0.89 with this; p99 +100 ms over direct
with the fixed window, within 20 ms with this.
"""

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

# Until the last batch's callers are back, a batch waits out pauses of up to this share of
# the last predict()'s time, and never more than the cap: the gateway's pauses last tens of
# milliseconds however long the model takes, and after a 5 s generation a caller who is not
# coming back must not cost the next one 1.25 s.
STRAGGLER_WAIT = 0.25
STRAGGLER_WAIT_MAX_S = 0.05


class BatchSizeMismatch(RuntimeError):
    pass


class DynamicBatcher:
    def __init__(
        self,
        predict: Callable[[list], list],
        *,
        executor: Executor,
        max_batch_size: int = 1,
        max_wait_ms: float = 0,
        observe_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self._max_batch_size = max(1, max_batch_size)
        self._max_wait_s = max(0.0, max_wait_ms / 1000)
        self._observe_batch = observe_batch
        self._queue: deque[tuple[Any, asyncio.Future, float]] = deque()
        # Set while the collector sleeps: resolved once the queue holds `_wake_at` inputs.
        self._wakeup: asyncio.Future | None = None
        self._wake_at = 1
        self._task: asyncio.Task | None = None
        self._last_predict_s = 0.0
        self._last_size = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future, loop.time()))
        if self._wakeup is not None and len(self._queue) >= self._wake_at and not self._wakeup.done():
            self._wakeup.set_result(None)
        return await future

    async def submit_many(self, items: list) -> list:
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(loop)
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._predict_checked, [item for item, _ in live])
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the whole batch failed: every caller gets the error
                _settle(live, [exc] * len(live))
            else:
                _settle(live, outputs)
            self._last_predict_s, self._last_size = time.perf_counter() - started, len(live)
            self._observe_batch(len(live), self._last_predict_s)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[tuple[Any, asyncio.Future]]:
        model_free_since = loop.time()
        if not self._queue:
            await self._sleep(loop, wake_at=1, deadline=None)
        opened = max(self._queue[0][2], model_free_since)
        latest = opened + max(self._max_wait_s, self._last_predict_s)
        while len(self._queue) < self._max_batch_size:
            # Until most of the last batch's callers are back, a longer pause is waited out.
            returning = bool(self._max_wait_s) and len(self._queue) < self._callers_back()
            quiet = self._straggler_wait_s() if returning else self._max_wait_s
            # Inputs that queued during predict() count as arriving when the model became free.
            deadline = min(max(self._queue[-1][2], opened) + quiet, latest)
            if loop.time() >= deadline:
                break
            await self._sleep(loop, wake_at=self._callers_back() if returning else self._max_batch_size,
                              deadline=deadline)
        size = min(len(self._queue), self._max_batch_size)
        return [self._queue.popleft()[:2] for _ in range(size)]

    def _straggler_wait_s(self) -> float:
        return max(self._max_wait_s, min(self._last_predict_s * STRAGGLER_WAIT, STRAGGLER_WAIT_MAX_S))

    def _callers_back(self) -> int:
        """How many inputs count as the last batch's callers being back: nine in ten of them
        (a caller can cross into the next round, and the count must not wait for it)."""
        return min(self._max_batch_size, max(1, math.ceil(0.9 * self._last_size)))

    async def _sleep(self, loop: asyncio.AbstractEventLoop, *, wake_at: int, deadline: float | None) -> None:
        """Until the queue holds `wake_at` inputs, or `deadline` (loop time) passes."""
        self._wakeup, self._wake_at = loop.create_future(), wake_at
        timer = loop.call_at(deadline, _resolve, self._wakeup) if deadline is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _predict_checked(self, items: list) -> list:
        outputs = list(self._predict(items))
        if len(outputs) != len(items):
            raise BatchSizeMismatch(f"predict() returned {len(outputs)} outputs for a batch of {len(items)} inputs")
        return outputs


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _settle(batch: list[tuple[Any, asyncio.Future]], outputs: list) -> None:
    """An output that is an exception instance fails only its own request."""
    for (_, future), output in zip(batch, outputs):
        if future.done():  # the caller went away (client disconnected, cancelled)
            continue
        if isinstance(output, BaseException):
            future.set_exception(output)
        else:
            future.set_result(output)
