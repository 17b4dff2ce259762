"""Input and output schemas (pydantic v2), shared by the API, the web forms and OpenAPI.

The same classes validate requests and generate ``/api/openapi.json``, so the
documented contract cannot drift from what the server accepts.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "PatientIn",
    "PatientOut",
    "PatientSearchQuery",
    "MergeIn",
    "EncounterIn",
    "BenefitLevelIn",
    "EncounterOut",
    "DocumentIn",
    "DocumentVersionIn",
    "DraftIn",
    "DocumentOut",
    "DocumentVersionOut",
    "ReasonIn",
    "OrderIn",
    "OrderOut",
    "StudyOut",
    "LinkIn",
    "ErrorOut",
    "FORM_CONTENT",
    "Page",
    "PatientPage",
    "OrderPage",
    "StudyPage",
    "EncounterPage",
]

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9.\-_]{1,20}$")]
Sha256 = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9A-Fa-f]{64}$", to_lower=True)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PatientIn(_In):
    full_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200)]
    birth_date: date
    birth_year_only: bool = False
    sex: Literal["M", "F", "O"]
    cccd: Annotated[str, StringConstraints(strip_whitespace=True, max_length=20)] | None = None
    bhyt_number: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=20)] | None = None
    bhyt_valid_from: date | None = None
    bhyt_valid_to: date | None = None
    bhyt_registered_facility: Annotated[str, StringConstraints(pattern=r"^\d{5}$")] | None = None
    address: Annotated[str, StringConstraints(max_length=500)] | None = None
    province_code: Annotated[str, StringConstraints(pattern=r"^\d{2,3}$")] | None = None
    district_code: Annotated[str, StringConstraints(pattern=r"^\d{3}$")] | None = None
    ward_code: Annotated[str, StringConstraints(pattern=r"^\d{5}$")] | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?\d{8,14}$")] | None = None
    ethnicity_code: Annotated[str, StringConstraints(pattern=r"^\d{2}$")] = "01"
    nationality_code: Annotated[str, StringConstraints(pattern=r"^\d{3}$")] = "000"
    occupation_code: Annotated[str, StringConstraints(pattern=r"^\d{1,5}$")] | None = None
    blood_type: Annotated[str, StringConstraints(max_length=10)] | None = None
    # HoSoBenhAn / XML7-XML8 (issue 14)
    religion_code: Annotated[str, StringConstraints(pattern=r"^\d{2}$")] | None = None  # GSO QĐ 1019/QĐ-TCTK
    health_id: Annotated[str, StringConstraints(pattern=r"^\d{10}$")] | None = None
    father_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None = None
    mother_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None = None
    guardian_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None = None
    # Registering: a patient with the same name, birth date and sex is already on file and this is
    # another person (without it such a registration is refused with 409 possible_duplicate).
    confirm_new_person: bool = False


class PatientOut(_Out):
    id: int
    code: str
    full_name: str
    birth_date: date
    birth_year_only: bool
    sex: str
    cccd: str | None
    bhyt_number: str | None
    bhyt_valid_from: date | None
    bhyt_valid_to: date | None
    bhyt_registered_facility: str | None
    address: str | None
    province_code: str | None
    phone: str | None
    status: str
    merged_into_id: int | None


class PatientSearchQuery(_In):
    q: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    limit: int = Field(20, ge=1, le=100)


class MergeIn(_In):
    source_id: int = Field(ge=1, le=2**31)
    target_id: int = Field(ge=1, le=2**31)
    reason: Required


class EncounterIn(_In):
    patient_id: int = Field(ge=1, le=2**31)
    kind: Literal["outpatient", "inpatient", "emergency"]
    department_code: Code
    attending_username: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    reason: Text | None = None
    admission_diagnosis: Text | None = None
    diagnoses: list[Code] = Field(default_factory=list, max_length=20)
    record_type: Literal["ordinary", "psychiatric", "occupational", "traffic_accident", "death", "incident"] = (
        "ordinary"
    )
    insurance_object: Annotated[str, StringConstraints(pattern=r"^\d{1,4}$")] | None = None
    # MUC_HUONG (%) after checking the card: 100, 95 or 80; another value needs benefit_level_note.
    benefit_level: int | None = Field(None, ge=1, le=100)
    benefit_level_note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class BenefitLevelIn(_In):
    benefit_level: int | None = Field(None, ge=1, le=100)
    benefit_level_note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class EncounterOut(_Out):
    id: int
    patient_id: int
    visit_code: str
    kind: str
    department_code: str
    attending: str
    status: str
    admitted_at: datetime
    discharged_at: datetime | None
    reason: str | None
    admission_diagnosis: str | None
    diagnoses: list[str]
    record_type: str
    benefit_level: int | None = None
    benefit_level_note: str | None = None


# -- document content, one model per form type ------------------------------
class OutpatientRecordContent(_In):
    chief_complaint: Required
    history: Text = ""
    examination: Required
    conclusion: Required
    treatment_plan: Text = ""


class ProgressNoteContent(_In):
    note: Required
    stage: Text = ""  # GIAI_DOAN_BENH
    consultation: Text = ""  # HOI_CHAN
    surgery: Text = ""  # PHAU_THUAT


_ICD10 = re.compile(r"[A-Z]\d{2}(\.\d{1,2})?")
_ICD10_SEPARATORS = re.compile(r"[;,\s]+")


def _icd10_codes(value: Any) -> Any:
    """ICD-10 codes as typed (``s06.0``, `` r51; i10``): upper case, split on ``;``, ``,`` or spaces.

    A code that is no ICD-10 code at all is refused naming it (``errors.field_icd10``), not with the
    bare "Sai định dạng."; whether a well-formed code is in the catalogue is decided elsewhere.
    Anything but a string is returned as it is, for the field's type check to report."""
    if not isinstance(value, str):
        return value
    codes = [c.upper() for c in _ICD10_SEPARATORS.split(value) if c]
    bad = [c for c in codes if not _ICD10.fullmatch(c)]
    if bad:
        named = ", ".join(c[:16] for c in bad[:5]) + (", …" if len(bad) > 5 else "")  # what was typed, not a page of it
        raise PydanticCustomError("icd10_format", "not an ICD-10 code: {codes}", {"codes": named})
    return codes


