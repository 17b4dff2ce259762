"""The authorisation table: which role may do which action. The only place this is decided.

Views and API routes name an action (``@requires("patient.read")``); the
authorisation-matrix test walks every route against this table.
"""

from __future__ import annotations

from emr.models import ROLES

__all__ = ["PERMISSIONS", "allowed", "ROLES"]

_CLINICAL = frozenset({"physician", "radiologist", "technician", "nurse", "records_clerk"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "patient.read": _CLINICAL,
    "patient.write": frozenset({"physician", "nurse", "records_clerk"}),
    "patient.merge": frozenset({"records_clerk"}),
    "encounter.read": frozenset({"physician", "radiologist", "nurse", "records_clerk"}),
    "encounter.write": frozenset({"physician", "nurse", "records_clerk"}),
    "document.read": frozenset({"physician", "radiologist", "nurse", "records_clerk"}),
    "document.write": frozenset({"physician", "radiologist"}),
    "document.cancel": frozenset({"physician", "radiologist"}),
    # Signing (issue 5): the role may open the signing form; the workflow then checks whose turn it is.
    "document.sign": frozenset({"physician", "radiologist"}),
    "order.read": _CLINICAL,
    "order.create": frozenset({"physician"}),
    "order.cancel": frozenset({"physician"}),
    "study.read": _CLINICAL,
    "study.reconcile": frozenset({"records_clerk"}),
    "audit.read": frozenset({"admin"}),
    "user.manage": frozenset({"admin"}),
    "catalog.manage": frozenset({"admin"}),
    # Exports (issue 7): the signed insurance envelope; the HoSoBenhAn record files.
    "export.insurance": frozenset({"records_clerk"}),
    "export.record": frozenset({"physician", "records_clerk"}),
    # Reading room (issue 6): images through the DICOMweb proxy, the reading
    # worklist and report panel, film-less share links (QR slips).
    "image.view": frozenset({"physician", "radiologist", "technician"}),
    "reading.worklist": frozenset({"physician", "radiologist"}),
    "share.manage": frozenset({"physician", "radiologist", "technician", "records_clerk"}),
    # Actions every logged-in user has (home page, logout).
    "self": frozenset(ROLES),
}


def allowed(role: str | None, action: str) -> bool:
    return role is not None and role in PERMISSIONS[action]
