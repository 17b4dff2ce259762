"""FHIR R4 resources built from the EMR (the searches behind the live FHIR API are in :mod:`emr.fhir.search`).

Resources are plain dicts validated with ``fhir.resources`` before they
leave (:func:`validated`); the package's R4B models are used because its
releases that support pydantic 2 ship R4B and R5 but not R4 (4.0.1) — the
resources served here (Patient, Encounter, ServiceRequest, ImagingStudy,
DiagnosticReport, DocumentReference, Provenance, AuditEvent) have the same
R4 and R4B structure for every element written.

Profiles, extensions, code systems and identifier systems follow the HL7 Vietnam VN Core IG of the
Ministry of Health (github hl7vn/vn-core-ig, canonical ``http://fhir.ehealth.gov.vn/core``); every URL
emitted is in the one table of :mod:`emr.exports.vn_core` (the IG's, each with the IG file it comes from,
and the project's own under ``https://filmless.vn/fhir`` for what the IG does not define). Identifier
slices carry the type and use the IG fixes (CCCD ``sid/national_id`` NI, BHYT ``sid/insurance_number`` SB,
the hospital's patient code ``sid/patient-internal-id`` PI, MA_LK ``sid/VisitNumber`` VN). Systems emitted
before stay accepted in searches (:data:`SYSTEM_ALIASES`). Searches are in :mod:`emr.fhir.search`.

Encounter.diagnosis names each diagnosis of the visit with its role
(:func:`visit_diagnoses`; the Conditions are VNCoreConditionDiagnosis, ICD-10
``http://hl7.org/fhir/sid/icd-10``). What a person reads — CodeableConcept
texts, document titles — is Vietnamese (``vi.json``); codings keep their code
system's own display.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.clock import local_isoformat, local_today
from emr.core.states import OrderStatus
from emr.i18n import t

from ..catalogues.packaged import shipped_name
from ..models import (
    AuditEntry,
    Department,
    Document,
    DocumentVersion,
    Encounter,
    EncounterDiagnosis,
    Icd10Code,
    ImagingOrder,
    Patient,
    Study,
    User,
)
from ..models.signing import DocumentSignature
from ..patients.demographics import coded_text
from .artifacts import ArtifactSource
from .exceptions import ExportError
from .records import admission_diagnosis, latest_signed
from .vn_core import ID_TYPE, ID_USE, IG, LEGACY_SYSTEMS, OWN, V2_0203

__all__ = [
    "SYSTEMS",
    "SYSTEM_ALIASES",
    "VN_PATIENT_PROFILE",
    "VN_ENCOUNTER_PROFILE",
    "CONDITION_DIAGNOSIS_PROFILE",
    "DIAGNOSIS_ROLE",
    "EXT",
    "FhirError",
    "RESOURCE_TYPES",
    "SIGNER_CAPACITY",
    "VisitDiagnoses",
    "form_title",
    "validated",
    "visit_diagnoses",
]

SYSTEMS = {
    "cccd": IG["cccd"],  # căn cước công dân, 12 digits
    "bhyt": IG["bhyt"],  # legacy 15 characters, 10-digit BHXH number or 12-digit CCCD
    "bhxh": OWN["bhxh"],  # social-insurance number (10 digits)
    "patient": IG["patient"],  # MA_BN, the hospital's patient code
    "visit": IG["visit"],  # MA_LK
    "record": OWN["record"],  # MA_HSBA
    "accession": OWN["accession"],  # DICOM Accession Number
    "cchn": OWN["cchn"],  # practising-certificate number
    "facility": IG["facility"],  # MA_CSKCB
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "dicom_uid": "urn:dicom:uid",
    "procedure": OWN["procedure"],  # MA_DICH_VU
    "document": OWN["document"],  # document number
    "form_type": OWN["form_type"],  # the EMR's form types (FORM_TYPES)
}
# Systems emitted before, still accepted in searches.
SYSTEM_ALIASES = LEGACY_SYSTEMS
VN_PATIENT_PROFILE = IG["patient_profile"]
VN_ENCOUNTER_PROFILE = IG["encounter_profile"]
# The demographic extensions of VNCorePatient (slices patientRaceExtension, patientEthicExtension,
# patientOccupationExtenstion): each a CodeableConcept, bound (extensible) to the value sets vn-core-race,
# vn-core-ethic and vn-core-occupation. "Ethic" is the IG's name for religion (tôn giáo). Province and ward are
# the state and ward sub-extensions of VNCoreAddress's extension-administrative-address.
EXT = {
    "ethnicity": IG["ext_race"],
    "occupation": IG["ext_occupation"],
    "religion": IG["ext_ethic"],
    "address": IG["ext_address"],
}
_CS = {
    "ethnicity": IG["cs_race"],  # MA_DANTOC as stored: 01-54, 55, 99
    "religion": IG["cs_ethic"],  # 1-digit codes 1-4 (and a placeholder 5 "...")
}
# Our religion code (GSO QĐ 1019/QĐ-TCTK, 2 digits) → the IG's vn-core-ethic code and display, where the IG's
# concept is the same religion: 1-3 have the GSO list's names and definitions. 04 is left uncoded: the IG's
# concept 4 is displayed "Hồi giáo" but defined as Hồi giáo plus four Cao Đài branches (GSO 05), so it is not
# one religion; 5 "..." is a placeholder. Occupation is never coded: the IG's vn-core-occupation has no
# content (content = not-present, no version or decision named) and vn-core-occupation-4069 holds the
# 13 social groups of QĐ 4069/2011/QĐ-BYT, not MA_NGHE_NGHIEP (QĐ 34/2020/QĐ-TTg); no mapping is published.
# An uncoded value keeps its text ("name (code)", or "mã … (không có trong danh mục)").
_ETHIC = {"01": ("1", "Phật Giáo"), "02": ("2", "Công Giáo"), "03": ("3", "Phật giáo Hòa Hảo")}
_SEX = {"M": "male", "F": "female", "O": "other"}
_ENC_CLASS = {
    "outpatient": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
}
_ENC_STATUS = {"open": "in-progress", "closed": "finished", "cancelled": "cancelled"}
_ORDER_STATUS: dict[str, str] = {  # OrderStatus → ServiceRequest.status
    OrderStatus.SCHEDULED: "active",
    OrderStatus.IN_PROGRESS: "active",
    OrderStatus.COMPLETED: "active",  # performed, images/report still to come
    OrderStatus.DISCONTINUED: "active",
    OrderStatus.IMAGES_AVAILABLE: "active",
    OrderStatus.REPORTED: "completed",
    OrderStatus.CANCELLED: "revoked",
}
_PRIORITY = {"routine": "routine", "urgent": "urgent", "stat": "stat"}
# DocumentReference.type: the LOINC document type (its own English display, as LOINC publishes it) and the
# form type; the text a person reads is the form's Vietnamese name (documents.form.<type> in vi.json).
_FORM_LOINC = {
    "outpatient_record": ("34108-1", "Outpatient Note"),
    "admission_note": ("34117-2", "History and physical note"),
    "progress_note": ("11506-3", "Progress note"),
    "diagnosis": ("29548-5", "Diagnosis Narrative"),
    "discharge_summary": ("18842-5", "Discharge summary"),
    "radiology_report": ("18748-4", "Diagnostic imaging study"),
}
RESOURCE_TYPES = (
    "Patient",
    "Encounter",
    "ServiceRequest",
    "ImagingStudy",
    "DiagnosticReport",
    "DocumentReference",
    "Provenance",
    "AuditEvent",
)


class FhirError(ExportError):
    """A FHIR request that cannot be answered; ``issue_code`` goes into the OperationOutcome."""

    def __init__(self, message: str, http_status: int = 400, issue_code: str = "invalid") -> None:
        super().__init__(message, key="errors.validation")
        self.http_status = http_status
        self.issue_code = issue_code


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource after a round trip through its ``fhir.resources`` model (raises if invalid)."""
    from fhir.resources.R4B import get_fhir_model_class

    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    out: dict[str, Any] = json.loads(model.model_dump_json(exclude_none=True))
    return out


