"""Waiting, in real time, for what background threads and processes do."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    tick: Callable[[], None] | None = None,
    interval: float = 0.05,
) -> None:
    """Return once ``predicate()`` holds; fail the test (AssertionError naming ``what``) when it
    does not within ``timeout`` seconds. ``tick`` runs before each look (e.g. a dispatcher's tick,
    for tests that drive it by hand)."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
