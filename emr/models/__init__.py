"""SQLAlchemy models, one module per aggregate."""

from .access import BreakGlassAccess
from .audit import AuditAnchor, AuditEntry, AuditHead
from .base import Base, utcnow
from .documents import FORM_TYPES, RETENTION_YEARS, Document, DocumentVersion
from .encounters import BENEFIT_LEVELS, ENCOUNTER_KINDS, Encounter, EncounterDiagnosis, Icd10Code
from .imaging import ShareLink, StudyMeasurements
from .network import NetworkReceived, NetworkSite, NetworkTransfer
from .orders import MODALITIES, ORDER_STATUSES, URGENCIES, ImagingOrder, LinkerState, Study
from .outbox import OUTBOX_STATUSES, OutboxAttempt, OutboxMessage
from .patients import Counter, Patient
from .prices import ServicePrice
from .sessions import UserSession
from .users import ROLES, ApiToken, Department, User

__all__ = [
    "ApiToken",
    "BENEFIT_LEVELS",
    "AuditAnchor",
    "AuditEntry",
    "AuditHead",
    "Base",
    "BreakGlassAccess",
    "Counter",
    "Department",
    "Document",
    "DocumentVersion",
    "ENCOUNTER_KINDS",
    "Encounter",
    "EncounterDiagnosis",
    "FORM_TYPES",
    "Icd10Code",
    "ImagingOrder",
    "LinkerState",
    "MODALITIES",
    "ORDER_STATUSES",
    "NetworkReceived",
    "NetworkSite",
    "NetworkTransfer",
    "OUTBOX_STATUSES",
    "OutboxAttempt",
    "OutboxMessage",
    "Patient",
    "RETENTION_YEARS",
    "ROLES",
    "ServicePrice",
    "ShareLink",
    "Study",
    "StudyMeasurements",
    "URGENCIES",
    "User",
    "UserSession",
    "utcnow",
]
