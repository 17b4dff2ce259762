"""The EMR's Prometheus instruments: request latency per endpoint and signing latency.

Why its own registry and not prometheus-client's default one: the default
registry also gathers whatever other libraries register, and tests create
many apps in one process; the EMR exposes exactly what is here plus the
database figures of :mod:`emr.ops.metrics`.

Several EMR processes (``gunicorn``-style workers, or the scale-out of issue
16 §1): prometheus-client's multiprocess mode takes over when the environment
variable ``PROMETHEUS_MULTIPROC_DIR`` names a writable, empty-at-start folder
*before* the processes start (prometheus-client reads it when a metric is
created); the values of every process are then summed at scrape time. Without
it each process reports only its own requests (the figures of a scrape
depend on which process answered).

Labels are the Flask endpoint (``blueprint.view``), never the raw URL: a URL
holds ids, and one label value per patient would grow without bound.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["INSTRUMENTS", "REQUEST_SECONDS", "SIGNING_SECONDS", "observe_request", "timed_signing"]

P = ParamSpec("P")
R = TypeVar("R")

INSTRUMENTS = CollectorRegistry(auto_describe=True)

REQUEST_SECONDS = Histogram(
    "filmless_emr_request_seconds",
    "EMR HTTP request duration by endpoint (blueprint.view), method and status class",
    ["endpoint", "method", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=INSTRUMENTS,
)

SIGNING_SECONDS = Histogram(
    "filmless_emr_signing_seconds",
    "Time to sign a document (key, PDF, time stamp) by outcome (ok, error)",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    registry=INSTRUMENTS,
)


def observe_request(endpoint: str | None, method: str, status: int, seconds: float) -> None:
    """One request's duration; unmatched URLs (404s, scans) share the label ``unmatched``."""
    REQUEST_SECONDS.labels(endpoint or "unmatched", method, f"{status // 100}xx").observe(seconds)


def timed_signing(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate the signing operation so each call's duration lands in :data:`SIGNING_SECONDS`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        outcome = "error"
        try:
            result = fn(*args, **kwargs)
            outcome = "ok"
            return result
        finally:
            SIGNING_SECONDS.labels(outcome).observe(time.perf_counter() - start)

    return wrapper
