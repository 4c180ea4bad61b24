"""A fake clock for code that takes ``clock`` and ``sleep`` (polling, backoff, file waits)."""

from __future__ import annotations

import threading


class FakeTime:
    """``clock()`` reads the fake time; ``sleep(s)`` records ``s`` and moves the time on at once,
    so waits take no real time. Thread-safe (pollers sleep from their own threads)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
