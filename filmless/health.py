"""``filmless check``: is each part of the stack answering, and is it healthy?

Each check returns (name, healthy, one-line detail) and never raises, so one
broken part does not hide the state of the others.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable

from .settings import Settings

__all__ = ["run_checks", "spool_health", "STUCK_AFTER_S"]

Check = tuple[str, bool, str]


def check_storage(settings: Settings) -> Check:
    from storage import StorageError, open_store

    try:
        info = open_store(settings.storage).system()
    except StorageError as exc:
        return "storage", False, str(exc)
    missing = {"dicom-web", "gdcm"} - set(info.plugins)
    detail = f"Orthanc {info.version} at {settings.storage.url}: {info.studies} studies, {info.instances} instances"
    if missing:
        return "storage", False, detail + f"; plugins not loaded: {', '.join(sorted(missing))}"
    return "storage", True, detail


def check_gateway(settings: Settings) -> Check:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    g = settings.gateway
    host = "127.0.0.1" if g.host in ("0.0.0.0", "::", "") else g.host
    ae = AE(ae_title="FILMLESS-CHECK")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate(host, g.port, ae_title=g.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "does not answer"
        return "gateway", False, f"{g.ae_title}@{host}:{g.port} {why}"
    status = assoc.send_c_echo()
    assoc.release()
    if not status or status.Status != 0:
        return "gateway", False, f"C-ECHO to {g.ae_title}@{host}:{g.port} failed"
    healthy, detail = spool_health(settings)
    return "gateway", healthy, f"C-ECHO {g.ae_title}@{host}:{g.port} ok; " + detail


# A queue whose oldest item waits longer than this is reported unhealthy.
STUCK_AFTER_S = 3600.0


def spool_health(settings: Settings) -> tuple[bool, str]:
    """The gateway's queues: counts, and whether any of them has stopped draining."""
    try:
        from pacs_gateway import spool_status
    except ImportError:
        return True, "spool status unknown"
    status = spool_status(settings.gateway)
    detail = (f"spool backlog {status.backlog}, quarantined {status.quarantined}, "
              f"MPPS changes waiting for the EMR {status.mpps_pending}, "
              f"storage commitment reports waiting {status.commitments_pending}")
    stuck = [
        f"{what} waiting for {age / 3600:.1f} h ({hint})"
        for what, age, hint in (
            ("images not yet in Orthanc", status.oldest_backlog_s, "is Orthanc up?"),
            ("MPPS changes", status.oldest_mpps_s, "is the EMR database reachable?"),
            ("storage commitment reports", status.oldest_commitment_s,
             "is the modality listening at its FILMLESS_GATEWAY_COMMITMENT_PEERS address?"),
        )
        if age > STUCK_AFTER_S
    ]
    if stuck:
        return False, detail + "; STUCK: " + "; ".join(stuck)
    return True, detail


def check_emr(settings: Settings) -> Check:
    e = settings.emr
    host = "127.0.0.1" if e.host in ("0.0.0.0", "::", "") else e.host
    url = f"http://{host}:{e.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local URL
            body = response.read(200).decode("utf-8", "replace")
            return "emr", response.status == 200, f"{url}: {body.strip()}"
    except (urllib.error.URLError, OSError) as exc:
        return "emr", False, f"{url}: {exc}"


def check_disk(settings: Settings) -> Check:
    path = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    usage = shutil.disk_usage(path)
    free_mb = usage.free // (1024 * 1024)
    need_mb = settings.gateway.min_free_bytes // (1024 * 1024)
    healthy = usage.free > settings.gateway.min_free_bytes
    return "disk", healthy, f"{free_mb} MB free under {path} (gateway refuses new images below {need_mb} MB)"


CHECKS: tuple[Callable[[Settings], Check], ...] = (check_storage, check_gateway, check_emr, check_disk)


def run_checks(settings: Settings) -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            results.append(check(settings))
        except Exception as exc:  # noqa: BLE001 - a check must not hide the others
            results.append((check.__name__.removeprefix("check_"), False, f"check failed: {exc}"))
    return results
