"""The EMR's Prometheus exposition: its instruments plus database and archive figures read per scrape.

Gauges that describe the database (studies by state, unread studies, orders
by status, outbox messages by status) are GROUP BY queries run when
Prometheus asks, in the answering process: they are the same whichever EMR
process answers. Orthanc's disk use comes through ``storage``
(:meth:`storage.OrthancStore.statistics`); Orthanc being down shows as
``filmless_emr_orthanc_up 0``, never as a failed scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.models import ImagingOrder, Study

from .cache import TtlCache
from .instruments import INSTRUMENTS
from .service import outbox_health, unread_by_age

__all__ = ["EmrCollector", "exposition"]


# The database gauges are GROUP BYs over a year of studies (a few hundred ms at a provincial
# hospital's volume, benchmarks/emr.py); Prometheus scrapes every 15 s, possibly from two servers.
# They are computed at most once per DB_GAUGES_TTL seconds per process and database.
DB_GAUGES_TTL = 30.0
_cache = TtlCache()


class EmrCollector(Collector):
    """``filmless_emr_*`` gauges read from the database and the archive at scrape time."""

    def __init__(self, session: Session, store: Any = None, ttl: float = DB_GAUGES_TTL) -> None:
        self.session = session
        self.store = store
        self.ttl = ttl

    def collect(self) -> Iterator[Any]:
        key = str(self.session.get_bind().engine.url)
        yield from _cache.get(key, self.ttl, lambda: list(self._database()))
        yield from self._archive()

    def _database(self) -> Iterator[Any]:
        s = self.session
        studies = GaugeMetricFamily("filmless_emr_studies", "Studies known to the EMR by state", labels=["state"])
        for state, count in s.execute(select(Study.state, func.count()).group_by(Study.state)):
            studies.add_metric([str(state)], int(count))
        yield studies
        orders = GaugeMetricFamily("filmless_emr_orders", "Imaging orders by status", labels=["status"])
        for status, count in s.execute(select(ImagingOrder.status, func.count()).group_by(ImagingOrder.status)):
            orders.add_metric([str(status)], int(count))
        yield orders
        unread = GaugeMetricFamily(
            "filmless_emr_unread_studies", "Linked studies without a signed report, by age since arrival",
            labels=["age"],
        )
        for age, count in unread_by_age(s).items():
            unread.add_metric([age], count)
        yield unread
        counts, oldest = outbox_health(s)
        outbox = GaugeMetricFamily("filmless_emr_outbox_messages", "Outbox messages by status", labels=["status"])
        for status, count in sorted(counts.items()):
            outbox.add_metric([status], count)
        yield outbox
        yield GaugeMetricFamily(
            "filmless_emr_outbox_oldest_pending_seconds", "Age of the oldest outbox message not delivered yet",
            value=oldest,
        )

    def _archive(self) -> Iterator[Any]:
        if self.store is None or not callable(getattr(self.store, "statistics", None)):
            return
        try:
            stats = self.store.statistics()
        except Exception:  # noqa: BLE001 - storage.StorageError and anything under it: Orthanc is down
            yield GaugeMetricFamily("filmless_emr_orthanc_up", "Orthanc answers its REST API", value=0)
            return
        yield GaugeMetricFamily("filmless_emr_orthanc_up", "Orthanc answers its REST API", value=1)
        yield GaugeMetricFamily(
            "filmless_emr_orthanc_disk_bytes", "Disk Orthanc's storage uses", value=stats.disk_bytes
        )
        yield GaugeMetricFamily("filmless_emr_orthanc_instances", "Instances in Orthanc", value=stats.instances)
        yield GaugeMetricFamily("filmless_emr_orthanc_studies", "Studies in Orthanc", value=stats.studies)


class _Instruments(Collector):
    """This process's request and signing histograms (single-process mode)."""

    def collect(self) -> Iterator[Any]:
        yield from INSTRUMENTS.collect()


def exposition(
    session: Session,
    store: Any = None,
    environ: Callable[[str], str | None] = os.environ.get,
    *,
    ttl: float | None = None,
) -> bytes:
    """The text a scrape returns. With ``PROMETHEUS_MULTIPROC_DIR`` set, the histograms are those of every
    EMR process (prometheus-client multiprocess mode, see :mod:`emr.ops.instruments`)."""
    registry = CollectorRegistry(auto_describe=False)
    directory = environ("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Instruments())
    registry.register(EmrCollector(session, store, DB_GAUGES_TTL if ttl is None else ttl))
    return generate_latest(registry)
