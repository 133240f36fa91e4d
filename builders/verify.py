"""The start check of a build: the built template is started with no network and must
answer its ready path with 200 within a deadline. Shared by both backends."""

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from .errors import TemplateNotReady

POLL_SECONDS = 0.5
LOG_TAIL_LINES = 30
# Run inside the container (it has no network, so the hub cannot reach its port): exit 0 on a 200.
READY_PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
)


def wait_until_ready(
    *,
    ready: Callable[[], bool],
    exited: Callable[[], str | None],
    logs: Callable[[], str],
    ready_path: str,
    timeout: float,
    started: float,
) -> float:
    """Seconds from `started` (a monotonic time) until `ready()`; TemplateNotReady with the last
    log lines when `exited()` names a reason or `timeout` passes first."""
    while True:
        if ready():
            return time.monotonic() - started
        reason = exited()
        if reason is None and time.monotonic() - started > timeout:
            reason = f"{ready_path} did not answer 200"
        if reason is not None:
            raise not_ready(reason, timeout=timeout, log_tail=_tail(logs()))
        time.sleep(POLL_SECONDS)


def not_ready(reason: str, *, timeout: float, log_tail: str) -> TemplateNotReady:
    lines = f"; last log lines:\n{log_tail}" if log_tail else "; it wrote no log lines"
    return TemplateNotReady(
        f"the template did not become ready within {timeout:g} s: {reason}; "
        f"fix it and publish a new version, or yank this one{lines}",
        log_tail=log_tail,
    )


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])