def _instant(value: datetime | None) -> str | None:
    """A stored naive-UTC time as a FHIR dateTime in Vietnam time."""
    if value is None:
        return None
    return local_isoformat(value)


def _ref(kind: str, ident: object, display: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"reference": f"{kind}/{ident}"}
    if display:
        r["display"] = display
    return r


def _practitioner(user: User | None) -> dict[str, Any] | None:
    """A logical reference (no Practitioner endpoint): CCHN identifier + name."""
    if user is None:
        return None
    ref: dict[str, Any] = {"display": user.full_name}
    if user.practising_cert_no:
        ref["identifier"] = {"system": SYSTEMS["cchn"], "value": user.practising_cert_no}
    return ref


def _attachment(data: bytes, content_type: str, title: str, created: datetime | None) -> dict[str, Any]:
    return {
        "contentType": content_type,
        "language": "vi",
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),  # FHIR Attachment.hash is SHA-1
        "title": title,
        "creation": _instant(created),
    }


@dataclass
class Ctx:
    session: Session
    public_url: str
    dicomweb_url: str
    artifacts: ArtifactSource

    def user(self, user_id: int | None) -> User | None:
        return None if user_id is None else self.session.get(User, user_id)


# -- builders ---------------------------------------------------------------
def ig_identifier(kind: str, value: str) -> dict[str, Any]:
    """An identifier in one of the VN Core IG's slices (``kind`` a key of :data:`emr.exports.vn_core.ID_TYPE`):
    the slice's system, and its use and type exactly as the IG fixes them (a fixed type has no text)."""
    code, display = ID_TYPE[kind]
    return {
        "use": ID_USE[kind],
        "type": {"coding": [{"system": V2_0203, "code": code, "display": display}]},
        "system": IG[kind],
        "value": value,
    }


