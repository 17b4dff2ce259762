"""HL7 Vietnam VN Core IG constraints, written as tests (no IG-aware validator installs here).

Every resource the API serves is first validated by ``fhir.resources``; the VN Core rules are then
checked element by element. Source: the Ministry's VN Core IG (github hl7vn/vn-core-ig, canonical
http://fhir.ehealth.gov.vn/core, input/resources/ at commit 8e6b6e0): StructureDefinition vn-core-patient
(identifier slices TheCCCD, TheBHYT, MaBenhNhan with fixed system, use and type; extension slices
patientRaceExtension, patientOccupationExtenstion, patientEthicExtension; address = vn-core-address with
extension-administrative-address), vn-core-encounter (identifier slice MaDotThamKham; diagnosis slices by
DiagnosisRole, ChiefComplaint 1..1), vn-core-condition-encounter-diagnosis, CodeSystems vn-core-race and
vn-core-ethic. What the IG defines no system for (practising certificate, BHXH number) is under
https://filmless.vn/fhir.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.exports.fhir import RESOURCE_TYPES

from .conftest import InpatientVisit, make_inpatient_visit, make_visit

VN_CORE = "http://fhir.ehealth.gov.vn/core"  # canonical of the Ministry's IG, github hl7vn/vn-core-ig
PROFILE = f"{VN_CORE}/StructureDefinition/vn-core-patient"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OWN = "https://filmless.vn/fhir"  # the project's systems, for what the IG does not define
BHYT_FORMATS = re.compile(r"[A-Z]{2}\d{13}|\d{10}|\d{12}")  # legacy card, BHXH number, CCCD (NĐ 188/2025)


def _get(client: FlaskClient, url: str, token: str) -> dict[str, Any]:
    r = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    body = r.get_json()
    get_fhir_model_class(body["resourceType"]).model_validate(body)  # R4 structure first
    return body


def _slice(patient: dict[str, Any], system: str) -> dict[str, Any] | None:
    return next((i for i in patient.get("identifier", []) if i.get("system") == system), None)


def _ext(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in resource.get("extension", []) if e["url"] == url), None)


@pytest.fixture
def inpatient(session: Session, world: Any) -> InpatientVisit:
    return make_inpatient_visit(session, world)


def test_vn_core_patient(client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit) -> None:
    p = _get(client, f"/fhir/Patient/{inpatient.visit.patient.id}", tokens["physician"])
    assert PROFILE in p["meta"]["profile"]  # Patient.meta.profile
    # Patient.identifier:TheCCCD — fixed system national_id, use official, type v2-0203 NI exactly
    cccd = _slice(p, f"{VN_CORE}/sid/national_id")
    assert cccd is not None and re.fullmatch(r"\d{12}", cccd["value"]) and cccd["use"] == "official"
    assert cccd["type"] == {
        "coding": [{"system": V2_0203, "code": "NI", "display": "National unique individual identifier"}]
    }
    # Patient.identifier:TheBHYT — insurance_number, official, SB; card validity as period
    bhyt = _slice(p, f"{VN_CORE}/sid/insurance_number")
    assert bhyt is not None and BHYT_FORMATS.fullmatch(bhyt["value"]) and bhyt["use"] == "official"
    assert bhyt["type"] == {"coding": [{"system": V2_0203, "code": "SB", "display": "Social Beneficiary Identifier"}]}
    assert bhyt["period"]["end"] == "2026-12-31"
    # BHXH number (no IG slice: the project's system) — the 10 digits inside the legacy card
    bhxh = _slice(p, f"{OWN}/sid/bhxh")
    assert bhxh is not None and re.fullmatch(r"\d{10}", bhxh["value"]) and bhyt["value"].endswith(bhxh["value"])
    # Patient.identifier:MaBenhNhan — patient-internal-id, secondary, PI
    mrn = _slice(p, f"{VN_CORE}/sid/patient-internal-id")
    assert mrn is not None and mrn["use"] == "secondary" and mrn["value"] == inpatient.visit.patient.code
    assert mrn["type"] == {"coding": [{"system": V2_0203, "code": "PI", "display": "Patient internal identifier"}]}
    # Patient.extension:patientRaceExtension / patientOccupationExtenstion / patientEthicExtension (the Ministry's
    # IG, github hl7vn/vn-core-ig): CodeableConcepts bound to vn-core-race, vn-core-occupation, vn-core-ethic
    eth = _ext(p, f"{VN_CORE}/StructureDefinition/extension-race")
    assert eth is not None and eth["valueCodeableConcept"] == {
        "coding": [{"system": f"{VN_CORE}/CodeSystem/vn-core-race", "code": "01", "display": "Kinh"}],
        "text": "Kinh (01)",
    }
    occ = _ext(p, f"{VN_CORE}/StructureDefinition/extension-occupation")
    # no occupation list loaded, and none the IG publishes for MA_NGHE_NGHIEP: a text, no coding
    assert occ is not None and occ["valueCodeableConcept"] == {"text": "mã 00001 (chưa có danh mục)"}
    rel = _ext(p, f"{VN_CORE}/StructureDefinition/extension-ethic")
    assert rel is not None and rel["valueCodeableConcept"] == {  # GSO 01 Phật giáo is vn-core-ethic 1
        "coding": [{"system": f"{VN_CORE}/CodeSystem/vn-core-ethic", "code": "1", "display": "Phật Giáo"}],
        "text": "Phật giáo (01)",
    }
    assert len(p["extension"]) == 3
    for url in ("vn-ethnicity-cs", "vn-occupation-cs", "vn-religion-cs", "patient-religion", "vn-ext-ethnicity"):
        assert url not in str(p)  # URLs the IG does not define
    # Patient.address (vn-core-address): text 1..1, addressExtension = extension-administrative-address with
    # state and ward (CodeableConcepts; binding extensible — the 2025 units are coded in the project's list)
    [addr] = p["address"]
    assert addr["text"]
    parts = _ext(addr, f"{VN_CORE}/StructureDefinition/extension-administrative-address")
    assert parts is not None and not any(k.startswith("value") for k in parts)  # complex: value[x] 0..0
    codes = {x["url"]: x["valueCodeableConcept"]["coding"][0] for x in parts["extension"]}
    assert codes["ward"] == {"system": f"{OWN}/CodeSystem/don-vi-hanh-chinh-2025", "code": "26734"}
    assert set(codes) <= {"state", "ward"} and re.fullmatch(r"\d{2}", codes.get("state", {"code": "79"})["code"])
    # must-support name and gender, birthDate
    assert p["name"][0]["text"] and p["gender"] == "female" and p["birthDate"] == "1990-05-17"
    # father, mother (XML7/XML8) as contacts
    rels = {c["relationship"][0]["coding"][0]["code"]: c["name"]["text"] for c in p["contact"]}
    assert rels == {"FTH": "Nguyễn Văn Hùng", "MTH": "Trần Thị Lan"}


def test_vn_core_identifier_systems_across_resources(
    client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit
) -> None:
    tok = tokens["physician"]
    v = inpatient.visit
    enc = _get(client, f"/fhir/Encounter/{v.encounter.id}", tok)
    # MA_LK: VNCoreEncounter's MaDotThamKham slice (VisitNumber, official, v2-0203 VN); the visit has a main
    # disease, so it fills the ChiefComplaint slice (1..1) and claims the profile
    assert {
        "use": "official",
        "type": {"coding": [{"system": V2_0203, "code": "VN", "display": "Visit number"}]},
        "system": f"{VN_CORE}/sid/VisitNumber",
        "value": v.encounter.visit_code,
    } in enc["identifier"]
    assert enc["meta"]["profile"] == [f"{VN_CORE}/StructureDefinition/vn-core-encounter"]
    sr = _get(client, f"/fhir/ServiceRequest/{v.order.id}", tok)
    # practitioners by their practising certificate: the IG has no system for it (VNCorePractitioner slices
    # only an employee number), so the project's own
    assert sr["requester"]["identifier"]["system"] == f"{OWN}/sid/cchn"
    dr = _get(client, f"/fhir/DiagnosticReport/{v.report.id}", tok)
    assert dr["resultsInterpreter"][0]["identifier"]["system"] == f"{OWN}/sid/cchn"
    assert "meta" not in sr or "profile" not in sr["meta"]  # no profile claimed where conformance is unchecked


def test_every_served_resource_validates(
    client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit
) -> None:
    tok = tokens["physician"]
    pid = inpatient.visit.patient.id
    counts = {}
    for kind in RESOURCE_TYPES:  # every resource type the API serves
        query = f"_id={pid}" if kind == "Patient" else f"patient={pid}"
        bundle = _get(client, f"/fhir/{kind}?{query}&_count=200", tokens["admin"] if kind == "AuditEvent" else tok)
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert resource["meta"]["versionId"]
        counts[kind] = len(bundle.get("entry", []))
    # the admission note, the two progress notes, the first visit's note, the diagnosis, the discharge
    # paper and the radiology report are all documents; the diagnosis has its own LOINC type
    assert counts["DocumentReference"] == 7 and counts["Provenance"] == 7
    docs = _get(client, f"/fhir/DocumentReference?patient={pid}&_count=200", tok)
    codings = [e["resource"]["type"]["coding"] for e in docs["entry"]]
    types = {form["code"]: loinc["code"] for loinc, form in codings}  # form type → LOINC document type
    assert types["diagnosis"] == "29548-5" and types["discharge_summary"] == "18842-5"


def test_search_with_the_vn_core_cccd_system(
    client: FlaskClient, tokens: dict[str, str], session: Session, world: Any
) -> None:
    v = make_visit(session, world, cccd="079190008888", bhyt_number="079190008888", benefit_level=80)
    tok = tokens["physician"]
    found = _get(client, f"/fhir/Patient?identifier={VN_CORE}/sid/national_id|079190008888", tok)
    assert [e["resource"]["id"] for e in found["entry"]] == [str(v.patient.id)]
    # the CCCD used as the BHYT card (NĐ 188/2025) is found in the BHYT system too; it has no BHXH number
    found = _get(client, f"/fhir/Patient?identifier={VN_CORE}/sid/insurance_number|079190008888", tok)
    p = found["entry"][0]["resource"]
    assert _slice(p, f"{VN_CORE}/sid/insurance_number")["value"] == "079190008888"
    assert _slice(p, f"{OWN}/sid/bhxh") is None


ICD10 = "http://hl7.org/fhir/sid/icd-10"  # in ValueSet vn-core-condition-code: ICD-10 (QĐ 4469/QĐ-BYT)
ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"  # Encounter.diagnosis.use, sliced by VNCoreEncounter
# The code system's own displays (HL7 THO CodeSystem diagnosis-role 1.1.1); the Vietnamese name is the text.
ROLE_DISPLAY = {
    "AD": "Admission diagnosis",
    "DD": "Discharge diagnosis",
    "CC": "Chief complaint",
    "CM": "Comorbidity diagnosis",
}


def _roles(encounter: dict[str, Any], conditions: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(DiagnosisRole code, ICD-10 code, text) of each Encounter.diagnosis, its Condition resolved."""
    out = []
    for d in encounter["diagnosis"]:
        [coding] = d["use"]["coding"]
        assert coding["system"] == ROLE and d["use"]["text"] and "rank" not in d  # VN Core: rank 0..0 per slice
        assert coding["display"] == ROLE_DISPLAY[coding["code"]]
        c = conditions[d["condition"]["reference"]]
        [icd] = [x for x in c["code"]["coding"] if x["system"] == ICD10]
        assert c["meta"]["profile"] == [f"{VN_CORE}/StructureDefinition/vn-core-condition-encounter-diagnosis"]
        assert c["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
        out.append((coding["code"], icd["code"], c["code"]["text"]))
    return out


def test_encounter_names_its_diagnoses_and_their_roles(
    client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit, session: Session, settings: Any
) -> None:
    """Encounter.diagnosis: the admission diagnosis (the signed admission note's), the main and secondary ICD-10
    diagnoses, and the discharge diagnosis once the stay has ended — each a Condition coded in ICD-10."""
    from emr.ehr.bundle import visit_bundle
    from tests.standins.ehr import problems

    enc_id = inpatient.visit.encounter.id
    enc = _get(client, f"/fhir/Encounter/{enc_id}", tokens["physician"])
    contained = {f"#{c['id']}": c for c in enc["contained"]}  # the API serves no Condition endpoint
    expected = [
        ("AD", "J18.9", "Viêm phổi"),  # CHAN_DOAN_VAO: the signed admission note's, with the note's own code
        ("CC", "J18.9", "Viêm phổi không đặc hiệu"),  # MA_BENH_CHINH (the ICD-10 list's title)
        ("CM", "I10", "Tăng huyết áp vô căn"),  # MA_BENH_KT
        ("DD", "J18.9", "Viêm phổi không đặc hiệu"),  # the main disease at discharge
    ]
    assert _roles(enc, contained) == expected
    status = {c["id"]: c["verificationStatus"]["coding"][0]["code"] for c in enc["contained"]}
    assert status == {f"{enc_id}-vao-vien": "provisional", f"{enc_id}-1": "confirmed", f"{enc_id}-2": "confirmed"}
    assert [d["use"]["text"] for d in enc["diagnosis"]] == [
        "Chẩn đoán vào viện", "Bệnh chính", "Bệnh kèm theo", "Chẩn đoán ra viện"]

    # The document Bundle pushed to the health record: the same roles, the Conditions as entries.
    bundle = visit_bundle(session, settings, enc_id).bundle
    # what the health record checks (every reference resolves, every Condition coded in ICD-10); the fixture's
    # report was marked signed without the signing workflow, so it has no signed PDF to carry
    assert [p for p in problems(bundle) if "no signed PDF" not in p] == []
    resources = [e["resource"] for e in bundle["entry"]]
    [encounter] = [r for r in resources if r["resourceType"] == "Encounter"]
    conditions = {f"Condition/{r['id']}": r for r in resources if r["resourceType"] == "Condition"}
    assert "contained" not in encounter and _roles(encounter, conditions) == expected
    section = next(s for s in resources[0]["section"] if s["code"]["coding"][0]["code"] == "29548-5")
    assert "Chẩn đoán vào viện: J18.9 Viêm phổi" in section["text"]["div"]


def test_open_visit_without_icd10_has_no_diagnosis_to_give(
    client: FlaskClient, tokens: dict[str, str], session: Session, world: Any
) -> None:
    from emr.patients import encounters as encs

    v = make_visit(session, world, close=False, cccd="079190009999")
    enc = _get(client, f"/fhir/Encounter/{v.encounter.id}", tokens["physician"])
    # open: main and secondary, no discharge diagnosis yet; the admission diagnosis typed when the visit was
    # opened has no ICD-10 code of its own, so it is not given one (see the test below)
    assert [d["use"]["coding"][0]["code"] for d in enc["diagnosis"]] == ["CC", "CM"]
    bare = encs.create_encounter(session, world.actor("physician"), {
        "patient_id": v.patient.id, "kind": "outpatient", "department_code": world.department_code,
        "admission_diagnosis": "Đau đầu"})
    enc = _get(client, f"/fhir/Encounter/{bare.id}", tokens["physician"])
    # no ICD-10 code: no conformant Condition (VN Core requires ICD-10 on every diagnosis), so none is invented
    assert "diagnosis" not in enc and "contained" not in enc
    # and without the ChiefComplaint diagnosis (1..1 in vn-core-encounter) the Encounter claims no profile
    assert "profile" not in enc["meta"]


def test_admission_diagnosis_is_coded_only_with_the_admitting_doctors_own_code(
    client: FlaskClient, tokens: dict[str, str], session: Session, world: Any
) -> None:
    """Encounter.diagnosis AD carries the ICD-10 code written on the signed admission note, never the visit's
    main code (which may be the discharge diagnosis); without a code of its own there is no AD Condition
    (VN Core: every diagnosis Condition is coded, AdmissionDiagnosis-CDVaoVien is 0..1)."""
    from emr.documents import service as docs

    v = make_visit(session, world, close=False, cccd="079190006666")  # main code J18.9, admitted "Theo dõi viêm phổi"
    url = f"/fhir/Encounter/{v.encounter.id}"
    doctor = world.actor("physician")

    def roles() -> list[tuple[str, str, str]]:
        enc = _get(client, url, tokens["physician"])
        contained = {f"#{c['id']}": c for c in enc.get("contained", [])}
        return _roles(enc, contained)

    assert [r[0] for r in roles()] == ["CC", "CM"]  # typed at opening, uncoded: not coded J18.9 for it
    content = {"reason": "Đau đầu", "examination": "Tỉnh, không dấu thần kinh khu trú", "initial_diagnosis": "Đau đầu"}
    uncoded = docs.create_document(session, doctor, {"encounter_id": v.encounter.id, "form_type": "admission_note",
                                                     "content": content})
    docs.mark_signed(session, doctor, uncoded.id, 1)
    assert [r[0] for r in roles()] == ["CC", "CM"]  # a signed note without a code: still no coded AD
    coded = docs.create_document(session, doctor, {"encounter_id": v.encounter.id, "form_type": "admission_note",
                                                   "content": {**content, "initial_diagnosis_code": "r51"}})
    docs.mark_signed(session, doctor, coded.id, 1)
    assert roles()[0] == ("AD", "R51", "Đau đầu")  # the note's own code, not the main J18.9
    assert [r[:2] for r in roles()[1:]] == [("CC", "J18.9"), ("CM", "I10")]
    # the code is checked as on the diagnosis form: one code, in the ICD-10 list in force
    from emr.core.exceptions import ValidationFailed

    for bad in ("Z99.9", "R51; I10", "đau"):
        with pytest.raises(ValidationFailed) as refused:
            docs.create_document(session, doctor, {"encounter_id": v.encounter.id, "form_type": "admission_note",
                                                   "content": {**content, "initial_diagnosis_code": bad}})
        assert "content.initial_diagnosis_code" in refused.value.fields, bad
        session.rollback()


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        # vn-core-race is the shipped MA_DANTOC list verbatim (56 codes): coded as stored
        ("ethnicity", "55", {"coding": [("vn-core-race", "55", "Người nước ngoài")], "text": "Người nước ngoài (55)"}),
        ("ethnicity", "99", {"coding": [("vn-core-race", "99", "Không rõ")], "text": "Không rõ (99)"}),
        # GSO 2-digit → the IG's 1-digit code, only where the IG's concept is the same religion
        ("religion", "02", {"coding": [("vn-core-ethic", "2", "Công Giáo")], "text": "Công giáo (02)"}),
        ("religion", "03", {"coding": [("vn-core-ethic", "3", "Phật giáo Hòa Hảo")], "text": "Phật giáo Hoà Hảo (03)"}),
        # the IG's 4 is "Hồi giáo" defined with Cao Đài branches: ambiguous, text only; 05+ the IG does not list
        ("religion", "04", {"text": "Hồi giáo (04)"}),
        ("religion", "05", {"text": "Cao Đài (05)"}),
        ("religion", "00", {"text": "mã 00 (không có trong danh mục)"}),
        ("occupation", "00001", {"text": "mã 00001 (chưa có danh mục)"}),
    ],
)
def test_demographic_codings_follow_the_ig(
    session: Session, kind: str, code: str, expected: dict[str, Any]
) -> None:
    from emr.exports.fhir import EXT, _demographic

    ext = _demographic(session, kind, code)
    assert ext is not None and ext["url"] == EXT[kind] and ext["url"].startswith(f"{VN_CORE}/StructureDefinition/")
    want: dict[str, Any] = {"text": expected["text"]}
    if "coding" in expected:
        want = {
            "coding": [
                {"system": f"{VN_CORE}/CodeSystem/{s}", "code": c, "display": d} for s, c, d in expected["coding"]
            ],
            **want,
        }
    assert ext["valueCodeableConcept"] == want
    assert _demographic(session, kind, None) is None
