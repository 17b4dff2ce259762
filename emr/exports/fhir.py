"""FHIR R4 resources built from the EMR, and the searches behind the FHIR API.

Resources are plain dicts validated with ``fhir.resources`` before they
leave (:func:`validated`); the package's R4B models are used because its
releases that support pydantic 2 ship R4B and R5 but not R4 (4.0.1) — the
resources served here (Patient, Encounter, ServiceRequest, ImagingStudy,
DiagnosticReport, DocumentReference, Provenance, AuditEvent) have the same
R4 and R4B structure for every element written.

Identifier systems, extensions and the Patient profile follow the HL7 Vietnam
VN Core FHIR IG (fhir.hl7.org.vn/core, draft 0.3–0.5): NamingSystems
``http://fhir.hl7.org.vn/core/sid/{cccd,bhyt,bhxh,cchn,ma-lk}``, identifier type
codes of ``vn-identifier-type-cs`` (CCCD, BHYT, BHXH) and v2-0203 ``MR``,
VNCorePatient's extensions (vn-ext-ethnicity, vn-ext-occupation, patient-religion)
and VNCoreAddress (vn-ext-province, vn-ext-ward). The project's earlier URIs stay
accepted in searches (:data:`SYSTEM_ALIASES`). Search parameter rules are in
:mod:`.fhir_params`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, false, or_, select
from sqlalchemy.orm import Session

from ..models import (
    LOCAL_OFFSET,
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
from .artifacts import ArtifactSource, NoArtifacts
from . import fhir_params as fp
from .exceptions import ExportError
from .records import latest_signed

__all__ = [
    "SYSTEMS",
    "SYSTEM_ALIASES",
    "VN_PATIENT_PROFILE",
    "EXT",
    "known_params",
    "FhirError",
    "RESOURCE_TYPES",
    "validated",
    "read_resource",
    "search_resources",
    "capability_statement",
    "SearchResult",
]

_BASE = "https://filmless.vn/fhir/sid"
_VN = "http://fhir.hl7.org.vn/core"
SYSTEMS = {
    "cccd": f"{_VN}/sid/cccd",  # VN Core NamingSystem vn-cccd-ns: căn cước công dân, 12 digits
    "bhyt": f"{_VN}/sid/bhyt",  # vn-bhyt-ns: legacy 15 characters, 10-digit BHXH number or 12-digit CCCD
    "bhxh": f"{_VN}/sid/bhxh",  # social-insurance number (10 digits)
    "patient": f"{_BASE}/ma-bn",  # MA_BN, the hospital's patient code (the MRN slice, type MR)
    "visit": f"{_VN}/sid/ma-lk",  # MA_LK (VN Core vn-ma-lk-ns)
    "record": f"{_BASE}/ma-hsba",  # MA_HSBA
    "accession": f"{_BASE}/accession",  # DICOM Accession Number
    "cchn": f"{_VN}/sid/cchn",  # vn-cchn-ns: practising-certificate number
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "dicom_uid": "urn:dicom:uid",
    "procedure": f"{_BASE}/ma-dich-vu",  # MA_DICH_VU
}
# Earlier project URIs, still accepted in searches.
SYSTEM_ALIASES = {f"{_BASE}/cccd": SYSTEMS["cccd"], f"{_BASE}/bhyt": SYSTEMS["bhyt"], f"{_BASE}/ma-lk": SYSTEMS["visit"]}
VN_PATIENT_PROFILE = f"{_VN}/StructureDefinition/vn-core-patient"
_ID_TYPE = f"{_VN}/CodeSystem/vn-identifier-type-cs"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
EXT = {
    "ethnicity": f"{_VN}/StructureDefinition/vn-ext-ethnicity",
    "occupation": f"{_VN}/StructureDefinition/vn-ext-occupation",
    "religion": "http://hl7.org/fhir/StructureDefinition/patient-religion",
    "province": f"{_VN}/StructureDefinition/vn-ext-province",
    "ward": f"{_VN}/StructureDefinition/vn-ext-ward",
}
_CS = {
    "ethnicity": f"{_VN}/CodeSystem/vn-ethnicity-cs",  # 54 ethnic groups, GSO list (QĐ 121-TCTK/PPCĐ)
    "occupation": f"{_VN}/CodeSystem/vn-occupation-cs",  # QĐ 34/2020/QĐ-TTg
    "religion": f"{_VN}/CodeSystem/vn-religion-cs",
}
_SEX = {"M": "male", "F": "female", "O": "other"}
_ENC_CLASS = {
    "outpatient": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
}
_ENC_STATUS = {"open": "in-progress", "closed": "finished", "cancelled": "cancelled"}
_ORDER_STATUS = {
    "scheduled": "active",
    "in_progress": "active",
    "completed": "active",  # performed, images/report still to come
    "discontinued": "active",
    "images_available": "active",
    "reported": "completed",
    "cancelled": "revoked",
}
_PRIORITY = {"routine": "routine", "urgent": "urgent", "stat": "stat"}
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
    return (value + LOCAL_OFFSET).strftime("%Y-%m-%dT%H:%M:%S+07:00")


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
def _id_type(code: str, display: str, system: str = _ID_TYPE) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _coded(url: str, system: str, code: str | None) -> dict[str, Any] | None:
    if not code:
        return None
    return {"url": url, "valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def patient_resource(ctx: Ctx, p: Patient) -> dict[str, Any]:
    """VNCorePatient: identifier slices CCCD, BHYT, BHXH and MRN; ethnicity, occupation, religion; VNCoreAddress."""
    ids: list[dict[str, Any]] = [
        {
            "use": "usual",
            "type": _id_type("MR", "Medical record number", _V2_0203),
            "system": SYSTEMS["patient"],
            "value": p.code,
        }
    ]
    if p.cccd:
        ids.append(
            {
                "use": "official",
                "type": _id_type("CCCD", "Căn cước công dân"),
                "system": SYSTEMS["cccd"],
                "value": p.cccd,
            }
        )
    if p.bhyt_ssn:
        ids.append({"type": _id_type("BHXH", "Mã số bảo hiểm xã hội"), "system": SYSTEMS["bhxh"], "value": p.bhyt_ssn})
    if p.bhyt_number:
        bhyt: dict[str, Any] = {
            "type": _id_type("BHYT", "Thẻ bảo hiểm y tế"),
            "system": SYSTEMS["bhyt"],
            "value": p.bhyt_number,
        }
        if p.bhyt_valid_from or p.bhyt_valid_to:
            bhyt["period"] = {
                k: v.isoformat() for k, v in (("start", p.bhyt_valid_from), ("end", p.bhyt_valid_to)) if v is not None
            }
        if p.bhyt_registered_facility:
            bhyt["assigner"] = {"display": f"Nơi đăng ký KCB ban đầu {p.bhyt_registered_facility}"}
        ids.append(bhyt)
    extensions = [
        e
        for e in (
            _coded(EXT["ethnicity"], _CS["ethnicity"], p.ethnicity_code),
            _coded(EXT["occupation"], _CS["occupation"], p.occupation_code),
            _coded(EXT["religion"], _CS["religion"], p.religion_code),
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
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": code}], "text": text}
            ],
            "name": {"text": name},
        }
        for code, text, name in (
            ("FTH", "Cha", p.father_name),
            ("MTH", "Mẹ", p.mother_name),
            ("GUARD", "Người giám hộ", p.guardian_name),
        )
        if name
    ]
    if contacts:
        res["contact"] = contacts
    if p.merged_into_id:
        res["link"] = [{"other": _ref("Patient", p.merged_into_id), "type": "replaced-by"}]
    return res


def _address(p: Patient) -> dict[str, Any] | None:
    """VNCoreAddress: province and ward as coded extensions (vn-addr-province: a VN address names its province)."""
    if not (p.address or p.province_code or p.ward_code):
        return None
    addr: dict[str, Any] = {"use": "home"}
    ext = []
    if p.province_code:
        ext.append({"url": EXT["province"], "valueCoding": {"code": p.province_code}})
    if p.ward_code:
        ext.append({"url": EXT["ward"], "valueCoding": {"code": p.ward_code}})
    if ext:
        addr["extension"] = ext
    if p.address:
        addr["text"] = p.address
    if p.province_code:
        addr["state"] = p.province_code
        addr["country"] = "VN"
    return addr


def encounter_resource(ctx: Ctx, e: Encounter) -> dict[str, Any]:
    code, display = _ENC_CLASS.get(e.kind, ("AMB", "ambulatory"))
    dep = ctx.session.get(Department, e.department_id)
    attending = ctx.user(e.attending_id)
    period: dict[str, Any] = {"start": _instant(e.admitted_at)}
    if e.discharged_at:
        period["end"] = _instant(e.discharged_at)
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(e.id),
        "identifier": [{"system": SYSTEMS["visit"], "value": e.visit_code}],
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
    diags = ctx.session.execute(
        select(EncounterDiagnosis.icd10_code, Icd10Code.title)
        .join(Icd10Code, Icd10Code.code == EncounterDiagnosis.icd10_code)
        .where(EncounterDiagnosis.encounter_id == e.id)
        .order_by(EncounterDiagnosis.position)
    ).all()
    if diags:
        res["extension"] = [
            {
                "url": f"{_BASE}/StructureDefinition/encounter-icd10",
                "valueCodeableConcept": {
                    "coding": [{"system": SYSTEMS["icd10"], "code": c, "display": t}],
                    "text": "chính" if i == 0 else "kèm theo",
                },
            }
            for i, (c, t) in enumerate(diags)
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
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}],
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
                "text": "Chẩn đoán hình ảnh",
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
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
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
        "identifier": [{"system": f"{_BASE}/so-phieu", "value": f"{d.id}-v{version.number}"}],
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}]},
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
            + "</p><p><b>Kết luận:</b> "
            + _xhtml(content.get("conclusion") or "")
            + "</p></div>",
        }
    if v is not None:
        pdf = ctx.artifacts.signed_pdf(d, v)
        if pdf is not None:
            res["presentedForm"] = [
                _attachment(pdf, "application/pdf", f"Phiếu kết quả {d.id} (đã ký số)", v.signed_at)
            ]
    return res


def _xhtml(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


def document_reference_resource(ctx: Ctx, d: Document) -> dict[str, Any]:
    v = latest_signed(d)
    version = v or next(x for x in d.versions if x.number == d.current_version)
    code, display = _FORM_LOINC.get(d.form_type, ("34133-9", "Summary of episode note"))
    attachments = []
    pdf = ctx.artifacts.signed_pdf(d, v) if v is not None else None
    if pdf is not None:
        attachments.append(
            {"attachment": _attachment(pdf, "application/pdf", f"{display} (PDF đã ký)", v.signed_at if v else None)}
        )
    attachments.append(
        {
            "attachment": _attachment(
                version.content_json.encode("utf-8"),
                "application/json",
                f"{display} – phiên bản {version.number} (JSON chuẩn hóa)",
                version.created_at,
            )
        }
    )
    res: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": str(d.id),
        "identifier": [{"system": f"{_BASE}/so-phieu", "value": f"{d.id}-v{version.number}"}],
        "status": "entered-in-error" if d.status == "cancelled" else "current",
        "docStatus": "final"
        if v is not None and v.number == d.current_version
        else ("amended" if v else "preliminary"),
        "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": d.form_type},
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
        res["relatesTo"] = [{"code": "replaces", "target": {"display": f"phiên bản trước của phiếu {d.id}"}}]
    return res


def provenance_resource(ctx: Ctx, v: DocumentVersion) -> dict[str, Any]:
    """Who signed which version of which document, with the detached CMS when the workflow stored one."""
    d = ctx.session.get(Document, v.document_id)
    assert d is not None
    signer = ctx.user(v.signed_by)
    who = _practitioner(signer) or {"display": "?"}
    targets = [_ref("DocumentReference", d.id)]
    if d.form_type == "radiology_report":
        targets.append(_ref("DiagnosticReport", d.id))
    signature: dict[str, Any] = {
        "type": [
            {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}
        ],
        "when": _instant(v.signed_at),
        "who": who,
    }
    cms = ctx.artifacts.version_cms(d, v)
    if cms is not None:
        signature["sigFormat"] = "application/pkcs7-signature"
        signature["targetFormat"] = "application/json"
        signature["data"] = base64.b64encode(cms).decode("ascii")
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
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "verifier",
                        }
                    ]
                },
                "who": who,
            }
        ],
        "signature": [signature],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:sha256:{v.content_sha256}"},
                    "display": f"phiên bản {v.number}",
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
        "type": {"system": f"{_BASE}/audit-action", "code": a.action},
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


# -- reads and searches ---------------------------------------------------------
@dataclass
class SearchResult:
    resources: list[dict[str, Any]]
    total: int
    patient_ids: set[int]


def _id(value: str) -> int:
    if not re.fullmatch(r"\d{1,10}", value) or int(value) > 2**31 - 1:
        raise FhirError(f"unknown id {value!r}", 404, "not-found")
    return int(value)


def _token(value: str) -> tuple[str | None, str | None]:
    """(system, code) per R4 token rules; known aliases mapped to the VN Core URIs."""
    system, code = fp.parse_token(value)
    return (SYSTEM_ALIASES.get(system, system) if system else system), code


def _ids(values: list[str], kind: str) -> list[int]:
    return [_id(fp.reference_id(x, kind)) for v in values for x in v.split(",")]


def _patient_filter(args: dict[str, list[str]], column: Any) -> list[Any]:
    return [column.in_(_ids([v], "Patient")) for v in args.get("patient", []) + args.get("subject", [])]


def _one_of(clauses: list[Any]) -> Any:
    return or_(*clauses) if len(clauses) != 1 else clauses[0]


def _identifier(values: list[str], columns: dict[str | None, list[Any]]) -> list[Any]:
    """identifier=[system]|[code] on the columns each system maps to (None: identifiers without a system).

    ``|code`` matches only identifiers that have no system; ``system|`` any value in the system;
    an unknown system matches nothing (it may be a valid system this server does not hold).
    """
    out = []
    for raw in values:
        alternatives = []
        for part in raw.split(","):
            system, code = _token(part)
            if system is None:
                targets = [c for cols in columns.values() for c in cols]
            else:
                targets = columns.get(system or None, [])
            if not targets:
                alternatives.append(false())
            elif code is None:
                alternatives.append(or_(*[c.is_not(None) for c in targets]))
            else:
                alternatives.append(or_(*[c == code for c in targets]))
        out.append(_one_of(alternatives))
    return out


_SEARCH_PARAMS: dict[str, set[str]] = {
    "Patient": {"identifier", "name", "birthdate", "_id"},
    "Encounter": {"patient", "subject", "date", "identifier", "_id"},
    "ServiceRequest": {"patient", "subject", "identifier", "authored", "encounter", "_id"},
    "ImagingStudy": {"patient", "subject", "identifier", "started", "_id"},
    "DiagnosticReport": {"patient", "subject", "identifier", "date", "based-on", "_id"},
    "DocumentReference": {"patient", "subject", "date", "encounter", "_id"},
    "Provenance": {"patient", "target", "recorded", "_id"},
    "AuditEvent": {"patient", "date", "action", "_id"},
}
# Result parameters the API itself handles (paging, format); never "unknown".
CONTROL_PARAMS = frozenset({"_count", "_offset", "_format"})


def known_params(kind: str) -> set[str]:
    return _SEARCH_PARAMS.get(kind, set()) | CONTROL_PARAMS


def _order_ids_for_accession(session: Session, value: str) -> Select[Any]:
    return select(ImagingOrder.id).where(ImagingOrder.accession_number == value)


def _query(  # noqa: C901 - one branch per type
    session: Session, kind: str, args: dict[str, list[str]], *, lenient: bool = False
) -> Select[Any]:
    unknown = set(args) - known_params(kind)
    if unknown and not lenient:
        raise FhirError(f"unsupported search parameter(s) for {kind}: {', '.join(sorted(unknown))}")
    args = {k: [v for v in vs if v != ""] for k, vs in args.items() if k not in unknown}
    ids = _ids(args.get("_id", []), kind)
    q: Select[Any]
    if kind == "Patient":
        q = select(Patient)
        if ids:
            q = q.where(Patient.id.in_(ids))
        q = q.where(
            *_identifier(
                args.get("identifier", []),
                {
                    SYSTEMS["cccd"]: [Patient.cccd],
                    SYSTEMS["bhyt"]: [Patient.bhyt_number],
                    SYSTEMS["bhxh"]: [Patient.bhyt_ssn],
                    SYSTEMS["patient"]: [Patient.code],
                },
            )
        )
        for v in args.get("name", []):
            q = q.where(_one_of([fp.name_clause(Patient.search_name, part) for part in v.split(",")]))
        q = q.where(*fp.local_date_clauses(Patient.birth_date, args.get("birthdate", [])))
        return q.order_by(Patient.id)
    if kind == "Encounter":
        q = select(Encounter).where(*_patient_filter(args, Encounter.patient_id))
        if ids:
            q = q.where(Encounter.id.in_(ids))
        q = q.where(*fp.date_clauses(Encounter.admitted_at, args.get("date", [])))
        q = q.where(
            *_identifier(
                args.get("identifier", []),
                {SYSTEMS["visit"]: [Encounter.visit_code], SYSTEMS["record"]: [Encounter.record_no]},
            )
        )
        return q.order_by(Encounter.admitted_at, Encounter.id)
    if kind == "ServiceRequest":
        q = select(ImagingOrder).where(*_patient_filter(args, ImagingOrder.patient_id))
        if ids:
            q = q.where(ImagingOrder.id.in_(ids))
        q = q.where(*fp.date_clauses(ImagingOrder.ordered_at, args.get("authored", [])))
        q = q.where(*_identifier(args.get("identifier", []), {SYSTEMS["accession"]: [ImagingOrder.accession_number]}))
        for v in args.get("encounter", []):
            q = q.where(ImagingOrder.encounter_id.in_(_ids([v], "Encounter")))
        return q.order_by(ImagingOrder.ordered_at, ImagingOrder.id)
    if kind == "ImagingStudy":
        q = select(Study).where(Study.state == "linked", *_patient_filter(args, Study.patient_id))
        if ids:
            q = q.where(Study.id.in_(ids))
        for v in args.get("identifier", []):
            system, code = _token(v)
            if system == SYSTEMS["dicom_uid"] or (code or "").startswith("urn:oid:"):
                q = q.where(Study.study_instance_uid == (code or "").removeprefix("urn:oid:"))
            elif system in (None, SYSTEMS["accession"]) and code:
                q = q.where(Study.accession_number == code)
            elif system == SYSTEMS["accession"]:
                q = q.where(Study.accession_number.is_not(None))
            else:
                q = q.where(false())
        q = q.where(*fp.day_string_clauses(Study.study_date, args.get("started", [])))
        return q.order_by(Study.id)
    if kind in ("DiagnosticReport", "DocumentReference"):
        q = select(Document).where(*_patient_filter(args, Document.patient_id))
        if kind == "DiagnosticReport":
            q = q.where(Document.form_type == "radiology_report")
        if ids:
            q = q.where(Document.id.in_(ids))
        if args.get("date"):
            signed = select(DocumentVersion.document_id).where(*fp.date_clauses(DocumentVersion.signed_at, args["date"]))
            q = q.where(Document.id.in_(signed))
        for v in args.get("identifier", []):
            code = _token(v)[1]
            q = q.where(Document.order_id.in_(_order_ids_for_accession(session, code or "")))
        for v in args.get("based-on", []):
            q = q.where(Document.order_id.in_(_ids([v], "ServiceRequest")))
        for v in args.get("encounter", []):
            q = q.where(Document.encounter_id.in_(_ids([v], "Encounter")))
        return q.order_by(Document.id)
    if kind == "Provenance":
        q = select(DocumentVersion).where(DocumentVersion.signed_at.is_not(None))
        if ids:
            q = q.where(DocumentVersion.id.in_(ids))
        if args.get("patient"):
            pats = _ids(args["patient"], "Patient")
            q = q.where(DocumentVersion.document_id.in_(select(Document.id).where(Document.patient_id.in_(pats))))
        for v in args.get("target", []):
            q = q.where(DocumentVersion.document_id == _id(v.rstrip("/").split("/")[-1]))
        q = q.where(*fp.date_clauses(DocumentVersion.signed_at, args.get("recorded", [])))
        return q.order_by(DocumentVersion.id)
    if kind == "AuditEvent":
        q = select(AuditEntry).where(*_patient_filter(args, AuditEntry.patient_id))
        if ids:
            q = q.where(AuditEntry.id.in_(ids))
        for v in args.get("action", []):
            q = q.where(AuditEntry.action.in_(v.split(",")))
        q = q.where(*fp.iso_string_clauses(AuditEntry.at, args.get("date", [])))
        return q.order_by(AuditEntry.id.desc())
    raise FhirError(f"unsupported resource type {kind}", 404, "not-supported")


_BUILDERS: dict[str, Callable[[Ctx, Any], dict[str, Any]]] = {
    "Patient": patient_resource,
    "Encounter": encounter_resource,
    "ServiceRequest": service_request_resource,
    "ImagingStudy": imaging_study_resource,
    "DiagnosticReport": diagnostic_report_resource,
    "DocumentReference": document_reference_resource,
    "Provenance": provenance_resource,
    "AuditEvent": audit_event_resource,
}


def _patient_of(kind: str, obj: Any, session: Session) -> int | None:
    if kind == "Patient":
        return int(obj.id)
    if kind == "Provenance":
        d = session.get(Document, obj.document_id)
        return d.patient_id if d else None
    return getattr(obj, "patient_id", None)


def _max_time(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _last_updated(kind: str, obj: Any, session: Session) -> datetime | None:
    """The last time the row behind a resource changed (naive UTC), as far as the EMR records it."""
    if kind == "Patient":
        return _max_time(obj.updated_at, obj.created_at)
    if kind == "Encounter":
        return _max_time(obj.created_at, obj.inpatient_at, obj.discharged_at, obj.closed_at)
    if kind == "ServiceRequest":
        return _max_time(obj.ordered_at, obj.performed_at, obj.result_at)
    if kind in ("DiagnosticReport", "DocumentReference"):
        return _max_time(obj.created_at, obj.cancelled_at, *(v.created_at for v in obj.versions),
                         *(v.signed_at for v in obj.versions))  # fmt: skip
    if kind == "ImagingStudy":
        return _max_time(obj.first_seen_at, obj.linked_at)
    if kind == "Provenance":
        return _max_time(obj.signed_at)
    if kind == "AuditEvent":
        return datetime.fromisoformat(obj.at.replace("Z", "+00:00")).replace(tzinfo=None)
    return _max_time(getattr(obj, "updated_at", None), getattr(obj, "created_at", None))


def _with_meta(resource: dict[str, Any], updated: datetime | None) -> dict[str, Any]:
    """meta.versionId: a digest of the content (changes whenever the resource does); meta.lastUpdated."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = digest
    if updated is not None:
        meta["lastUpdated"] = (updated + LOCAL_OFFSET).strftime("%Y-%m-%dT%H:%M:%S+07:00")
    return {**resource, "meta": meta}