def _one_icd10_code(value: Any) -> Any:
    """One ICD-10 code as typed (upper case), "" when none; several are refused naming them."""
    codes = _icd10_codes(value)
    if not isinstance(codes, list):
        return codes
    if len(codes) > 1:  # one diagnosis, one code
        raise PydanticCustomError("icd10_one", "one ICD-10 code expected: {codes}", {"codes": ", ".join(codes)})
    return codes[0] if codes else ""


class AdmissionNoteContent(_In):
    reason: Required
    history: Text = ""
    examination: Required
    initial_diagnosis: Required
    # The admitting doctor's own ICD-10 code for the initial diagnosis (optional): the only code an admission
    # diagnosis is given in FHIR (Encounter.diagnosis AD), never the visit's main code (emr.exports.fhir).
    initial_diagnosis_code: Annotated[str, StringConstraints(strip_whitespace=True)] = ""
    plan: Text = ""

    @field_validator("initial_diagnosis_code", mode="before")
    @classmethod
    def _initial_code(cls, value: Any) -> Any:
        return _one_icd10_code(value)


class DiagnosisContent(_In):
    main_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # MA_BENH_CHINH
    main_text: Required
    secondary_codes: Annotated[str, StringConstraints(strip_whitespace=True)] = ""  # MA_BENH_KT, joined by ';'
    secondary_text: Text = ""

    @field_validator("main_code", mode="before")
    @classmethod
    def _main_code(cls, value: Any) -> Any:
        return _one_icd10_code(value)

    @field_validator("secondary_codes", mode="before")
    @classmethod
    def _secondary_codes(cls, value: Any) -> Any:
        codes = _icd10_codes(value)
        return ";".join(codes) if isinstance(codes, list) else codes


class DischargeSummaryContent(_In):
    summary: Required  # QT_BENHLY (disease course and clinical progress)
    discharge_diagnosis: Required
    treatment: Required  # PP_DIEU_TRI / PP_DIEUTRI (treatment method)
    result: Literal["1", "2", "3", "4", "5", "6", "7"]  # KET_QUA_DTRI
    follow_up: Text = ""
    # XML8 (record summary) and XML7 (discharge paper), issue 14
    test_results: Text = ""  # TOMTAT_KQ
    doctor_advice: Text = ""  # GHI_CHU (lời dặn của bác sĩ)
    storage_number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""  # SO_LUU_TRU


class RadiologyReportContent(_In):
    technique: Text = ""
    findings: Required  # MO_TA
    conclusion: Required  # KET_LUAN
    recommendation: Text = ""


FORM_CONTENT: dict[str, type[_In]] = {
    "outpatient_record": OutpatientRecordContent,
    "admission_note": AdmissionNoteContent,
    "progress_note": ProgressNoteContent,
    "diagnosis": DiagnosisContent,
    "discharge_summary": DischargeSummaryContent,
    "radiology_report": RadiologyReportContent,
}


