"""The gateway's lookup cache on its own: it keeps nothing unless its listener is connected,
drops a deployment's entries on that deployment's notice, refuses a lookup read before a
notice, forgets everything when the listener's connection is lost, and listens again.
A stand-in connection plays PostgreSQL's part (the real one: tests/deployments/
test_gateway_target_cache.py)."""

import asyncio
import time
from dataclasses import dataclass
from types import SimpleNamespace

import psycopg

from deployments.target_cache import CHANNEL, TRIGGERS, TargetCache


@dataclass(frozen=True)
class Target:
    deployment_id: int


class Listener:
    """A connection as the cache uses it: LISTEN, notices as they come, a ping when quiet."""

    def __init__(self, triggers: int):
        self.notices: asyncio.Queue = asyncio.Queue()
        self.executed: list[str] = []
        self.closed = False
        self.triggers = triggers

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.closed = True

    async def execute(self, sql: str, params=None):
        self.executed.append(sql)
        return self

    async def fetchone(self):
        return (self.triggers,)  # the only query whose answer is read: how many triggers exist

    async def notifies(self, *, timeout: float):
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                notice = await asyncio.wait_for(self.notices.get(), left)
            except TimeoutError:
                return
            if isinstance(notice, Exception):
                raise notice
            yield SimpleNamespace(channel=CHANNEL, payload=notice)


class Database:
    """Hands out listeners, after `opened` is set."""

    def __init__(self, triggers: int = len(TRIGGERS)):
        self.opened = asyncio.Event()
        self.listeners: list[Listener] = []
        self.triggers = triggers

    async def connect(self) -> Listener:
        await self.opened.wait()
        self.listeners.append(Listener(self.triggers))
        return self.listeners[-1]


async def until(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.005)


async def listening_cache(**options) -> tuple[TargetCache, Database]:
    database = Database()
    cache = TargetCache(connect=database.connect, retry_seconds=0.01, **options)
    cache.get("warm", "up")  # the first lookup starts the listener
    database.opened.set()
    await until(lambda: cache.listening)
    return cache, database


def kept(cache: TargetCache, digest: str, deployment_id: int, **options) -> None:
    options.setdefault("token_expires_at", None)
    cache.put(digest, f"d-{deployment_id}", Target(deployment_id), generation=cache.generation, **options)


def test_nothing_is_kept_before_the_listener_has_connected():
    async def scenario():
        database = Database()
        cache = TargetCache(connect=database.connect)
        assert cache.get("a", "d-1") is None
        kept(cache, "a", 1)
        assert cache.get("a", "d-1") is None and len(cache) == 0
        await cache.aclose()

    asyncio.run(scenario())


def test_a_notice_drops_that_deployments_entries_and_only_those():
    async def scenario():
        cache, database = await listening_cache()
        assert database.listeners[0].executed[0] == f"LISTEN {CHANNEL}"
        kept(cache, "a", 1)
        kept(cache, "b", 1)
        kept(cache, "c", 2)
        assert cache.get("a", "d-1") == Target(1)
        database.listeners[0].notices.put_nowait("1")
        await until(lambda: len(cache) == 1)
        assert cache.get("a", "d-1") is None and cache.get("b", "d-1") is None
        assert cache.get("c", "d-2") == Target(2)
        await cache.aclose()
        assert database.listeners[0].closed

    asyncio.run(scenario())


def test_a_lookup_read_before_a_notice_is_not_kept():
    async def scenario():
        cache, database = await listening_cache()
        read_under = cache.generation  # the lookup starts ...
        database.listeners[0].notices.put_nowait("7")  # ... the deployment changes meanwhile ...
        await until(lambda: cache.generation != read_under)
        cache.put("a", "d-7", Target(7), token_expires_at=None, generation=read_under)  # ... and it ends
        assert cache.get("a", "d-7") is None
        await cache.aclose()

    asyncio.run(scenario())


def test_a_lost_connection_forgets_everything_and_the_cache_listens_again():
    async def scenario():
        cache, database = await listening_cache()
        kept(cache, "a", 1)
        database.listeners[0].notices.put_nowait(psycopg.OperationalError("server closed the connection"))
        await until(lambda: len(database.listeners) == 2 and cache.listening)
        assert database.listeners[0].closed
        assert cache.get("a", "d-1") is None  # whatever changed meanwhile was never announced
        kept(cache, "a", 1)
        assert cache.get("a", "d-1") == Target(1)
        await cache.aclose()

    asyncio.run(scenario())


def test_a_quiet_listener_is_pinged_so_a_dead_connection_is_noticed():
    async def scenario():
        cache, database = await listening_cache(ping_seconds=0.02)
        await until(lambda: database.listeners[0].executed.count("SELECT 1") >= 2)
        await cache.aclose()

    asyncio.run(scenario())


def test_an_expired_token_is_not_used_and_the_least_used_entry_goes_first():
    async def scenario():
        cache, _ = await listening_cache(max_entries=2)
        kept(cache, "expired", 1, token_expires_at=time.time() - 1)
        assert cache.get("expired", "d-1") is None
        kept(cache, "a", 1)
        kept(cache, "b", 2)
        cache.get("a", "d-1")  # used: kept over b when a third one comes
        kept(cache, "c", 3)
        assert len(cache) == 2 and cache.get("b", "d-2") is None
        assert cache.get("a", "d-1") == Target(1) and cache.get("c", "d-3") == Target(3)
        await cache.aclose()

    asyncio.run(scenario())


def test_no_entry_outlives_keep_seconds():
    async def scenario():
        cache, _ = await listening_cache(keep_seconds=0)
        kept(cache, "a", 1)
        assert cache.get("a", "d-1") is None and len(cache) == 0
        await cache.aclose()

    asyncio.run(scenario())


def test_a_notice_it_cannot_read_forgets_everything():
    async def scenario():
        cache, database = await listening_cache()
        kept(cache, "a", 1)
        database.listeners[0].notices.put_nowait("not a deployment id")
        await until(lambda: len(cache) == 0)
        await cache.aclose()

    asyncio.run(scenario())


def test_nothing_is_kept_when_the_database_has_no_triggers_to_announce_changes():
    async def scenario():
        database = Database(triggers=1)  # migrated back below 0009, say
        cache = TargetCache(connect=database.connect, no_triggers_retry_seconds=0.01)
        cache.get("warm", "up")
        database.opened.set()
        await until(lambda: len(database.listeners) >= 2)  # looked, let go, looks again later
        assert database.listeners[0].closed and not cache.listening
        kept(cache, "a", 1)
        assert cache.get("a", "d-1") is None
        await cache.aclose()

    asyncio.run(scenario())
