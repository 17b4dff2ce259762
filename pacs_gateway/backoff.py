"""Exponential back-off per key, for work kept on disk and retried until it succeeds.

Used by the MPPS queue (per MPPS instance) and storage commitment (per
transaction): the first retry waits ``initial`` seconds, each failure doubles
the wait up to ``maximum``, and a success forgets the key. Nothing is ever
dropped; only the pace of retrying changes. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, initial: float, maximum: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial = initial
        self.maximum = maximum
        self._clock = clock
        self._state: dict[Hashable, tuple[float, float]] = {}  # key → (next attempt, next delay)
        self._lock = threading.Lock()

    def wait_left(self, key: Hashable) -> float:
        """Seconds until ``key`` may be tried again (0: now)."""
        with self._lock:
            due, _ = self._state.get(key, (0.0, self.initial))
        return max(0.0, due - self._clock())

    def failed(self, key: Hashable) -> float:
        """Record a failed attempt now; returns the wait before the next one."""
        with self._lock:
            _, delay = self._state.get(key, (0.0, self.initial))
            self._state[key] = (self._clock() + delay, min(delay * 2, self.maximum))
        return delay

    def forget(self, key: Hashable) -> None:
        """Success (or a fresh request): the next failure starts from ``initial`` again."""
        with self._lock:
            self._state.pop(key, None)
