"""The authorisation table: which role may do which action. The only place this is decided.

Views and API routes name an action (``@requires("patient.read")``); the
authorisation-matrix test walks every route against this table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, union

from emr.core.clock import local_day_bounds, local_today
from emr.models import ROLES, BreakGlassAccess, Document, Encounter, ImagingOrder, Study, utcnow

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, CompoundSelect, Select
    from sqlalchemy.orm import Session

__all__ = [
    "CARE_SCOPED_ROLES",
    "PERMISSIONS",
    "ROLES",
    "allowed",
    "break_glass_department",
    "headed_department",
    "care_basis",
    "may_close_visit",
    "may_review_break_glass",
    "own_visits",
    "patients_in_care",
    "patients_in_care_select",
]

_CLINICAL = frozenset({"physician", "radiologist", "technician", "nurse", "records_clerk"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "patient.read": _CLINICAL,
    "patient.write": frozenset({"physician", "nurse", "records_clerk"}),
    "patient.merge": frozenset({"records_clerk"}),
    "encounter.read": frozenset({"physician", "radiologist", "nurse", "records_clerk"}),
    "encounter.write": frozenset({"physician", "nurse", "records_clerk"}),
    # Ending a visit (discharge diagnosis, its ICD-10 main code, the time of discharge) is the treating
    # physician's decision: which visits a physician may close is :func:`may_close_visit`.
    "encounter.close": frozenset({"physician"}),
    "document.read": frozenset({"physician", "radiologist", "nurse", "records_clerk"}),
    "document.write": frozenset({"physician", "radiologist"}),
    "document.cancel": frozenset({"physician", "radiologist"}),
    # Who is offered to write an exam's radiology report (the chart's "Viết kết quả"): the radiologists who
    # read the images. One report per exam is enforced by emr.documents.service whoever writes.
    "report.write": frozenset({"radiologist"}),
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
    # Issue 15 §4: browsing the Ministry catalogues (no patient data): whoever types codes (diagnoses,
    # addresses, services) looks them up there; the clerk fixes claim codes with it.
    "catalog.read": frozenset({"admin", "physician", "nurse", "records_clerk"}),
    # Exports (issue 7): the signed insurance envelope; the HoSoBenhAn record files.
    "export.insurance": frozenset({"records_clerk"}),
    "export.record": frozenset({"physician", "records_clerk"}),
    # Reading room (issue 6): images through the DICOMweb proxy, the reading
    # worklist and report panel, film-less share links (QR slips).
    "image.view": frozenset({"physician", "radiologist", "technician"}),
    # The list of studies (care-scoped): physicians and radiologists read them; technicians check
    # and fix the images they acquired there (each line opens /reading/studies/N, image.view), and
    # see no report content (document.read).
    "reading.worklist": frozenset({"physician", "radiologist", "technician"}),
    # The technician's home: the imaging exams scheduled today, to perform (waiting, in progress, done).
    "order.worklist": frozenset({"technician"}),
    # Listing and revoking a study's slips: the roles that print them, and the records clerk at the
    # desk (a patient who lost a slip). Not technicians: a slip's link is the patient's access to
    # their signed report, which a technician may neither read nor print, so neither may they end it.
    "share.manage": frozenset({"physician", "radiologist", "records_clerk"}),
    # Issue 10: printing a slip hands out images AND the signed report, so only roles holding
    # both may create one (checked below); share.manage keeps listing and revoking.
    "share.create": frozenset({"physician", "radiologist"}),
    # Issue 10: care scope. Opening a patient outside one's care (break the glass), and its review.
    "patient.break_glass": frozenset({"physician", "radiologist", "technician"}),
    "break_glass.review": frozenset({"admin"}),
    # The head of a department (a physician or radiologist with User.is_department_head) reviews the
    # emergency accesses of the users of their own department, not their own: see break_glass_department.
    "break_glass.review_department": frozenset({"physician", "radiologist"}),
    # Issue 15: the outbox operator page (what was sent to the EHR, other sites, the HIS; resend).
    "outbox.manage": frozenset({"admin"}),
    # Issue 15 §5: the HL7 message log with the HIS (message contents are patient data) and replay.
    "hl7.manage": frozenset({"admin"}),
    # Issue 16: the operations page (volumes, turnaround, storage, gateway and outbox health; no patients).
    "ops.read": frozenset({"admin"}),
    # Issue 15 §3: the identity reconciliation queue (national population database mismatches).
    # Who may take which decision, and that escalated items are closed by an admin, is in
    # emr.identity.reconcile.DECISIONS_BY_ROLE.
    "identity.reconcile": frozenset({"records_clerk", "admin"}),
    # Provincial network (issue 15): the sites registry; sending a study or a tele-radiology
    # request to another facility; the list of what other facilities sent (care-scoped).
    "network.manage": frozenset({"admin"}),
    "network.send": frozenset({"physician", "radiologist"}),
    "network.received": _CLINICAL,
    # Actions every logged-in user has (home page, logout).
    "self": frozenset(ROLES),
}


def allowed(role: str | None, action: str) -> bool:
    return role is not None and role in PERMISSIONS[action]


def headed_department(user: Any) -> int | None:
    """The department ``user`` heads (trưởng khoa): an active physician or radiologist with the
    department-head flag and a department; None for anyone else."""
    if user is None or not getattr(user, "active", True) or not allowed(user.role, "break_glass.review_department"):
        return None
    if not getattr(user, "is_department_head", False) or user.department_id is None:
        return None
    return int(user.department_id)


def break_glass_department(user: Any) -> int | None:
    """The department whose users' emergency accesses ``user`` reviews as its head, or None.

    Admins review every access (``break_glass.review``); a head of department (trưởng khoa) those of
    the users now in their department, never their own (emr.access.break_glass.ReviewScope)."""
    return headed_department(user)


def may_review_break_glass(user: Any) -> bool:
    """May ``user`` open the review of emergency accesses (all of them, or their department's)?"""
    return user is not None and (allowed(user.role, "break_glass.review") or break_glass_department(user) is not None)


# A list shows only what its lines open: the studies of the reading list open on the image page, and
# the exams of the day are orders (each line opens the chart and, with images, the image page).
assert PERMISSIONS["reading.worklist"] <= PERMISSIONS["image.view"]
assert PERMISSIONS["order.worklist"] <= (
    PERMISSIONS["order.read"] & PERMISSIONS["patient.read"] & PERMISSIONS["image.view"]
) & PERMISSIONS["reading.worklist"]
assert PERMISSIONS["report.write"] <= PERMISSIONS["document.write"]
# A link grants what it shows: nobody may hand out more than they may see themselves.
assert PERMISSIONS["share.create"] <= PERMISSIONS["image.view"] & PERMISSIONS["document.read"]
# Whoever prints a slip may revoke it; nobody ends the patient's access to a report they may not read.
assert PERMISSIONS["share.create"] <= PERMISSIONS["share.manage"] <= PERMISSIONS["document.read"]


# -- Care scope (issue 10) ------------------------------------------------------------
#
# Roles that treat patients see only the patients in their care; the rule is
# decided here and nowhere else. A physician, radiologist or technician may
# open a patient (chart, documents, orders, studies, images) when one of these
# holds, checked at the moment of the request:
#
# * encounter — the patient has an encounter (not cancelled) that is open or
#   was closed less than CARE_RECENT_DAYS ago, and the user is its attending
#   physician or works in its department;
# * reading — radiologists: the patient has a linked study whose report is not
#   signed yet (it is on the reading worklist), or a study that arrived less
#   than CARE_RECENT_DAYS ago, or an imaging order placed less than
#   CARE_RECENT_DAYS ago and not reported yet (exams to protocol and read), or
#   a radiology report the radiologist wrote less than CARE_RECENT_DAYS ago;
# * scheduled — technicians: the patient has an imaging order (not cancelled)
#   scheduled from yesterday to tomorrow (the facility's dates, emr.core.clock), or one the technician
#   performed less than CARE_RECENT_DAYS ago;
# * break_glass — the user opened the patient with a stated reason less than
#   the configured hours ago (see emr/access/break_glass.py).
#
# Nurses, records clerks and admins are not scoped by this rule (desk and
# records work is hospital-wide; admins see no clinical data).

CARE_SCOPED_ROLES = frozenset({"physician", "radiologist", "technician"})
CARE_RECENT_DAYS = 30


def own_visits(user: Any) -> ColumnElement[bool]:
    """The visits ``user`` attends or that are in their department: care by encounter (below) and
    the list of patients under treatment (emr.patients.encounters.current_visits)."""
    mine: ColumnElement[bool] = Encounter.attending_id == user.id
    if user.department_id is not None:
        mine = or_(mine, Encounter.department_id == user.department_id)
    return mine


def may_close_visit(user: Any, enc: Any) -> bool:
    """May ``user`` end the visit ``enc`` (discharge diagnosis and time)? A physician who attends it or
    works in its department (the head of that department among them): the people who have the patient in
    their care by the visit itself (:func:`own_visits`). Break-the-glass access opens the record to read,
    never to discharge; nurses and clerks record, they do not decide the discharge diagnosis."""
    if user is None or not getattr(user, "active", True) or not allowed(user.role, "encounter.close"):
        return False
    return enc.attending_id == user.id or (user.department_id is not None and user.department_id == enc.department_id)


def _care_selects(user: Any, now: datetime) -> list[tuple[str, Select[Any]]]:
    """(basis, SELECT patient_id ...) for each way ``user`` may be caring for a patient."""
    recent = now - timedelta(days=CARE_RECENT_DAYS)
    out: list[tuple[str, Select[Any]]] = []
    out.append((
        "encounter",
        select(Encounter.patient_id).where(
            own_visits(user),
            Encounter.status != "cancelled",
            or_(Encounter.status == "open", Encounter.closed_at >= recent, Encounter.discharged_at >= recent),
        ),
    ))
    if user.role == "radiologist":
        signed = (
            select(Document.id)
            .where(
                Document.order_id == Study.order_id,
                Document.form_type == "radiology_report",
                Document.status == "signed",
            )
            .exists()
        )
        # Two selects, not one with ``or_(~signed, recent)``: NOT EXISTS inside an OR is a subplan PostgreSQL
        # costs per study (an estimate of ~850k for 100k studies, which JIT-compiled for 0.4-3.5 s); alone it
        # is an anti-join, and the recent studies an index range (ix_studies_first_seen_at).
        linked = (
            select(Study.patient_id)
            .join(ImagingOrder, ImagingOrder.id == Study.order_id)
            .where(Study.state == "linked", Study.patient_id.is_not(None), ImagingOrder.status != "cancelled")
        )
        out.append(("reading", linked.where(~signed)))
        out.append(("reading", linked.where(Study.first_seen_at >= recent)))
        out.append((
            "reading",
            select(ImagingOrder.patient_id).where(
                ImagingOrder.status.not_in(("reported", "cancelled")),
                ImagingOrder.ordered_at >= recent,
                ~select(Document.id)
                .where(
                    Document.order_id == ImagingOrder.id,
                    Document.form_type == "radiology_report",
                    Document.status == "signed",
                )
                .exists(),
            ),
        ))
        out.append((
            "reading",
            select(Document.patient_id).where(
                Document.form_type == "radiology_report",
                Document.created_by == user.id,
                Document.created_at >= recent,
            ),
        ))
    if user.role == "technician":
        today = local_today(now)  # the facility's day (emr.core.clock), not the server's
        window_start = local_day_bounds(today - timedelta(days=1))[0]
        window_end = local_day_bounds(today + timedelta(days=1))[1]
        out.append((
            "scheduled",
            select(ImagingOrder.patient_id).where(
                ImagingOrder.status != "cancelled",
                or_(
                    and_(
                        ImagingOrder.scheduled_at >= window_start,
                        ImagingOrder.scheduled_at < window_end,
                    ),
                    and_(ImagingOrder.performed_by == user.id, ImagingOrder.ordered_at >= recent),
                ),
            ),
        ))
    out.append((
        "break_glass",
        select(BreakGlassAccess.patient_id).where(
            BreakGlassAccess.user_id == user.id, BreakGlassAccess.expires_at > now
        ),
    ))
    return out


def care_basis(session: Session, user: Any, patient_id: int, now: datetime | None = None) -> str | None:
    """Why ``user`` may open ``patient_id`` ("role" when their role is not scoped), or None: outside their care."""
    if user is None:
        return None
    if user.role not in CARE_SCOPED_ROLES:
        return "role"
    for basis, query in _care_selects(user, now or utcnow()):
        if session.execute(query.where(query.selected_columns[0] == patient_id).limit(1)).first() is not None:
            return basis
    return None


def patients_in_care(session: Session, user: Any, now: datetime | None = None) -> set[int] | None:
    """Ids of the patients ``user`` may open now, or None when their role is not scoped (all)."""
    if user is None or user.role not in CARE_SCOPED_ROLES:
        return None
    found: set[int] = set()
    for _basis, query in _care_selects(user, now or utcnow()):
        found.update(pid for (pid,) in session.execute(query.distinct()) if pid is not None)
    return found


def patients_in_care_select(user: Any, now: datetime | None = None) -> CompoundSelect | None:
    """The same patients as :func:`patients_in_care`, as one SQL ``SELECT patient_id ... UNION ...`` to put in a
    list's query (``Study.patient_id.in_(...)``), so that a LIMIT counts only lines the user may open; None
    when the role is not scoped. Each part is uncorrelated: it names the tables the outer list uses too."""
    if user is None or user.role not in CARE_SCOPED_ROLES:
        return None
    return union(*(query.correlate(None) for _basis, query in _care_selects(user, now or utcnow())))