def facility_identifier(code: str) -> dict[str, Any]:
    """MA_CSKCB as VNCoreProvider's MaCSKCB slice (its type is a pattern with the text "Provider number")."""
    ident = ig_identifier("facility", code)
    ident["type"]["text"] = ID_TYPE["facility"][1]
    return ident


def _demographic(session: Session, kind: str, code: str | None) -> dict[str, Any] | None:
    """VN Core extension-race / -occupation / -ethic: the IG's coding where our code has a published
    equivalent (:data:`_CS`, :data:`_ETHIC`), always the text a person reads (:func:`coded_text`)."""
    if not code:
        return None
    concept: dict[str, Any] = {}
    if kind == "ethnicity" and shipped_name("ethnicity", code):  # the shipped list is vn-core-race 1.0 verbatim
        concept["coding"] = [{"system": _CS["ethnicity"], "code": code, "display": shipped_name("ethnicity", code)}]
    elif kind == "religion" and code in _ETHIC:
        ig_code, display = _ETHIC[code]
        concept["coding"] = [{"system": _CS["religion"], "code": ig_code, "display": display}]
    concept["text"] = coded_text(session, kind, code, local_today())
    return {"url": EXT[kind], "valueCodeableConcept": concept}


def patient_resource(ctx: Ctx, p: Patient) -> dict[str, Any]:
    """VNCorePatient: identifier slices MaBenhNhan, TheCCCD, TheBHYT (and the BHXH number); race, occupation, ethic;
    VNCoreAddress."""
    ids: list[dict[str, Any]] = [ig_identifier("patient", p.code)]  # MaBenhNhan
    if p.cccd:
        ids.append(ig_identifier("cccd", p.cccd))  # TheCCCD
    if p.bhyt_ssn:  # no IG slice: the project's system, the reading text as its type
        ids.append({"type": {"text": t("fhir.identifier.bhxh")}, "system": SYSTEMS["bhxh"], "value": p.bhyt_ssn})
    if p.bhyt_number:
        bhyt = ig_identifier("bhyt", p.bhyt_number)  # TheBHYT
        if p.bhyt_valid_from or p.bhyt_valid_to:
            bhyt["period"] = {
                k: v.isoformat() for k, v in (("start", p.bhyt_valid_from), ("end", p.bhyt_valid_to)) if v is not None
            }
        if p.bhyt_registered_facility:
            bhyt["assigner"] = {"display": t("fhir.identifier.bhyt_facility", facility=p.bhyt_registered_facility)}
        ids.append(bhyt)
    extensions = [
        e
        for e in (
            _demographic(ctx.session, "ethnicity", p.ethnicity_code),
            _demographic(ctx.session, "occupation", p.occupation_code),
            _demographic(ctx.session, "religion", p.religion_code),
        )
        if e is not None
    ]
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(p.id),
        "meta": {"profile": [VN_PATIENT_PROFILE]},
        "identifier": ids,
        "active": p.status == "active",
        "name": [{"use": "official", "text": p.full_name, "family": p.family_name, "given": [p.given_name]}],
        "gender": _SEX.get(p.sex, "unknown"),
        "birthDate": str(p.birth_date.year) if p.birth_year_only else p.birth_date.isoformat(),
    }
    if p.phone:
        res["telecom"] = [{"system": "phone", "value": p.phone}]
    if extensions:
        res["extension"] = extensions
    address = _address(p)
    if address:
        res["address"] = [address]
    contacts = [
        {
            "relationship": [
                {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": code}],
                    "text": text,
                }
            ],
            "name": {"text": name},
        }
        for code, text, name in (
            ("FTH", t("fhir.contact.father"), p.father_name),
            ("MTH", t("fhir.contact.mother"), p.mother_name),
            ("GUARD", t("fhir.contact.guardian"), p.guardian_name),
        )
        if name
    ]
    if contacts:
        res["contact"] = contacts
    if p.merged_into_id:
        res["link"] = [{"other": _ref("Patient", p.merged_into_id), "type": "replaced-by"}]
    return res


def _address(p: Patient) -> dict[str, Any] | None:
    """VNCoreAddress: its text, and province and ward as the state and ward of its
    extension-administrative-address, coded in the 2025 administrative-unit list (:data:`OWN` admin_unit; the
    binding to vn-core-administrative-address is extensible and that list predates the 2025 units)."""
    if not (p.address or p.province_code or p.ward_code):
        return None
    addr: dict[str, Any] = {"use": "home"}
    parts = [
        {"url": part, "valueCodeableConcept": {"coding": [{"system": OWN["admin_unit"], "code": code}]}}
        for part, code in (("state", p.province_code), ("ward", p.ward_code))
        if code
    ]
    if parts:
        addr["extension"] = [{"url": EXT["address"], "extension": parts}]
    if p.address:
        addr["text"] = p.address
    if p.province_code:
        addr["state"] = p.province_code
        addr["country"] = "VN"
    return addr


