"""Dynamic batching: many concurrent requests, one `predict(batch)` call.

Inputs queue up on the event loop while the single model thread runs the previous batch. A
batch opens when its first input arrives, or, for inputs that queued up during the previous
predict(), when the model becomes free. It closes when it holds `max_batch_size` inputs, or
once no input has arrived for `max_wait_ms` (or, while it holds fewer inputs than the last
batch, a tenth of the last predict()'s time, if that is longer; 0 never waits), and at the latest when it has been open as long as the last predict() took (or
`max_wait_ms`, if that is longer).

Why it waits: the answers of one batch go out while its callers' next inputs are on their
way, and without the wait the first few would run as a batch of their own, splitting every
later round in two (bench/serve.py, 32 clients: a third of the batches held 16 inputs or
fewer with no wait). Why it waits for a quiet gap rather than a fixed time after it opened:
behind the hub's gateway a round's inputs arrive one after another as the gateway relays
them (~0.5 ms each on one core, so 32 callers spread over ~20 ms), and a fixed 5 ms window
closed on the first few. The rest then waited out a whole predict() and formed a batch of
their own, for good when predict() takes as long for 8 inputs as for 32 (a GPU): half the
throughput, twice the latency. Why a tenth of predict() while the last batch's callers are
not all back: the gateway's relay pauses for a few milliseconds now and then (a 5 ms gap
split one batch in seven), and an input left for the next batch waits a whole predict(), ten
times what waiting for it costs; once as many have come as the last batch held, the model
idles no longer than `max_wait_ms` (called directly, MiniLM's whole round is back within
2 ms: a 15 ms wait after it would idle the model a tenth of the time). Why the cap is
the last predict()'s time: an input left behind would wait that long anyway, and a steady
trickle cannot hold a batch open.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


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
            # Inputs that queued during predict() count as arriving when the model became free.
            quiet_since = max(self._queue[-1][2], opened)
            deadline = min(quiet_since + self._quiet_s(len(self._queue)), latest)
            if loop.time() >= deadline:
                break
            await self._sleep(loop, wake_at=self._max_batch_size, deadline=deadline)
        size = min(len(self._queue), self._max_batch_size)
        return [self._queue.popleft()[:2] for _ in range(size)]

    def _quiet_s(self, queued: int) -> float:
        # 0 is the template saying "never wait": a batch takes what has queued, no more.
        if not self._max_wait_s or queued >= self._last_size:
            return self._max_wait_s
        return max(self._max_wait_s, self._last_predict_s / 10)

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
