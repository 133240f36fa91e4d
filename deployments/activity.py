"""What the gateway counts per deployment: requests, errors, bytes, the last request's
time, and the requests in flight.

Called from async code once per request, so recording never touches the database: it adds
to this process's counters under a lock held for microseconds. A flusher thread writes
them at most once per `ACTIVITY_FLUSH_SECONDS` (one UPDATE per deployment with activity,
F() increments, so several processes add up), and once more at exit. While a request is in
flight (a long streamed completion), each flush moves its deployment's last request time
to now, so it never counts as idle; a crashed process simply stops doing that."""

import atexit
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce, Greatest

from . import metrics
from .models import Deployment

logger = logging.getLogger(__name__)


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    last_at: float = 0.0  # time.time() of the latest activity

    def add(self, other: "Tally") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.last_at = max(self.last_at, other.last_at)


def is_error(status: int) -> bool:
    """A 5xx, or no status at all (0: the deployment did not answer)."""
    return status >= 500 or status < 100


class ActivityRecorder:
    """`flush_seconds`: the flusher thread's period; None: no thread, the owner calls flush()."""

    def __init__(self, *, flush_seconds: float | None):
        self.flush_seconds = flush_seconds
        self.updates_written = 0  # UPDATE statements so far (for the throttle's tests and benches)
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # Also in a forked child: the parent's lock may have been held and its thread is gone.
        self._lock = threading.Lock()
        self._pending: dict[int, Tally] = {}
        self._in_flight: Counter[int] = Counter()
        self._work = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, *, deployment_id: int, status: int, bytes_in: int, bytes_out: int) -> None:
        with self._lock:
            tally = self._pending.setdefault(deployment_id, Tally())
            tally.requests += 1
            tally.errors += is_error(status)
            tally.bytes_in += bytes_in
            tally.bytes_out += bytes_out
            tally.last_at = time.time()
        self._wake_flusher()

    def started(self, *, deployment_id: int) -> None:
        with self._lock:
            self._in_flight[deployment_id] += 1
        self._wake_flusher()

    def finished(self, *, deployment_id: int) -> None:
        with self._lock:
            self._in_flight[deployment_id] -= 1
            if self._in_flight[deployment_id] <= 0:
                del self._in_flight[deployment_id]
            self._pending.setdefault(deployment_id, Tally()).last_at = time.time()
        self._wake_flusher()

    def in_flight(self, deployment_id: int) -> int:
        with self._lock:
            return self._in_flight[deployment_id]

    def flush(self) -> int:
        """Write what was counted since the last flush: one UPDATE per deployment. Returns
        how many were written. What a failed write did not store is kept for the next flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
            now = time.time()
            for deployment_id in self._in_flight:
                pending.setdefault(deployment_id, Tally()).last_at = now
            if not self._in_flight:
                self._work.clear()
        written = 0
        try:
            for deployment_id in list(pending):
                _write(deployment_id, pending[deployment_id])
                del pending[deployment_id]
                written += 1
        finally:
            self.updates_written += written
            if pending:
                self._keep(pending)
        return written

    def _keep(self, unwritten: dict[int, Tally]) -> None:
        with self._lock:
            for deployment_id, tally in unwritten.items():
                self._pending.setdefault(deployment_id, Tally()).add(tally)
            self._work.set()

    def _wake_flusher(self) -> None:
        self._work.set()
        if self.flush_seconds is None:
            return
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="activity-flusher", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._work.wait()
            # Gather a whole period's requests into one write per deployment.
            time.sleep(self.flush_seconds)
            try:
                close_old_connections()
                self.flush()
            except DatabaseError:
                logger.exception("could not write the gateway's activity counts; they are kept for the next try")
            if not self._work.is_set():
                connection.close()  # idle until the next request: hold no database connection meanwhile


def _write(deployment_id: int, tally: Tally) -> None:
    at = Value(datetime.fromtimestamp(tally.last_at, tz=UTC), output_field=DateTimeField())
    Deployment.objects.filter(pk=deployment_id).update(
        requests=F("requests") + tally.requests,
        errors=F("errors") + tally.errors,
        bytes_in=F("bytes_in") + tally.bytes_in,
        bytes_out=F("bytes_out") + tally.bytes_out,
        # Another process may have written a later time already: keep the later one.
        last_request_at=Greatest(Coalesce(F("last_request_at"), at), at),
    )


RECORDER = ActivityRecorder(flush_seconds=settings.ACTIVITY_FLUSH_SECONDS)


def activity_record(*, deployment_id: int, status: int, bytes_in: int, bytes_out: int, seconds: float) -> None:
    """Count one finished gateway request (`status` 0: the deployment did not answer)."""
    RECORDER.record(deployment_id=deployment_id, status=status, bytes_in=bytes_in, bytes_out=bytes_out)
    label = str(deployment_id)
    metrics.GATEWAY_REQUESTS.labels(label, metrics.status_class(status)).inc()
    if is_error(status):
        metrics.GATEWAY_ERRORS.labels(label).inc()
    metrics.GATEWAY_BYTES.labels(label, "in").inc(bytes_in)
    metrics.GATEWAY_BYTES.labels(label, "out").inc(bytes_out)
    metrics.GATEWAY_SECONDS.observe(seconds)


def activity_started(*, deployment_id: int) -> None:
    """A request is being forwarded: its deployment must not sleep until `activity_finished`."""
    RECORDER.started(deployment_id=deployment_id)
    metrics.GATEWAY_IN_FLIGHT.inc()


def activity_finished(*, deployment_id: int) -> None:
    RECORDER.finished(deployment_id=deployment_id)
    metrics.GATEWAY_IN_FLIGHT.dec()


def _flush_at_exit() -> None:
    try:
        RECORDER.flush()
    except Exception:  # the database may be gone already at exit: say so, never hang or raise
        logger.warning("the gateway's last activity counts could not be written at exit", exc_info=True)


atexit.register(_flush_at_exit)