def encounter_resource(ctx: Ctx, e: Encounter, diagnoses: VisitDiagnoses | None = None) -> dict[str, Any]:
    """The visit, with Encounter.diagnosis naming each diagnosis's role (:func:`visit_diagnoses`).

    Without ``diagnoses`` (the FHIR API: this server serves no Condition endpoint) the Conditions are
    contained in the Encounter and referenced as ``#id``; with them (a document Bundle that carries the
    Conditions as its own entries) the references are ``Condition/<id>``.
    """
    contained = diagnoses is None
    diagnoses = visit_diagnoses(ctx, e) if diagnoses is None else diagnoses
    code, display = _ENC_CLASS.get(e.kind, ("AMB", "ambulatory"))
    dep = ctx.session.get(Department, e.department_id)
    attending = ctx.user(e.attending_id)
    period: dict[str, Any] = {"start": _instant(e.admitted_at)}
    if e.discharged_at:
        period["end"] = _instant(e.discharged_at)
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(e.id),
        "identifier": [ig_identifier("visit", e.visit_code)],  # MaDotThamKham
        "status": _ENC_STATUS.get(e.status, "unknown"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display},
        "subject": _ref("Patient", e.patient_id),
        "period": period,
    }
    if e.record_no:
        res["identifier"].append({"system": SYSTEMS["record"], "value": e.record_no})
    if attending:
        res["participant"] = [{"individual": {"display": attending.full_name}}]
    if e.reason:
        res["reasonCode"] = [{"text": e.reason}]
    if any(role == "CC" for _cid, role in diagnoses.uses):
        # VNCoreEncounter's ChiefComplaint_CDBenhChinh slice is 1..1: only a visit with a main disease conforms
        res["meta"] = {"profile": [VN_ENCOUNTER_PROFILE]}
    if diagnoses.uses:
        if contained:
            res["contained"] = diagnoses.conditions
        res["diagnosis"] = [
            {
                "condition": {"reference": f"#{cid}" if contained else f"Condition/{cid}"},
                "use": _diagnosis_use(role),
            }
            for cid, role in diagnoses.uses
        ]
    if dep:
        res["serviceProvider"] = {"display": f"{dep.code} – {dep.name}"}
    return res


def service_request_resource(ctx: Ctx, o: ImagingOrder) -> dict[str, Any]:
    code: dict[str, Any] = {"text": o.procedure_name}
    if o.procedure_code:
        code["coding"] = [{"system": SYSTEMS["procedure"], "code": o.procedure_code, "display": o.procedure_name}]
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": str(o.id),
        "identifier": [
            {
                "type": {
                    "coding": [{"system": V2_0203, "code": "ACSN"}],
                    "text": "Accession Number",
                },
                "system": SYSTEMS["accession"],
                "value": o.accession_number,
            },
            {"system": SYSTEMS["dicom_uid"], "value": f"urn:oid:{o.study_instance_uid}"},
        ],
        "status": _ORDER_STATUS.get(o.status, "unknown"),
        "intent": "order",
        "category": [
            {
                "coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}],
                "text": t("fhir.category.imaging"),
            }
        ],
        "priority": _PRIORITY.get(o.urgency, "routine"),
        "code": code,
        "subject": _ref("Patient", o.patient_id),
        "authoredOn": _instant(o.ordered_at),
        "occurrenceDateTime": _instant(o.scheduled_at),
    }
    if o.encounter_id:
        res["encounter"] = _ref("Encounter", o.encounter_id)
    requester = _practitioner(ctx.user(o.ordered_by))
    if requester:
        res["requester"] = requester
    if o.clinical_info:
        res["reasonCode"] = [{"text": o.clinical_info}]
    if o.body_part:
        res["bodySite"] = [{"text": o.body_part}]
    return res


