"""Engine calls that survive a restarting engine: a broken connection or a gateway error
is tried again with backoff; anything the template caused fails at once."""

import time
from collections.abc import Callable
from typing import TypeVar

import requests
from docker.errors import APIError, DockerException

from .errors import HubFailure

T = TypeVar("T")
RETRY_DELAYS = (1.0, 2.0, 4.0)
# What a restarting engine or a proxy in front of it answers; a 500 is the engine's verdict on the request.
TRANSIENT_STATUS = {502, 503, 504}


def is_transient(error: BaseException) -> bool:
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return True
    if isinstance(error, APIError) and error.status_code in TRANSIENT_STATUS:
        return True
    cause = error.__cause__ or error.__context__
    return isinstance(error, DockerException) and isinstance(cause, requests.exceptions.ConnectionError)


def engine_retrying(
    call: Callable[[], T],
    *,
    action: str,
    log: Callable[[str], None],
    delays: tuple[float, ...] = RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, tried again after each delay while the engine fails transiently; then a HubFailure."""
    for delay in (*delays, None):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if delay is None:
                raise HubFailure(
                    f"{action}: the Docker Engine did not answer after {len(delays) + 1} attempts ({error}); "
                    "build again once the hub's operators have it running"
                ) from None
            log(f"{action}: the Docker Engine did not answer ({error}); trying again in {delay:g} s")
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
