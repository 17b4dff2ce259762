"""SQLAlchemy models, one module per aggregate."""

from .access import BreakGlassAccess
from .audit import AuditAnchor, AuditEntry, AuditHead
from .base import Base, utcnow
from .catalogues import CatalogueEntry, CatalogueVersion
from .documents import FORM_TYPES, RETENTION_YEARS, Document, DocumentVersion
from .encounters import BENEFIT_LEVELS, ENCOUNTER_KINDS, Encounter, EncounterDiagnosis, Icd10Code
from .hl7 import HL7_DIRECTIONS, HL7_STATUSES, Hl7Message, Hl7OrderLink, Hl7PatientLink
from .identity import CHECK_STATUSES, DECISIONS, IdentityCheck
from .imaging import ShareLink, StudyMeasurements
from .network import NetworkReceived, NetworkSite, NetworkTransfer
from .orders import MODALITIES, OPEN_ORDER_SQL, ORDER_STATUSES, URGENCIES, ImagingOrder, LinkerState, Study
from .outbox import OUTBOX_STATUSES, OutboxAttempt, OutboxMessage
from .patients import Counter, Patient, PatientNameKey
from .prices import ServicePrice
from .sessions import UserSession
from .users import ROLES, SUBSTITUTE_CAPACITIES, ApiToken, Department, HeadSubstitute, User

__all__ = [
    "ApiToken",
    "BENEFIT_LEVELS",
    "AuditAnchor",
    "AuditEntry",
    "AuditHead",
    "Base",
    "CatalogueEntry",
    "CatalogueVersion",
    "BreakGlassAccess",
    "CHECK_STATUSES",
    "Counter",
    "DECISIONS",
    "Department",
    "HeadSubstitute",
    "SUBSTITUTE_CAPACITIES",
    "Document",
    "DocumentVersion",
    "ENCOUNTER_KINDS",
    "Encounter",
    "EncounterDiagnosis",
    "FORM_TYPES",
    "HL7_DIRECTIONS",
    "HL7_STATUSES",
    "Hl7Message",
    "Hl7OrderLink",
    "Hl7PatientLink",
    "Icd10Code",
    "IdentityCheck",
    "ImagingOrder",
    "OPEN_ORDER_SQL",
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
    "PatientNameKey",
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
