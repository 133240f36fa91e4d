"""The one rule for tests that need something outside Python (a Docker Engine, Redis, a
browser, the templates' environment): on a laptop without it they skip; in CI, where
everything must run, a missing piece fails the test instead."""

import os

import pytest


def unavailable(reason: str) -> None:
    """Skip off CI, fail under CI (the `CI` environment variable); never returns."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test, but {reason}")
    pytest.skip(reason)  # only off CI: the line above fails instead when CI is set
