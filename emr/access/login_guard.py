"""Throttling of password logins, decided before any password is hashed.

Why here and not in the database: an attacker's request must be refused for
the price of a dictionary lookup, not an Argon2 verification (≈ 50 ms of a
core and 64 MiB) or a database write. Three guards, all in memory, per
process (a restart forgets them; a hospital runs one EMR process):

* a token bucket per source IP: at most ``rate_per_minute`` attempts with a
  burst of ``burst``; the rest get 429 at once;
* back-off per (account, source) and per source: after
  ``failures_before_backoff`` failures the next attempt from that source for
  that account waits 2, 4, 8 … s up to ``max_backoff``; a source that fails
  on many accounts (password spraying) backs off as a whole. There is no lock
  that anonymous failures alone can put on an account: a correct password
  from another source still works, so an outsider cannot lock the admin out.
  Unknown user names are tracked exactly like real ones, so the answers tell
  nothing about which accounts exist;
* a bounded number of password checks at once (``hash_slots``, Argon2 and
  its database writes): the rest get 503 at once (or after ``hash_wait``
  seconds) — they must not sit on the server's worker threads, or a flood
  of logins from many addresses would queue the chart pages behind them.
  Argon2 itself runs on low-priority threads (:meth:`LoginGuard.run`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["LoginGuard", "HashingBusy"]

T = TypeVar("T")
_MAX_ENTRIES = 50_000  # per table; the oldest entries go first (bounded memory under a flood of addresses)


def _lower_priority() -> None:
    """Linux schedules threads individually: nice this hashing thread only (never raised back, never shared)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))
    except (AttributeError, OSError):  # not Linux, or not allowed: hashing still works, at normal priority
        pass


class HashingBusy(Exception):
    """Every hashing slot stayed taken for ``hash_wait`` seconds."""


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Failures:
    count: int
    last: float


class LoginGuard:
    def __init__(
        self,
        *,
        rate_per_minute: int = 30,
        burst: int = 10,
        failures_before_backoff: int = 5,
        source_failures_before_backoff: int = 20,
        first_backoff: float = 2.0,
        max_backoff: float = 900.0,
        hash_slots: int | None = None,
        hash_wait: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = max(rate_per_minute, 1) / 60.0
        self.burst = max(burst, 1)
        self.failures_before_backoff = max(failures_before_backoff, 1)
        self.source_failures_before_backoff = max(source_failures_before_backoff, 1)
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.hash_wait = hash_wait
        slots = hash_slots or max(1, (os.cpu_count() or 2) // 2)
        self._slots = threading.BoundedSemaphore(slots)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="login-hash", initializer=_lower_priority)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._pairs: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._sources: OrderedDict[str, _Failures] = OrderedDict()

    @staticmethod
    def _put(table: OrderedDict, key: object, value: object) -> None:  # type: ignore[type-arg]
        table[key] = value
        table.move_to_end(key)
        while len(table) > _MAX_ENTRIES:
            table.popitem(last=False)

    def admit(self, ip: str | None) -> float:
        """Take a token for one attempt from ``ip``; 0 when admitted, else seconds until the next token."""
        key = ip or "-"
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - bucket.tokens) / self.rate
            self._put(self._buckets, key, bucket)
        return wait

    def _delay(self, failures: _Failures | None, threshold: int, now: float) -> float:
        if failures is None or failures.count < threshold:
            return 0.0
        backoff = min(self.first_backoff * 2 ** (failures.count - threshold), self.max_backoff)
        return max(0.0, failures.last + backoff - now)

    def backoff(self, username: str, ip: str | None) -> float:
        """Seconds this source must still wait before trying this account (0: go ahead)."""
        now = self._clock()
        source = ip or "-"
        with self._lock:
            return max(
                self._delay(self._pairs.get((username.casefold(), source)), self.failures_before_backoff, now),
                self._delay(self._sources.get(source), self.source_failures_before_backoff, now),
            )

    def failed(self, username: str, ip: str | None) -> None:
        now = self._clock()
        source = ip or "-"
        pair = (username.casefold(), source)
        with self._lock:
            entry = self._pairs.get(pair) or _Failures(0, now)
            entry.count, entry.last = entry.count + 1, now
            self._put(self._pairs, pair, entry)
            whole = self._sources.get(source) or _Failures(0, now)
            whole.count, whole.last = whole.count + 1, now
            self._put(self._sources, source, whole)

    def succeeded(self, username: str, ip: str | None) -> None:
        """A correct password: this source starts afresh for this account (and as a source)."""
        with self._lock:
            self._pairs.pop((username.casefold(), ip or "-"), None)
            self._sources.pop(ip or "-", None)

    def forget_account(self, username: str) -> None:
        """An administrator unlocked the account: every source's back-off on it ends."""
        name = username.casefold()
        with self._lock:
            for key in [k for k in self._pairs if k[0] == name]:
                del self._pairs[key]

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a password hash function on the guard's low-priority hashing thread(s).

        The calling server thread waits without using the CPU; the hashing
        threads run at nice +10, so chart pages win the cores whenever both
        want them. Falls back to the calling thread when the pool is closed.
        """
        try:
            return self._pool.submit(fn, *args).result()
        except RuntimeError:  # interpreter shutting down: just do it here
            return fn(*args)

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """One of the bounded login-check slots, or :class:`HashingBusy` after ``hash_wait`` seconds."""
        got = self._slots.acquire(timeout=self.hash_wait) if self.hash_wait > 0 else self._slots.acquire(blocking=False)
        if not got:
            raise HashingBusy()
        try:
            yield
        finally:
            self._slots.release()
