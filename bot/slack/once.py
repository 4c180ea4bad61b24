"""Deduplication for Slack's repeated deliveries: :class:`Seen` (event ids) and :class:`OnceEach`
(a file's intake per channel). Thread-safe, bounded, in memory; stdlib only."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class Seen:
    """A bounded, thread-safe "seen before?" set with a time-to-live (event and file ids)."""

    def __init__(
        self, *, ttl: float = 3600.0, max_items: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._items: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._ttl = ttl
        self._max = max_items
        self._clock = clock
        self._lock = threading.Lock()

    def first_time(self, *key: str) -> bool:
        """True the first time ``key`` is offered within the TTL (and remember it)."""
        now = self._clock()
        with self._lock:
            self._forget_old(now)
            if key in self._items:
                return False
            self._items[key] = now
            return True

    def knows(self, *key: str) -> bool:
        """True when ``key`` was offered within the TTL (without remembering it now)."""
        with self._lock:
            self._forget_old(self._clock())
            return key in self._items

    def _forget_old(self, now: float) -> None:
        """Drop expired keys, and the oldest beyond ``max_items`` (the caller holds the lock)."""
        while self._items:
            oldest, at = next(iter(self._items.items()))
            if now - at < self._ttl and len(self._items) < self._max:
                break
            self._items.pop(oldest)


class OnceEach:
    """Work done at most once per key: a key is *claimed* while its work runs (another delivery
    meanwhile is dropped) and *done* once the work succeeded (remembered for ``ttl``); a key
    whose work failed is released, so the next delivery does the work again."""

    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._done = Seen(ttl=ttl, clock=clock)
        self._running: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def claim(self, *key: str) -> bool:
        """True when the caller should do the work for ``key`` now (and must :meth:`release` it)."""
        with self._lock:
            if key in self._running or self._done.knows(*key):
                return False
            self._running.add(key)
            return True

    def release(self, *key: str, done: bool) -> None:
        """End a claim: ``done`` (the work succeeded) keeps ``key`` from being done again."""
        with self._lock:
            self._running.discard(key)
            if done:
                self._done.first_time(*key)