def search_resources(
    session: Session,
    kind: str,
    args: dict[str, list[str]],
    *,
    public_url: str,
    dicomweb_url: str,
    artifacts: ArtifactSource | None = None,
    limit: int = 50,
    offset: int = 0,
    lenient: bool = False,
) -> SearchResult:
    """Validated resources of ``kind`` matching ``args`` (FHIR search parameters), one page.

    ``lenient``: unknown parameters are ignored (``Prefer: handling=lenient``) instead of refused.
    """
    if kind not in _BUILDERS:
        raise FhirError(f"unsupported resource type {kind}", 404, "not-supported")
    ctx = Ctx(session, public_url, dicomweb_url, artifacts or NoArtifacts())
    q = _query(session, kind, args, lenient=lenient)
    from sqlalchemy import func

    total = session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = list(session.scalars(q.offset(offset).limit(limit))) if limit > 0 else []
    resources = [validated(_with_meta(_BUILDERS[kind](ctx, r), _last_updated(kind, r, session))) for r in rows]
    patients = {p for r in rows if (p := _patient_of(kind, r, session)) is not None}
    return SearchResult(resources, int(total), patients)


def read_resource(
    session: Session,
    kind: str,
    ident: str,
    *,
    public_url: str,
    dicomweb_url: str,
    artifacts: ArtifactSource | None = None,
) -> tuple[dict[str, Any], int | None]:
    """One validated resource and its patient id; :class:`FhirError` 404 when absent."""
    result = search_resources(
        session, kind, {"_id": [str(_id(ident))]}, public_url=public_url, dicomweb_url=dicomweb_url, artifacts=artifacts
    )
    if not result.resources:
        raise FhirError(f"{kind}/{ident} not found", 404, "not-found")
    return result.resources[0], next(iter(result.patient_ids), None)


def capability_statement(base_url: str) -> dict[str, Any]:
    return validated(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-23",
            "kind": "instance",
            "software": {"name": "filmless"},
            "implementation": {"description": "filmless EMR FHIR API (read, search)", "url": base_url},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {"description": "Bearer token (same tokens as /api); every access is audited"},
                    "resource": [
                        {
                            "type": kind,
                            **({"supportedProfile": [VN_PATIENT_PROFILE]} if kind == "Patient" else {}),
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "versioning": "versioned",
                            "searchParam": [
                                {
                                    "name": p,
                                    "type": "date"
                                    if p in ("date", "birthdate", "authored", "started", "recorded")
                                    else (
                                        "reference"
                                        if p in ("patient", "subject", "encounter", "based-on", "target")
                                        else ("string" if p == "name" else "token")
                                    ),
                                }
                                for p in sorted(_SEARCH_PARAMS[kind])
                            ],
                        }
                        for kind in RESOURCE_TYPES
                    ],
                }
            ],
        }
    )