def imaging_study_resource(ctx: Ctx, st: Study) -> dict[str, Any]:
    order = ctx.session.get(ImagingOrder, st.order_id) if st.order_id else None
    res: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": str(st.id),
        "contained": [
            {
                "resourceType": "Endpoint",
                "id": "dicomweb",
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "dicom-wado-rs",
                },
                "payloadType": [{"text": "DICOM"}],
                "payloadMimeType": ["application/dicom"],
                "address": ctx.dicomweb_url,
            }
        ],
        "identifier": [{"system": SYSTEMS["dicom_uid"], "value": f"urn:oid:{st.study_instance_uid}"}],
        "status": "available",
        "subject": _ref("Patient", st.patient_id) if st.patient_id else {"display": st.dicom_patient_name or "?"},
        "endpoint": [{"reference": "#dicomweb"}],
    }
    if st.accession_number:
        res["identifier"].append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "system": SYSTEMS["accession"],
                "value": st.accession_number,
            }
        )
    if st.study_date and re.fullmatch(r"\d{8}", st.study_date):
        res["started"] = f"{st.study_date[:4]}-{st.study_date[4:6]}-{st.study_date[6:]}"
    if st.modalities:
        res["modality"] = [
            {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": m}
            for m in st.modalities.replace("\\", ",").split(",")
            if m
        ]
    if st.description:
        res["description"] = st.description
    if order is not None:
        res["basedOn"] = [_ref("ServiceRequest", order.id)]
        if order.encounter_id:
            res["encounter"] = _ref("Encounter", order.encounter_id)
    return res


def diagnostic_report_resource(ctx: Ctx, d: Document) -> dict[str, Any]:
    v = latest_signed(d)
    current = next((x for x in d.versions if x.number == d.current_version), None)
    version = v or current
    assert version is not None
    content = json.loads(version.content_json)
    order = ctx.session.get(ImagingOrder, d.order_id) if d.order_id else None
    status = "preliminary"
    if v is not None:
        status = "final" if v.number == 1 else "amended"
        if d.status == "amended":
            status = "amended"  # a newer version awaits signature; the signed one is served
    if d.status == "cancelled":
        status = "entered-in-error"
    res: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": str(d.id),
        "identifier": [{"system": SYSTEMS["document"], "value": f"{d.id}-v{version.number}"}],
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": t("documents.form.radiology_report"),
        },
        "subject": _ref("Patient", d.patient_id),
        "encounter": _ref("Encounter", d.encounter_id),
        "conclusion": content.get("conclusion"),
    }
    if v is not None and v.signed_at:
        res["issued"] = _instant(v.signed_at)
        res["effectiveDateTime"] = _instant(v.signed_at)
        reader = _practitioner(ctx.user(v.signed_by))
        if reader:
            res["resultsInterpreter"] = [reader]
    if order is not None:
        res["basedOn"] = [_ref("ServiceRequest", order.id)]
        studies = ctx.session.scalars(select(Study.id).where(Study.order_id == order.id)).all()
        if studies:
            res["imagingStudy"] = [_ref("ImagingStudy", sid) for sid in studies]
        if order.procedure_code:
            res["code"]["coding"].append(
                {"system": SYSTEMS["procedure"], "code": order.procedure_code, "display": order.procedure_name}
            )
    findings = content.get("findings")
    if findings:
        res["text"] = {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
            + _xhtml(findings)
            + "</p><p><b>"
            + _xhtml(t("fhir.report.conclusion"))
            + "</b> "
            + _xhtml(content.get("conclusion") or "")
            + "</p></div>",
        }
    if v is not None:
        pdf = ctx.artifacts.signed_pdf(d, v)
        if pdf is not None:
            res["presentedForm"] = [
                _attachment(pdf, "application/pdf", t("fhir.attachment.pdf", title=form_title(d)), v.signed_at)
            ]
    return res


def _xhtml(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


def form_title(d: Document) -> str:
    """What a person reads as a document's title: its form's Vietnamese name and number ("Tờ điều trị số 12")."""
    return t("fhir.document.title", name=t(f"documents.form.{d.form_type}"), number=d.id)


def document_reference_resource(ctx: Ctx, d: Document) -> dict[str, Any]:
    v = latest_signed(d)
    version = v or next(x for x in d.versions if x.number == d.current_version)
    code, display = _FORM_LOINC.get(d.form_type, ("34133-9", "Summary of episode note"))
    name, title = t(f"documents.form.{d.form_type}"), form_title(d)
    attachments = []
    pdf = ctx.artifacts.signed_pdf(d, v) if v is not None else None
    if pdf is not None:
        attachments.append(
            {
                "attachment": _attachment(
                    pdf, "application/pdf", t("fhir.attachment.pdf", title=title), v.signed_at if v else None
                )
            }
        )
    attachments.append(
        {
            "attachment": _attachment(
                version.content_json.encode("utf-8"),
                "application/json",
                t("fhir.attachment.json", title=title, version=version.number),
                version.created_at,
            )
        }
    )
    res: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": str(d.id),
        "identifier": [{"system": SYSTEMS["document"], "value": f"{d.id}-v{version.number}"}],
        "status": "entered-in-error" if d.status == "cancelled" else "current",
        "docStatus": "final"
        if v is not None and v.number == d.current_version
        else ("amended" if v else "preliminary"),
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": code, "display": display},
                {"system": SYSTEMS["form_type"], "code": d.form_type, "display": name},
            ],
            "text": name,
        },
        "description": title,
        "subject": _ref("Patient", d.patient_id),
        "date": _instant(version.signed_at or version.created_at),
        "content": attachments,
        "context": {"encounter": [_ref("Encounter", d.encounter_id)]},
    }
    author = _practitioner(ctx.user(version.created_by))
    if author:
        res["author"] = [author]
    if v is not None:
        auth = _practitioner(ctx.user(v.signed_by))
        if auth:
            res["authenticator"] = auth
    if version.amends_version_id:
        res["relatesTo"] = [{"code": "replaces", "target": {"display": t("fhir.document.replaces", title=title)}}]
    return res


