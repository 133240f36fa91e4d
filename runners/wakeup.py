"""One shared wait per key: however many callers wait for the same thing (requests held
while their deployment wakes), one task does the work and every caller awaits its result,
each bounded by its own timeout. Plain asyncio, no Django.

The shared task runs while anyone waits for it: when the last waiter gives up (its
timeout, a cancelled request), the task is cancelled too, so nothing polls for nobody."""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Shared(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = 0


class SharedWaits(Generic[T]):
    def __init__(self) -> None:
        self._shared: dict[Hashable, _Shared[T]] = {}

    def waiting(self, key: Hashable) -> int:
        """How many callers wait on `key` now (0 when no shared task runs for it)."""
        shared = self._shared.get(key)
        return shared.waiters if shared else 0

    async def wait(self, key: Hashable, work: Callable[[], Awaitable[T]], *, timeout: float) -> T:
        """The result of the one running `work()` for `key`, started by the first caller.
        Raises TimeoutError after `timeout` seconds (the work goes on for the others)."""
        shared = self._join(key, work)
        shared.waiters += 1
        try:
            # shield: one waiter's timeout must not cancel the work the others await.
            return await asyncio.wait_for(asyncio.shield(shared.task), timeout)
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                shared.task.cancel()
                self._forget(key, shared)

    def _join(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> _Shared[T]:
        loop = asyncio.get_running_loop()
        shared = self._shared.get(key)
        if shared is not None and not shared.task.done() and shared.task.get_loop() is loop:
            return shared
        # A fresh context: the shared work belongs to no one request (and must not outlive
        # that request's thread executor, which asgiref keeps in a context variable).
        task = loop.create_task(work(), context=contextvars.Context())
        shared = _Shared(task=task)
        self._shared[key] = shared
        task.add_done_callback(lambda _task: self._forget(key, shared))
        return shared

    def _forget(self, key: Hashable, shared: _Shared[T]) -> None:
        if self._shared.get(key) is shared:
            del self._shared[key]
