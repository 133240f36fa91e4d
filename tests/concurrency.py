"""Calls released together by a barrier, each in a thread of its own: the suite's way of
testing two requests at the same moment (on SQLite and on PostgreSQL)."""

import threading

from django.db import connections


def at_once(*calls, timeout: float = 30) -> tuple[list, list[Exception]]:
    """Run each call in its own thread, all released together: (their results, in the order
    of `calls`; the errors raised). Each thread closes its database connections when done."""
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def run(index, call):
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except Exception as exc:  # reported by the caller: the test must see every failure
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * timeout)
    return results, errors