# The capacity in which the head of department's signature was given (document_signatures.capacity,
# emr.access.substitutes): head, deputy ("KT. Trưởng khoa", signing for the head) or acting ("Q. Trưởng khoa",
# holding the head's authority). The project's own code system: neither FHIR nor the VN Core IG has one.
SIGNER_CAPACITY = OWN["signer_capacity"]
_AUTHOR_SIGNATURE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.1",
    "display": "Author's Signature",
}
_VERIFIER = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "verifier"}]
}


def _capacity_role(capacity: str) -> dict[str, Any]:
    label = t(f"signing.capacity.{capacity}")
    return {"coding": [{"system": SIGNER_CAPACITY, "code": capacity, "display": label}], "text": label}


def _head_post(ctx: Ctx, d: Document) -> dict[str, Any]:
    """The post a deputy signs for: the head of the visit's department (a logical PractitionerRole reference;
    who held the post that day is not recorded, and the post may be vacant)."""
    enc = ctx.session.get(Encounter, d.encounter_id)
    dep = ctx.session.get(Department, enc.department_id) if enc is not None else None
    title = t("signing.capacity.head")
    return {
        "type": "PractitionerRole",
        "display": t("fhir.provenance.head_post", title=title, department=dep.name) if dep is not None else title,
    }


def _signature_rows(ctx: Ctx, v: DocumentVersion) -> list[DocumentSignature]:
    return list(
        ctx.session.scalars(
            select(DocumentSignature)
            .where(DocumentSignature.version_id == v.id)
            .order_by(DocumentSignature.order_index)
        )
    )


def provenance_resource(ctx: Ctx, v: DocumentVersion) -> dict[str, Any]:
    """Who signed which version of which document, one agent and one Signature per signature.

    A version signed through the signing workflow has one row per signature (document_signatures): each
    signer is an agent with their own Signature (time, detached CMS). The head of department's signature on a
    discharge paper names the capacity it was given in (``agent.role``, coded in :data:`SIGNER_CAPACITY`, text
    "Trưởng khoa" / "KT. Trưởng khoa" / "Q. Trưởng khoa"); a deputy signs *for* the head (Decree 30/2020/NĐ-CP,
    "ký thay"), so their agent and Signature carry ``onBehalfOf`` the head's post (FHIR R4 Provenance.agent
    .onBehalfOf: "the individual, device, or organization for whom the change was made"; Signature.onBehalfOf:
    "the party being represented"). An acting head holds the head's authority in their own name: no
    ``onBehalfOf``. A version marked signed without the workflow has no rows: its signer and the CMS of
    :class:`ArtifactSource` stand for it.
    """
    d = ctx.session.get(Document, v.document_id)
    assert d is not None
    targets = [_ref("DocumentReference", d.id)]
    if d.form_type == "radiology_report":
        targets.append(_ref("DiagnosticReport", d.id))
    agents: list[dict[str, Any]] = []
    signatures: list[dict[str, Any]] = []
    rows = _signature_rows(ctx, v)
    for row in rows:
        who = _practitioner(ctx.user(row.signer_id)) or {"display": "?"}
        agent: dict[str, Any] = {"type": _VERIFIER, "who": who}
        signature: dict[str, Any] = {"type": [_AUTHOR_SIGNATURE], "when": _instant(row.signed_at), "who": who}
        if row.signer_role == "head":
            capacity = row.capacity or "head"  # rows from before migration 0024: only the head could sign
            agent["role"] = [_capacity_role(capacity)]
            if capacity == "deputy":
                agent["onBehalfOf"] = signature["onBehalfOf"] = _head_post(ctx, d)
        signature["sigFormat"] = "application/pkcs7-signature"
        signature["targetFormat"] = "application/json"
        signature["data"] = base64.b64encode(bytes(row.cms)).decode("ascii")
        agents.append(agent)
        signatures.append(signature)
    if not rows:
        who = _practitioner(ctx.user(v.signed_by)) or {"display": "?"}
        signature = {"type": [_AUTHOR_SIGNATURE], "when": _instant(v.signed_at), "who": who}
        cms = ctx.artifacts.version_cms(d, v)
        if cms is not None:
            signature["sigFormat"] = "application/pkcs7-signature"
            signature["targetFormat"] = "application/json"
            signature["data"] = base64.b64encode(cms).decode("ascii")
        agents.append({"type": _VERIFIER, "who": who})
        signatures.append(signature)
    return {
        "resourceType": "Provenance",
        "id": str(v.id),
        "target": targets,
        "recorded": _instant(v.signed_at),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "AUTHEN",
                    "display": "authenticator",
                }
            ]
        },
        "agent": agents,
        "signature": signatures,
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:sha256:{v.content_sha256}"},
                    "display": t("fhir.provenance.version", number=v.number),
                },
            }
        ],
    }


