"""Instance Availability Notification SCU (PS3.4 Annex R, IHE RAD-49).

When Orthanc declares a study stable (no new instance for ``StableAge``
seconds), the gateway tells every subscriber declared in
``FILMLESS_GATEWAY_IAN_SUBSCRIBERS`` (``AET@host:port``: RIS, reporting
workstations) which series and instances are now available, and from which
AE title to retrieve them, with an N-CREATE of the IAN SOP class.

Durable like MPPS and storage commitment: each notification is a JSON file
under ``<spool>/ian/`` (written before the feed position moves on), sent by a
background thread and retried with capped back-off until every subscriber
has accepted it, also across restarts. The instance list is read from
Orthanc when it is sent, so a study that grew again is notified whole.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import InstanceAvailabilityNotification  # type: ignore[attr-defined]  # generated module

from storage import NotFound

from .commitment import ReturnAddress
from .durable import DurableQueue, write_json

__all__ = ["AvailabilityNotifier", "ian_dataset"]

log = logging.getLogger(__name__)

# N-CREATE statuses meaning "the subscriber has it" (PS3.7 C): success,
# the warnings, and duplicate instance (an earlier attempt got through).
_ACCEPTED = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0x0111})


class ChangesStore(Protocol):
    """What IAN needs from storage (``storage.OrthancStore`` has it)."""

    def changes(self, since: int = 0, limit: int = 100) -> Any: ...

    def last_change(self) -> int: ...

    def get_resource(self, level: Any, orthanc_id: str) -> Any: ...

    def stored_instances(self, level: Any, orthanc_ids: list[str], *, workers: int = 4) -> list[Any]: ...


def ian_dataset(study_uid: str, series: dict[str, list[tuple[str, str]]], retrieve_aet: str) -> Dataset:
    """The IAN N-CREATE attribute list (PS3.3 C.35.1): every series and instance, ONLINE."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.StudyInstanceUID = study_uid
    items = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        refs = []
        for sop_class, sop_instance in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop_instance
            ref.InstanceAvailability = "ONLINE"
            ref.RetrieveAETitle = retrieve_aet
            refs.append(ref)
        item.ReferencedSOPSequence = refs
        items.append(item)
    ds.ReferencedSeriesSequence = items
    return ds


class AvailabilityNotifier(DurableQueue):
    """Follows Orthanc's changes feed and notifies subscribers of stable studies."""

    thread_name = "ian"

    def __init__(self, root: Path, store: ChangesStore, subscribers: Iterable[str], *, ae_title: str,
                 retry_initial: float = 0.5, retry_max: float = 30.0, network_timeout: float = 30.0,
                 poll: float = 2.0) -> None:
        super().__init__(root)
        self.store = store
        self.subscribers = {a.ae_title: a for a in (ReturnAddress.parse(s) for s in subscribers)}
        self.ae_title = ae_title
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.network_timeout = network_timeout
        self.poll = poll
        self._retry: dict[str, tuple[float, float]] = {}  # job file → (next attempt, next delay)
        self._next_poll = 0.0

    @property
    def _state(self) -> Path:
        return self.queue_dir / "feed.position"

    def open(self) -> None:
        self.queue_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._start_worker()

    # -- the feed -----------------------------------------------------------------
    def _position(self) -> int | None:
        try:
            return int(json.loads(self._state.read_text("utf-8"))["last"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ian: unreadable feed position (%s); starting from now", exc)
            return None

    def _follow(self) -> None:
        """Queue a notification for each newly stable study; then move the position on."""
        since = self._position()
        if since is None:
            # First start: notify what becomes stable from now on, not the whole archive.
            write_json(self._state, {"last": self.store.last_change()}, "the IAN feed position")
            return
        while not self._stop.is_set():
            page = self.store.changes(since=since, limit=200)
            for change in page.changes:
                if change.change_type == "StableStudy":
                    name = f"{change.seq:012d}-{change.resource_id}.json"
                    write_json(self.queue_dir / name, {"study_id": change.resource_id,
                                                       "subscribers": sorted(self.subscribers)},
                               "the IAN notification")
            if page.last == since:
                break
            since = page.last
            write_json(self._state, {"last": since}, "the IAN feed position")
            if page.done:
                break

    # -- the worker -----------------------------------------------------------------
    def _work_due(self) -> float:
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll
            try:
                self._follow()
            except Exception as exc:  # noqa: BLE001 - Orthanc down or disk full: try again next poll
                log.warning("ian: cannot follow Orthanc's changes: %s", exc)
        next_look = max(0.05, self._next_poll - time.monotonic())
        for path in sorted(self.queue_dir.glob("*.json")):
            if self._stop.is_set():
                break
            due, delay = self._retry.get(path.name, (0.0, self.retry_initial))
            if due > time.monotonic():
                next_look = min(next_look, due - time.monotonic())
                continue
            if self._deliver(path):
                self._retry.pop(path.name, None)
            else:
                self._retry[path.name] = (time.monotonic() + delay, min(delay * 2, self.retry_max))
                next_look = min(next_look, delay)
        return next_look

    def _deliver(self, path: Path) -> bool:
        """Notify the remaining subscribers of one study; True when none remain."""
        try:
            job = json.loads(path.read_text("utf-8"))
            study_id = str(job["study_id"])
            remaining = [str(s) for s in job["subscribers"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ian: unreadable notification %s (%s); set aside", path.name, exc)
            path.rename(path.with_suffix(".bad"))
            return True
        try:
            study = self.store.get_resource("Study", study_id)
            instances = self.store.stored_instances("Study", [study_id])
            series_uids = {s: self.store.get_resource("Series", s).tags.get("SeriesInstanceUID", "")
                           for s in {i.series_id for i in instances}}
        except NotFound:
            log.warning("ian: study %s is gone from Orthanc; nothing to notify", study_id)
            path.unlink(missing_ok=True)
            return True
        except Exception as exc:  # noqa: BLE001 - Orthanc down: retried
            log.warning("ian: cannot read study %s: %s", study_id, exc)
            return False
        series: dict[str, list[tuple[str, str]]] = {}
        for inst in instances:
            series.setdefault(series_uids[inst.series_id], []).append((inst.sop_class_uid, inst.sop_instance_uid))
        ds = ian_dataset(study.tags.get("StudyInstanceUID", ""), series, self.ae_title)
        still = [s for s in remaining if not self._send(s, ds)]
        if still:
            job["subscribers"] = still
            write_json(path, job, "the IAN notification")
            return False
        path.unlink(missing_ok=True)
        return True

    def _send(self, subscriber: str, ds: Dataset) -> bool:
        address = self.subscribers.get(subscriber)
        if address is None:
            log.warning("ian: %s is no longer a subscriber; skipped", subscriber)
            return True
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.network_timeout
        ae.add_requested_context(InstanceAvailabilityNotification)
        assoc = ae.associate(address.host, address.port, ae_title=address.ae_title)
        if not assoc.is_established:
            log.warning("ian: cannot associate with %s at %s:%d; retried later", address.ae_title, address.host,
                        address.port)
            return False
        try:
            status, _ = assoc.send_n_create(ds, InstanceAvailabilityNotification, generate_uid())
        finally:
            assoc.release()
        code = int(status.Status) if "Status" in status else None
        if code in _ACCEPTED:
            log.info("ian: %s notified of study %s", address.ae_title, ds.StudyInstanceUID)
            return True
        log.warning("ian: %s refused the notification (status %s); retried later", address.ae_title, code)
        return False
