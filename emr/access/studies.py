"""Who may open which study in the viewer, and the audit row for each opening.

This is the per-study half of the access decision (the per-action half is
:mod:`emr.access.permissions`). A logged-in user may open a study when the
role may view images, the study is linked to a patient in the EMR and that
patient is in the user's care (issue 10, :func:`emr.access.permissions.care_basis`);
report objects stored in the study (the signed PDF) only when the role may
read documents. A share token opens exactly the study of its link (and its
report) while the link is live.

The viewer never sees these rules: the wiring (``filmless.wiring``) hands it
the callables of :class:`StudyAccess`, translating :class:`StudyAccessDenied`
into the viewer's own refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request

from emr import db
from emr.access.auth import current_actor, deny
from emr.access.care import OutOfCareScope, ensure_patient_access
from emr.access.permissions import allowed
from emr.core.exceptions import EmrError
from emr.reading import service as reading
from emr.sharing import service as sharing
from emr.sharing.tokens import link_id_from_token

__all__ = ["ARRIVING_SECONDS", "StudyAccess", "StudyAccessDenied", "audit_report_read", "audit_study",
           "authorize_study", "principal", "reports_allowed", "study_access", "study_arriving"]

ARRIVING_SECONDS = 90.0  # Orthanc's StableAge (60 s) plus the linker's polling


class StudyAccessDenied(Exception):
    """Why a study is refused: ``login`` (no session), ``forbidden`` or ``expired`` (a dead share link)."""

    REASONS = ("login", "forbidden", "expired")

    def __init__(self, reason: str = "forbidden") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown access-denied reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


def _share_link(token: str, study_uid: str) -> Any:
    link_id = link_id_from_token(token)
    if link_id is None:
        raise StudyAccessDenied("forbidden")
    try:
        link = sharing.live_link(db.session(), link_id)
    except sharing.ShareDenied as exc:
        raise StudyAccessDenied("expired" if exc.reason == "expired" else "forbidden") from exc
    except EmrError as exc:
        raise StudyAccessDenied("forbidden") from exc
    if link.study_instance_uid != study_uid:
        raise StudyAccessDenied("forbidden")
    return link


def authorize_study(study_uid: str, token: str | None) -> bool:
    """True when this request may open the study; :class:`StudyAccessDenied` says why not."""
    if token:
        _share_link(token, study_uid)
        return True
    user = g.get("user")
    if user is None:
        raise StudyAccessDenied("login")
    if not allowed(user.role, "image.view"):
        deny("image.view")
        raise StudyAccessDenied("forbidden")
    study = reading.find_linked_study(db.session(), study_uid)
    if study is None:
        raise StudyAccessDenied("forbidden")
    try:
        ensure_patient_access(db.session(), current_actor(), study.patient_id)  # issue 10: care scope
    except OutOfCareScope:
        raise StudyAccessDenied("forbidden") from None
    return True


def reports_allowed(study_uid: str, token: str | None) -> bool:
    """Report objects (the signed PDF in the study) for share links (they carry the report) and document readers."""
    if token:
        return True
    user = g.get("user")
    return user is not None and allowed(user.role, "document.read")


def audit_study(study_uid: str, token: str | None) -> None:
    """One audit row for opening the study (the viewer calls it once per window)."""
    s = db.session()
    study = reading.find_linked_study(s, study_uid)
    if study is None:  # authorised a moment ago: unlinked meanwhile
        raise StudyAccessDenied("forbidden")
    if token:
        link = _share_link(token, study_uid)
        reading.record_study_view(
            s, sharing.share_actor(link, request.remote_addr), study, via="share", share_link_id=link.id
        )
    else:
        reading.record_study_view(s, current_actor(), study, via="viewer")


def audit_report_read(study_uid: str, token: str | None) -> None:
    """A report object (the signed PDF in the study) retrieved over DICOMweb: one document.view row."""
    s = db.session()
    study = reading.find_linked_study(s, study_uid)
    if study is None or study.order_id is None:
        raise StudyAccessDenied("forbidden")
    doc = reading.latest_report(s, study.order_id)
    if doc is None:
        return
    if token:
        link = _share_link(token, study_uid)
        actor = sharing.share_actor(link, request.remote_addr)
    else:
        actor = current_actor()
    reading.record_report_view(s, actor, doc, doc.current_version, study, via="dicomweb")


def principal(token: str | None) -> str:
    """Who is asking, for the viewer's per-principal limits: a share link, a user or an address."""
    if token:
        return f"share:{link_id_from_token(token)}"
    user = g.get("user")
    return f"user:{user.id}" if user is not None else f"addr:{request.remote_addr}"


def study_arriving(study_uid: str) -> bool:
    """Is the study still arriving (so the viewer should wait rather than refuse)? Not once
    Orthanc calls it stable: a complete study shows no "still arriving" notice."""
    store = current_app.extensions.get("emr.store")
    is_stable = getattr(store, "study_is_stable", None)
    return reading.study_arriving(db.session(), study_uid, ARRIVING_SECONDS, is_stable=is_stable)


@dataclass(frozen=True)
class StudyAccess:
    """The callables an image viewer mounted into the EMR app needs (all run inside a request)."""

    authorize: Callable[[str, str | None], bool]
    audit: Callable[[str, str | None], None]
    principal: Callable[[str | None], str]
    arriving: Callable[[str], bool]
    # Issue 10: may the caller see report objects in the study; every report object read is audited.
    reports_allowed: Callable[[str, str | None], bool]
    audit_report: Callable[[str, str | None], None]


def study_access() -> StudyAccess:
    return StudyAccess(authorize_study, audit_study, principal, study_arriving, reports_allowed, audit_report_read)