_AUDIT_ACTION = {"create": "C", "edit": "U", "amend": "U", "sign": "U", "cancel": "D", "restore": "U", "merge": "U"}


def audit_event_resource(ctx: Ctx, a: AuditEntry) -> dict[str, Any]:
    verb = a.action.rsplit(".", 1)[-1]
    action = _AUDIT_ACTION.get(verb, "R" if verb in ("view", "read", "search") else "E")
    outcome = {"success": "0", "failure": "8", "denied": "4"}.get(a.outcome, "8")
    res: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(a.id),
        "type": {"system": OWN["audit_action"], "code": a.action},
        "action": action,
        "recorded": a.at.replace("Z", "+00:00"),
        "outcome": outcome,
        "agent": [
            {
                "who": {"display": a.username or "?"},
                "requestor": True,
                "role": [{"text": a.role}] if a.role else None,
                "network": {"address": a.client_ip, "type": "2"} if a.client_ip else None,
            }
        ],
        "source": {"observer": {"display": "filmless EMR"}},
    }
    entities: list[dict[str, Any]] = []
    if a.patient_id:
        entities.append(
            {
                "what": _ref("Patient", a.patient_id),
                "role": {"code": "1", "system": "http://terminology.hl7.org/CodeSystem/object-role"},
            }
        )
    if a.object_type and a.object_id:
        entities.append(
            {
                "what": {"display": f"{a.object_type}/{a.object_id}"},
                "detail": [{"type": "details", "valueString": a.details}],
            }
        )
    if entities:
        res["entity"] = entities
    res["agent"][0] = {k: v for k, v in res["agent"][0].items() if v is not None}
    return res


# VNCoreConditionEncounterDiagnosis (vn-core-condition-encounter-diagnosis): category 1..* with
# encounter-diagnosis, code bound (required) to vn-core-condition-code, encounter 1..1; ICD-10
# (http://hl7.org/fhir/sid/icd-10) by QĐ 4469/QĐ-BYT; position 0 is MA_BENH_CHINH, the rest MA_BENH_KT.
CONDITION_DIAGNOSIS_PROFILE = IG["condition_diagnosis_profile"]


_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def _condition(
    e: Encounter, cid: str, code: str, title: str, text: str, category: str, status: str, recorded: datetime | None
) -> dict[str, Any]:
    """A VNCoreConditionDiagnosis of visit ``e``: ICD-10 ``code`` (``title`` its catalogue name), ``text`` as the
    doctor wrote it, ``category`` the Vietnamese name of its role, ``status`` confirmed or provisional."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "meta": {"profile": [CONDITION_DIAGNOSIS_PROFILE]},
        "verificationStatus": {"coding": [{"system": _VER_STATUS, "code": status}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                        "display": "Encounter Diagnosis",
                    }
                ],
                "text": category,
            }
        ],
        "code": {"coding": [{"system": SYSTEMS["icd10"], "code": code, "display": title}], "text": text},
        "subject": _ref("Patient", e.patient_id),
        "encounter": _ref("Encounter", e.id),
        "recordedDate": _instant(recorded),
    }


def condition_resources(ctx: Ctx, e: Encounter) -> list[dict[str, Any]]:
    """One VNCoreConditionDiagnosis per ICD-10 diagnosis of the visit, main diagnosis first (id ``<enc>-<n>``)."""
    rows = ctx.session.execute(
        select(EncounterDiagnosis.position, EncounterDiagnosis.icd10_code, Icd10Code.title)
        .join(Icd10Code, Icd10Code.code == EncounterDiagnosis.icd10_code)
        .where(EncounterDiagnosis.encounter_id == e.id)
        .order_by(EncounterDiagnosis.position)
    ).all()
    return [
        _condition(
            e,
            f"{e.id}-{i + 1}",
            code,
            title,
            title,
            t("fhir.diagnosis.main") if i == 0 else t("fhir.diagnosis.secondary"),
            "confirmed",
            e.closed_at or e.admitted_at,
        )
        for i, (_position, code, title) in enumerate(rows)
    ]


# Encounter.diagnosis.use: DiagnosisRole, the binding of R4 Encounter.diagnosis.use, which the VN Core IG's
# Encounter slices by use.coding (StructureDefinition vn-core-encounter of the Ministry's IG, github
# hl7vn/vn-core-ig: AdmissionDiagnosis-CDVaoVien AD 0..1, DischargeDiagnosis-CDRaVien DD 0..1,
# ChiefComplaint_CDBenhChinh CC 1..1 — the main disease, ComorbidityDiagnosis-CDBenhPhu CM 0..*; rank 0..0 in
# each slice, the role says which diagnosis is the main one). Displays as the code system has them; the text a
# person reads is Vietnamese.
DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
_ROLES = {
    "AD": ("Admission diagnosis", "fhir.diagnosis.admission"),
    "DD": ("Discharge diagnosis", "fhir.diagnosis.discharge"),
    "CC": ("Chief complaint", "fhir.diagnosis.main"),
    "CM": ("Comorbidity diagnosis", "fhir.diagnosis.secondary"),
}


def _diagnosis_use(role: str) -> dict[str, Any]:
    display, key = _ROLES[role]
    return {"coding": [{"system": DIAGNOSIS_ROLE, "code": role, "display": display}], "text": t(key)}


@dataclass
class VisitDiagnoses:
    """A visit's diagnoses: the Condition resources (each once) and the Encounter.diagnosis entries."""

    conditions: list[dict[str, Any]]
    uses: list[tuple[str, str]]  # (Condition id, DiagnosisRole code), in Encounter.diagnosis order

    def lines(self) -> list[str]:
        """One line per role for a narrative: "Bệnh chính: J18.9 Viêm phổi"."""
        by_id = {c["id"]: c for c in self.conditions}
        out = []
        for cid, role in self.uses:
            code = by_id[cid]["code"]
            out.append(f"{t(_ROLES[role][1])}: {code['coding'][0]['code']} {code['text']}")
        return out