class DocumentIn(_In):
    encounter_id: int = Field(ge=1, le=2**31)
    form_type: Literal[
        "outpatient_record", "admission_note", "progress_note", "diagnosis", "discharge_summary", "radiology_report"
    ]
    order_id: int | None = Field(None, ge=1, le=2**31)
    content: dict[str, Any]


class DocumentVersionIn(_In):
    content: dict[str, Any]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class DraftIn(DocumentVersionIn):
    """A draft edit. ``base_sha256``: the ``content_sha256`` of the current version as the client read it
    (``GET /api/documents/{id}``); when another save changed the draft since, 409 ``document_changed`` and
    nothing is written. Optional for clients written before it existed (the last save wins for them)."""

    base_sha256: Sha256 | None = Field(None, description="content_sha256 of the draft the change was made on")


class ReasonIn(_In):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class DocumentVersionOut(_Out):
    number: int
    status: str
    content: dict[str, Any]
    content_sha256: str
    amends_version: int | None
    amendment_reason: str | None
    created_at: datetime
    signed_at: datetime | None


class DocumentOut(_Out):
    id: int
    patient_id: int
    encounter_id: int
    order_id: int | None
    form_type: str
    status: str
    current_version: int
    retention_class: str
    cancel_reason: str | None
    versions: list[DocumentVersionOut]


class OrderIn(_In):
    patient_id: int = Field(ge=1, le=2**31)
    encounter_id: int | None = Field(None, ge=1, le=2**31)
    modality: Literal["CT", "MR", "CR", "DX", "US", "MG", "XA", "NM", "PT", "RF"]
    procedure_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=200)]
    procedure_code: Code | None = None
    body_part: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    urgency: Literal["routine", "urgent", "stat"] = "routine"
    clinical_info: Text | None = None
    scheduled_at: datetime | None = None
    station_ae_title: str | None = None

    @field_validator("station_ae_title")
    @classmethod
    def _station(cls, value: str | None) -> str | None:
        # PS3.5 §6.2, VR AE: at most 16 characters of the default repertoire (printable ASCII) without the
        # backslash and without control characters; leading and trailing spaces are not significant (stripped
        # here) and a value of spaces only shall not be used. Matched as typed against the modality's query.
        if value is not None and not re.fullmatch(r"[ -\[\]-~]{1,16}", value):
            raise PydanticCustomError("ae_title", "not a DICOM AE title: {value}", {"value": value[:40]})
        return value


class StudyOut(_Out):
    id: int
    orthanc_id: str
    study_instance_uid: str
    accession_number: str | None
    dicom_patient_id: str | None
    dicom_patient_name: str | None
    study_date: str | None
    modalities: str | None
    description: str | None
    order_id: int | None
    patient_id: int | None
    state: str
    link_method: str | None
    viewer_url: str


class OrderOut(_Out):
    id: int
    patient_id: int
    encounter_id: int | None
    accession_number: str
    study_instance_uid: str
    modality: str
    procedure_name: str
    procedure_code: str | None
    body_part: str | None
    urgency: str
    clinical_info: str | None
    status: str
    station_ae_title: str | None
    ordered_at: datetime
    scheduled_at: datetime
    ordered_by: str
    price_hospital: Decimal | None = None  # the catalogue price copied when the order was placed (VND)
    price_insurance: Decimal | None = None  # None: not covered by BHYT (or no catalogue entry)
    price_unit: str | None = None
    studies: list[StudyOut]


class LinkIn(_In):
    order_id: int = Field(ge=1, le=2**31)
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""
    # Required when the study's modality or date disagrees with the order (422 otherwise).
    acknowledge_mismatch: bool = False


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable code: validation_failed, not_found, conflict, ...")
    message: str
    fields: dict[str, str] = Field(default_factory=dict, description="field → catalogue key")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="field → values of its message's {placeholders}, where it has some"
    )
    duplicates: list[dict[str, Any]] = Field(
        default_factory=list,
        description="possible_duplicate: the patients on file ({id, code}) with the same name, birth date and sex; "
        "send again with confirm_new_person=true if this is another person",
    )
    document: dict[str, Any] | None = Field(
        None,
        description="document_changed: the document ({id, current_version}) another save changed since it was read "
        "(base_sha256 or base_version no longer current); read it again and make the change on its current text",
    )


class Page(BaseModel):
    total: int | None = None


class PatientPage(Page):
    items: list[PatientOut]


class EncounterPage(Page):
    items: list[EncounterOut]


class OrderPage(Page):
    items: list[OrderOut]


class StudyPage(Page):
    items: list[StudyOut]
