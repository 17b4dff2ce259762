"""Several Orthanc servers on one shared index, used as one store (scale-out, issue 16).

With the PostgreSQL index (``Lock: false``) and one shared storage folder,
every Orthanc server of a site sees every instance. A gateway or EMR node
talks to the one next to it and, while that one cannot be reached, to the
others: an Orthanc restarting or crashed mid-send does not hold a modality's
study in the spool, and the viewer keeps serving. Only
:class:`StorageUnavailable` (refused connection, 5xx, timeout) moves to the
next server; a refusal of the content or a missing resource is the same
answer everywhere and is raised at once. Every write filmless makes is
idempotent (an instance stored twice is ``AlreadyStored``), so repeating a
request that timed out on another server is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from .client import OrthancStore
from .exceptions import StorageUnavailable

__all__ = ["FailoverStore"]

log = logging.getLogger(__name__)


class FailoverStore:
    """An :class:`OrthancStore` look-alike over several Orthanc servers, the first preferred.

    The server that last answered is tried first (so a dead one costs one
    refused connection per call, not a timeout per call); when the preferred
    server answers again the store moves back to it on the next ``ping``.
    """

    def __init__(self, stores: Sequence[OrthancStore]) -> None:
        if not stores:
            raise ValueError("FailoverStore needs at least one Orthanc")
        self._stores = list(stores)
        self._current = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self._stores[self._current].url

    @property
    def stores(self) -> list[OrthancStore]:
        return list(self._stores)

    def ping(self) -> bool:
        """True when any server answers; prefers the first again once it is back."""
        for index, store in enumerate(self._stores):
            if store.ping():
                self._use(index)
                return True
        return False

    def _use(self, index: int) -> None:
        with self._lock:
            if index != self._current:
                log.warning("Orthanc: now using %s (was %s)", self._stores[index].url, self._stores[self._current].url)
                self._current = index

    def _order(self) -> list[int]:
        first = self._current
        return [first] + [i for i in range(len(self._stores)) if i != first]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._stores[0], name)
        if not callable(attribute):
            return getattr(self._stores[self._current], name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A file being streamed (``upload(f)``) is rewound before it is sent again.
        rewind: list[Callable[[], Any]] = [
            partial(arg.seek, arg.tell()) for arg in args if hasattr(arg, "seek") and hasattr(arg, "tell")
        ]
        last: StorageUnavailable | None = None
        for attempt, index in enumerate(self._order()):
            if attempt:
                for undo in rewind:
                    undo()
            try:
                result = getattr(self._stores[index], name)(*args, **kwargs)
            except StorageUnavailable as exc:
                last = exc
                continue
            self._use(index)
            return result
        assert last is not None
        raise last
