"""The gateway's lookups of running deployments, kept in this process for as long as
PostgreSQL tells it when one changes.

Every request through the gateway looks up its token and deployment: one indexed query,
yet two thirds of the hub's CPU a request (the hop to a thread and the driver: 0.47 of
0.72 ms, bench/deploy.py). Kept here, a running deployment's target costs a dictionary
read. What must never go stale: a revoked or deleted token stops working at once, and a
deployment that goes to sleep, stops or moves is woken or refused, never called at its old
address. So entries are kept only while this process LISTENs on PostgreSQL's
`hub_gateway` channel, to which triggers on the deployment and token tables send the
deployment's id on every change the gateway reads (migration 0009, delivered at commit);
that deployment's entries are dropped as the notice arrives. A token's expiry is checked
on each use, and no entry lives longer than `keep_seconds` in any case.

Not listening (SQLite, not yet connected, the connection lost, the triggers missing: a
database migrated back below 0009): nothing is kept, and every request asks the database
as it would without this cache."""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

CHANNEL = "hub_gateway"
# The triggers that send the notices (migration 0009): without them nothing may be kept.
TRIGGERS = ("hub_gateway_deployment_changed", "hub_gateway_token_changed")
TRIGGERS_PRESENT = "SELECT count(DISTINCT tgname) FROM pg_trigger WHERE tgname = ANY(%s) AND NOT tgisinternal"
# How the listener's connection shows in pg_stat_activity.
LISTENER_NAME = "hub gateway listener"


class Cacheable(Protocol):
    deployment_id: int


@dataclass(frozen=True)
class _Entry:
    target: Any
    token_expires_at: float | None  # time.time(); None: the token never expires
    kept_until: float  # time.monotonic()


Connect = Callable[[], Awaitable[Any]]  # a new autocommit psycopg.AsyncConnection


class TargetCache:
    """Targets by (token digest, handle). `generation` moves on every change notice: a
    lookup that began before a notice may have read what it announced as changed, so
    `put` keeps a target only if the generation it was read under is still current."""

    def __init__(self, *, connect: Connect, max_entries: int = 10_000, keep_seconds: float = 60.0,
                 ping_seconds: float = 10.0, retry_seconds: float = 2.0, no_triggers_retry_seconds: float = 60.0):
        self._connect = connect
        self.max_entries = max_entries
        self.keep_seconds = keep_seconds
        self.ping_seconds = ping_seconds
        self.retry_seconds = retry_seconds
        self.no_triggers_retry_seconds = no_triggers_retry_seconds
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._keys_of: dict[int, set[tuple[str, str]]] = {}
        self.generation = 0
        self.listening = False
        self._task: asyncio.Task | None = None

    def get(self, digest: str, handle: str) -> Any | None:
        self._ensure_listener()
        if not self.listening:
            return None
        key = (digest, handle)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.kept_until <= time.monotonic() or (
            entry.token_expires_at is not None and entry.token_expires_at <= time.time()
        ):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.target

    def put(self, digest: str, handle: str, target: Cacheable, *, token_expires_at: float | None, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        key = (digest, handle)
        self._drop(key)
        self._entries[key] = _Entry(target, token_expires_at, time.monotonic() + self.keep_seconds)
        self._keys_of.setdefault(target.deployment_id, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget(self, deployment_id: int) -> None:
        self.generation += 1
        for key in self._keys_of.pop(deployment_id, ()):
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._keys_of.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._keys_of.get(entry.target.deployment_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of[entry.target.deployment_id]

    def _ensure_listener(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="gateway-target-cache")

    async def _listen(self) -> None:
        while True:
            pause = self.retry_seconds
            try:
                if not await self._listen_once():
                    pause = self.no_triggers_retry_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away, or never answered: retried, never fatal
                logger.warning("the gateway's lookup cache is off until PostgreSQL answers again: %s", exc)
            finally:
                self.listening = False
                self.clear()
            await asyncio.sleep(pause)

    async def _listen_once(self) -> bool:
        """Listen until the connection fails; False at once if no trigger would speak."""
        async with await self._connect() as listener:
            await listener.execute(f"LISTEN {CHANNEL}")
            present = await (await listener.execute(TRIGGERS_PRESENT, [list(TRIGGERS)])).fetchone()
            if present[0] != len(TRIGGERS):
                logger.warning("the gateway's lookup cache is off: the database has no %s triggers "
                               "(run `manage.py migrate`)", CHANNEL)
                return False
            # Whatever changed before the LISTEN took effect was never announced here.
            self.clear()
            self.listening = True
            while True:
                async for notice in listener.notifies(timeout=self.ping_seconds):
                    self._noticed(notice.payload)
                # Quiet for a while: a connection that died without a word fails here.
                await listener.execute("SELECT 1")

    def _noticed(self, payload: str) -> None:
        try:
            self.forget(int(payload))
        except ValueError:
            self.clear()