def _signed_content(ctx: Ctx, e: Encounter, form_type: str) -> dict[str, Any] | None:
    """The content of the visit's most recently signed ``form_type`` document (as records.latest_of picks it)."""
    docs = ctx.session.scalars(
        select(Document).where(
            Document.encounter_id == e.id, Document.form_type == form_type, Document.status != "cancelled"
        )
    )
    signed = [(v, d) for d in docs if (v := latest_signed(d)) is not None]
    if not signed:
        return None
    version, _doc = max(signed, key=lambda vd: (vd[0].signed_at or vd[0].created_at, vd[1].id))
    content: dict[str, Any] = json.loads(version.content_json)
    return content


def _admission_condition(ctx: Ctx, e: Encounter) -> dict[str, Any] | None:
    """The admission diagnosis as a provisional Condition, only when the admitting doctor coded it: the signed
    admission note's initial diagnosis with the ICD-10 code written on that note (``initial_diagnosis_code``,
    in the ICD-10 list). Never coded with another diagnosis's code (the visit's main code may be the discharge
    diagnosis); a VN Core diagnosis Condition needs a code, so an uncoded admission diagnosis is left out."""
    note = _signed_content(ctx, e, "admission_note") or {}
    code = str(note.get("initial_diagnosis_code") or "").strip().upper()
    text = admission_diagnosis(e, note)  # the note's initial diagnosis (CHAN_DOAN_VAO)
    if not code or not text:
        return None  # no signed admission note, or one without a code: nothing coded by the admitting doctor
    title = ctx.session.scalar(select(Icd10Code.title).where(Icd10Code.code == code))
    if title is None:
        return None  # not in the ICD-10 list: no conformant code to give
    return _condition(
        e, f"{e.id}-vao-vien", code, title, text, t("fhir.diagnosis.admission"), "provisional", e.admitted_at
    )


def visit_diagnoses(ctx: Ctx, e: Encounter) -> VisitDiagnoses:
    """The visit's ICD-10 diagnoses with their roles in the visit.

    CC the main disease (MA_BENH_CHINH, position 0) and CM each other one (MA_BENH_KT); once the visit has
    ended, DD on the main disease as well (MA_BENH_CHINH is the main disease at the end of treatment, QĐ 4750
    Bảng 1). AD is the admission diagnosis (CHAN_DOAN_VAO) as its own provisional Condition, only when the
    signed admission note gives it an ICD-10 code of its own (:func:`_admission_condition`): VN Core requires a
    code on every diagnosis Condition (vn-core-condition-encounter-diagnosis, Condition.code bound to
    vn-core-condition-code) and its AdmissionDiagnosis-CDVaoVien slice is 0..1, so an admission diagnosis
    without its own code is left out rather than given the main disease's code, which the admitting doctor
    may never have given. A visit with no ICD-10 code has no conformant Condition to give, so no diagnosis
    at all.
    """
    coded = condition_resources(ctx, e)
    if not coded:
        return VisitDiagnoses([], [])
    conditions: list[dict[str, Any]] = []
    uses: list[tuple[str, str]] = []
    admitted = _admission_condition(ctx, e)
    if admitted is not None:
        conditions.append(admitted)
        uses.append((admitted["id"], "AD"))
    for i, c in enumerate(coded):
        conditions.append(c)
        uses.append((c["id"], "CC" if i == 0 else "CM"))
    if e.status == "closed" and e.discharged_at is not None:
        uses.append((coded[0]["id"], "DD"))
    return VisitDiagnoses(conditions, uses)
