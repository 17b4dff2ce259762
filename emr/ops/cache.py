"""Figures computed at most once per time-to-live and process, shared by the requests that ask meanwhile.

Why: the operations page's turnaround quantiles and the /metrics database
gauges read a month or a year of rows (hundreds of milliseconds at a
provincial hospital's volume, ``benchmarks/emr.py``) while an administrator
reloads the page and Prometheus scrapes every 15 s. A figure a minute old is
as good for both; the page shows when its figures were computed.

One computation per key at a time (the others wait for it and take its
result) so that ten administrators opening the page after a restart do not
run the same month-wide query ten times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["TtlCache"]

T = TypeVar("T")


class TtlCache:
    """``key → (computed at, value)``; :meth:`get` recomputes when the value is older than ``ttl`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, ttl: float, compute: Callable[[], T]) -> T:
        """The cached value of ``key`` when younger than ``ttl``, else ``compute()`` (once for all waiting callers).

        A ``ttl`` of 0 always computes (tests, or a deployment that wants live figures). An
        exception in ``compute`` reaches the caller and nothing is cached.
        """
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            found = self._values.get(key)
            if found is not None and ttl > 0 and self._clock() - found[0] < ttl:
                return found[1]  # type: ignore[no-any-return]
            started = self._clock()
            value = compute()
            with self._guard:
                self._values[key] = (started, value)
                if len(self._values) > 256:  # keys hold a database URL and a day: drop the oldest
                    oldest = min(self._values, key=lambda k: self._values[k][0])
                    self._values.pop(oldest, None)
                    self._locks.pop(oldest, None)
            return value
