"""The bounded thread pool that questions (``/ask``, mentions) run on: :class:`BoundedPool` says
"busy" at once instead of queueing without end. Stdlib only."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# The /ask pool: questions answered at once (the local model server batches concurrent ones on its
# one generation thread; OpenAI questions wait on the network) and questions allowed to wait.
ASK_WORKERS = 4
ASK_MAX_WAITING = 16


class BoundedPool:
    """A thread pool that says no instead of queueing without end: ``workers`` tasks run at once,
    at most ``max_waiting`` more wait for a thread, and :meth:`try_submit` refuses beyond that,
    so the caller can answer "busy" at once."""

    def __init__(self, *, workers: int, max_waiting: int, name: str = "ftbot-ask") -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.capacity = workers + max_waiting
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Tasks accepted and not finished (running or waiting)."""
        with self._lock:
            return self._taken

    def try_submit(self, task: Callable[[], None]) -> bool:
        """Run ``task`` on the pool and return True, or return False at once when it is full."""
        with self._lock:
            if self._taken >= self.capacity:
                return False
            self._taken += 1

        def run() -> None:
            try:
                task()
            finally:
                with self._lock:
                    self._taken -= 1

        try:
            self._executor.submit(run)
        except RuntimeError:  # shut down: nothing will run it
            with self._lock:
                self._taken -= 1
            return False
        return True
