"""Modality Performed Procedure Step (PS3.4 Annex F.7): durable instances, patient delivery.

A modality N-CREATEs an MPPS instance ("IN PROGRESS") when the exam starts
and N-SETs it to "COMPLETED" or "DISCONTINUED" when it ends. The EMR moves
its order along with these; a lost status change would leave an order
"scheduled" forever, so:

* every instance is a small JSON file under ``<spool>/mpps/instances/``,
  written to a temp file, fsynced and renamed before the modality gets its
  success status — a restart keeps it and a later N-SET still finds it;
* every status change is also queued as a JSON file in ``<spool>/mpps/outbox/``
  (same durability) and handed to the injected ``mpps(event)`` callable by a
  background thread. A failing callable is retried with capped exponential
  backoff, per instance in order (a step's "COMPLETED" never overtakes its
  "IN PROGRESS"); one instance failing does not hold back the others.

Without a callable the gateway still accepts MPPS and keeps the instances;
the status changes are only logged.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from .backoff import Backoff
from .durable import DurableQueue, write_json
from .exceptions import (
    DuplicateMpps,
    MppsFinal,
    MppsInvalidValue,
    MppsMissingAttribute,
    NoSuchMpps,
)

__all__ = ["MppsProvider", "MppsStore", "EVENT_KEYS", "IN_PROGRESS", "COMPLETED", "DISCONTINUED"]

log = logging.getLogger(__name__)

MppsProvider = Callable[[dict[str, Any]], object]

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
_FINAL = (COMPLETED, DISCONTINUED)
EVENT_KEYS = ("sop_instance_uid", "status", "accession_numbers", "study_instance_uids", "modality",
              "station_ae", "start", "end", "performing_physician")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _datetime(date: Any, tm: Any) -> str:
    """DICOM DA + TM → 'YYYY-MM-DDTHH:MM:SS' (local time, as the modality sent it); '' if absent/bad."""
    d, t = _text(date), _text(tm).split(".")[0]
    if not re.fullmatch(r"\d{8}", d):
        return ""
    t = t if re.fullmatch(r"\d{2}(\d{2}(\d{2})?)?", t) else ""
    t = (t + "000000")[:6]
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _fields(ds: Dataset, into: dict[str, Any]) -> None:
    """Copy the attributes the EMR cares about from an N-CREATE/N-SET data set, where present."""
    if "ScheduledStepAttributesSequence" in ds:
        items = ds.ScheduledStepAttributesSequence or []
        into["accession_numbers"] = _unique(_text(i.get("AccessionNumber")) for i in items)
        into["study_instance_uids"] = _unique(_text(i.get("StudyInstanceUID")) for i in items)
    if "Modality" in ds:
        into["modality"] = _text(ds.Modality)
    if _text(ds.get("PerformedStationAETitle")):
        into["station_ae"] = _text(ds.PerformedStationAETitle)
    if "PerformedProcedureStepStartDate" in ds:
        into["start"] = _datetime(ds.PerformedProcedureStepStartDate, ds.get("PerformedProcedureStepStartTime"))
    if "PerformedProcedureStepEndDate" in ds:
        into["end"] = _datetime(ds.PerformedProcedureStepEndDate, ds.get("PerformedProcedureStepEndTime"))
    physicians = [_text(ds.get("PerformingPhysicianName"))]
    for series in ds.get("PerformedSeriesSequence") or []:
        physicians.append(_text(series.get("PerformingPhysicianName")))
    physician = next((p for p in physicians if p), "")
    if physician:
        into["performing_physician"] = physician


class MppsStore(DurableQueue):
    """The gateway's MPPS instances and the queue of status changes for the EMR
    (``pending``: changes the EMR has not accepted yet)."""

    thread_name = "mpps-delivery"

    def __init__(
        self,
        root: Path,
        provider: MppsProvider | None = None,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        keep_final: float = 30 * 86400.0,
    ) -> None:
        super().__init__(Path(root) / "outbox")  # the status changes for the EMR
        self.root = Path(root)
        self.keep_final = keep_final
        self._pruned_at = 0.0
        self.instances_dir = self.root / "instances"
        self.provider = provider
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._instances: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._backoff = Backoff(retry_initial, retry_max)  # per MPPS instance

    # -- lifecycle ------------------------------------------------------------
    def open(self) -> None:
        """Load the kept instances and start delivering the queued status changes."""
        for d in (self.instances_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        loaded: dict[str, dict[str, Any]] = {}
        for path in self.instances_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                loaded[data["sop_instance_uid"]] = data
            except (OSError, ValueError, KeyError) as exc:
                log.error("mpps: cannot read kept instance %s: %s", path, exc)
        with self._lock:
            self._instances = loaded
        self.prune()
        pending = self.pending
        log.info("mpps: %d instance(s) kept, %d status change(s) queued", len(loaded), pending)
        if self.provider is None:
            return
        self._start_worker()

    def prune(self, now: float | None = None) -> int:
        """Forget steps that ended more than ``keep_final`` seconds ago; returns how many.

        A finished step can no longer change (N-SET is refused either way),
        and without pruning the folder would grow by every exam ever done.
        """
        cutoff = (time.time() if now is None else now) - self.keep_final
        with self._lock:
            old = [uid for uid, data in self._instances.items()
                   if data.get("status") in _FINAL and float(data.get("updated", 0)) < cutoff]
            for uid in old:
                (self.instances_dir / f"{uid}.json").unlink(missing_ok=True)
                del self._instances[uid]
        if old:
            log.info("mpps: forgot %d step(s) finished before the last %.0f days", len(old), self.keep_final / 86400)
        self._pruned_at = time.monotonic()
        return len(old)

    def get(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            data = self._instances.get(uid)
            return dict(data) if data is not None else None

    # -- N-CREATE / N-SET -----------------------------------------------------
    def create(self, uid: str, attributes: Dataset, calling_aet: str = "") -> dict[str, Any]:
        """Validate and keep a new step (PS3.4 F.7.2.1); returns its event."""
        if time.monotonic() - self._pruned_at > 86400:
            self.prune()  # once a day, for a gateway that runs for months
        uid = _text(uid)
        if not uid or len(uid) > 64 or not _UID.fullmatch(uid):
            raise MppsMissingAttribute("Affected SOP Instance UID missing or invalid")
        status = _text(attributes.get("PerformedProcedureStepStatus"))
        if not status:
            raise MppsMissingAttribute("PerformedProcedureStepStatus missing")
        if status != IN_PROGRESS:
            raise MppsInvalidValue(f"N-CREATE status must be IN PROGRESS, not {status[:20]}")
        if not attributes.get("ScheduledStepAttributesSequence"):
            raise MppsMissingAttribute("ScheduledStepAttributesSequence missing")
        data: dict[str, Any] = {key: "" for key in EVENT_KEYS}
        data.update(sop_instance_uid=uid, status=status, accession_numbers=[], study_instance_uids=[],
                    station_ae=calling_aet)
        _fields(attributes, data)
        if not data["accession_numbers"] and not data["study_instance_uids"]:
            raise MppsMissingAttribute("no AccessionNumber or StudyInstanceUID in scheduled step")
        with self._lock:
            if uid in self._instances:
                raise DuplicateMpps(f"MPPS {uid} already exists")
            self._keep(data, announce=True)
        return self._event(data)

    def update(self, uid: str, modifications: Dataset) -> dict[str, Any]:
        """Validate and apply an N-SET (PS3.4 F.7.2.2); returns the step's event."""
        uid = _text(uid)
        status = _text(modifications.get("PerformedProcedureStepStatus"))
        if "PerformedProcedureStepStatus" in modifications and status not in (IN_PROGRESS, *_FINAL):
            raise MppsInvalidValue(f"invalid PerformedProcedureStepStatus {status[:20]}")
        if "ScheduledStepAttributesSequence" in modifications:
            # Not modifiable by N-SET (PS3.4 Table F.7.2-1): the order it belongs to is fixed.
            raise MppsInvalidValue("ScheduledStepAttributesSequence may not be changed")
        with self._lock:
            current = self._instances.get(uid)
            if current is None:
                raise NoSuchMpps(f"no MPPS instance {uid}")
            if current["status"] in _FINAL:
                raise MppsFinal(f"MPPS already {current['status']}; no longer updatable")
            data = dict(current)
            _fields(modifications, data)
            changed = bool(status) and status != current["status"]
            if changed:
                data["status"] = status
            self._keep(data, announce=changed)
        return self._event(data)

    # -- internals --------------------------------------------------------------
    @staticmethod
    def _event(data: dict[str, Any]) -> dict[str, Any]:
        return {key: data.get(key, "") for key in EVENT_KEYS}

    def _keep(self, data: dict[str, Any], announce: bool) -> None:
        """Persist the instance (and queue its event) before the modality hears success. Lock held.

        The event is queued first: if keeping the instance then fails, the
        modality hears a failure and repeats the request, and the EMR at worst
        gets the same change twice (harmless). The other way round could lose it.
        """
        data["updated"] = time.time()
        event = self._event(data)
        if announce and self.provider is not None:
            name = f"{time.time_ns():020d}-{next(self._counter):08d}.json"
            write_json(self.queue_dir / name, event, "MPPS state")
            self._wake.set()
        elif announce:
            log.info("mpps: %s %s (accession %s); no EMR to tell", event["sop_instance_uid"], event["status"],
                     ",".join(event["accession_numbers"]) or "-")
        write_json(self.instances_dir / f"{data['sop_instance_uid']}.json", data, "MPPS state")
        self._instances[data["sop_instance_uid"]] = data

    def _work_due(self) -> float | None:
        """One pass over the outbox in order; returns how long to sleep (None: until woken)."""
        provider = self.provider
        assert provider is not None
        blocked: set[str] = set()
        next_due: float | None = None
        for path in sorted(self.queue_dir.glob("*.json")):
            if self._stop.is_set():
                return 0
            try:
                event = json.loads(path.read_text(encoding="utf-8"))
                uid = event["sop_instance_uid"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("mpps: unreadable queued event %s (%s); set aside", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            if uid in blocked:
                continue
            wait = self._backoff.wait_left(uid)
            if wait > 0:
                blocked.add(uid)
                next_due = min(next_due or wait, wait)
                continue
            try:
                provider(event)
            except Exception as exc:  # noqa: BLE001 - any failure means "try again later"
                blocked.add(uid)
                delay = self._backoff.failed(uid)
                next_due = min(next_due or delay, delay)
                log.warning("mpps: EMR did not take %s %s (retry in %.1f s): %r", uid, event.get("status"), delay, exc)
                continue
            self._backoff.forget(uid)
            path.unlink(missing_ok=True)
            log.info("mpps: EMR took %s %s", uid, event.get("status"))
        return next_due
