"""Dynamic batching: many concurrent requests, one `predict(batch)` call.

Requests queue up on the event loop. A batch closes when it holds `max_batch_size` items or
`max_wait_ms` after its first item arrived, whichever is first; it then runs on the single
model thread while the loop keeps accepting requests, so the next batch fills up meanwhile.
"""

import asyncio
import time
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
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future, float]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.monotonic()))
        return await future

    async def submit_many(self, items: list) -> list:
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
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
            self._observe_batch(len(live), time.perf_counter() - started)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        first_item, first_future, first_arrival = await self._queue.get()
        batch = [(first_item, first_future)]
        # Counted from when the first input arrived, not from when the model became free: inputs
        # that queued up during the previous predict() have waited already and go at once.
        deadline = first_arrival + self._max_wait_s
        while len(batch) < self._max_batch_size:
            if not self._queue.empty():
                item, future, _ = self._queue.get_nowait()
                batch.append((item, future))
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item, future, _ = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            batch.append((item, future))
        return batch

    def _predict_checked(self, items: list) -> list:
        outputs = list(self._predict(items))
        if len(outputs) != len(items):
            raise BatchSizeMismatch(f"predict() returned {len(outputs)} outputs for a batch of {len(items)} inputs")
        return outputs


def _settle(batch: list[tuple[Any, asyncio.Future]], outputs: list) -> None:
    """An output that is an exception instance fails only its own request."""
    for (_, future), output in zip(batch, outputs):
        if future.done():  # the caller went away (client disconnected, cancelled)
            continue
        if isinstance(output, BaseException):
            future.set_exception(output)
        else:
            future.set_result(output)
