"""HL7 Vietnam VN Core IG constraints, written as tests (no IG-aware validator installs here).

Every resource the API serves is first validated by ``fhir.resources``; the VN Core rules are then
checked element by element. Sources (VN Core FHIR IG, fhir.hl7.org.vn/core, drafts 0.3–0.5):
StructureDefinition vn-core-patient (identifier slices CCCD/BHYT/MRN, extension:ethnicity,
extension:occupation, extension:religion, address = VNCoreAddress), vn-core-address (invariant
vn-addr-province, extension:province, extension:ward), NamingSystems vn-cccd-ns, vn-bhyt-ns,
vn-cchn-ns, vn-ma-lk-ns, CodeSystem vn-identifier-type-cs, vn-religion-cs.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from .conftest import InpatientVisit, make_inpatient_visit, make_visit

VN = "http://fhir.hl7.org.vn/core"
PROFILE = f"{VN}/StructureDefinition/vn-core-patient"
ID_TYPE = f"{VN}/CodeSystem/vn-identifier-type-cs"
BHYT_FORMATS = re.compile(r"[A-Z]{2}\d{13}|\d{10}|\d{12}")  # vn-bhyt-ns: legacy, BHXH number, CCCD (NĐ 188/2025)


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
    # Patient.identifier:CCCD — system vn-cccd-ns, 12 digits, type vn-identifier-type-cs#CCCD
    cccd = _slice(p, f"{VN}/sid/cccd")
    assert cccd is not None and re.fullmatch(r"\d{12}", cccd["value"])
    assert {"system": ID_TYPE, "code": "CCCD"}.items() <= cccd["type"]["coding"][0].items()
    # Patient.identifier:BHYT — system vn-bhyt-ns, one of its three formats, card validity as period
    bhyt = _slice(p, f"{VN}/sid/bhyt")
    assert bhyt is not None and BHYT_FORMATS.fullmatch(bhyt["value"])
    assert bhyt["type"]["coding"][0]["code"] == "BHYT" and bhyt["period"]["end"] == "2026-12-31"
    # BHXH number (vn-bhxh NamingSystem) — the 10 digits inside the legacy card
    bhxh = _slice(p, f"{VN}/sid/bhxh")
    assert bhxh is not None and re.fullmatch(r"\d{10}", bhxh["value"]) and bhyt["value"].endswith(bhxh["value"])
    # Patient.identifier:MRN — type v2-0203#MR
    mrn = next(i for i in p["identifier"] if i["type"]["coding"][0]["code"] == "MR")
    assert mrn["type"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert mrn["value"] == inpatient.visit.patient.code
    # Patient.extension:ethnicity (vn-ext-ethnicity, CodeableConcept), :occupation, :religion
    eth = _ext(p, f"{VN}/StructureDefinition/vn-ext-ethnicity")
    assert eth is not None and eth["valueCodeableConcept"]["coding"][0]["code"] == "01"
    occ = _ext(p, f"{VN}/StructureDefinition/vn-ext-occupation")
    assert occ is not None and occ["valueCodeableConcept"]["coding"][0]["code"] == "00001"
    rel = _ext(p, "http://hl7.org/fhir/StructureDefinition/patient-religion")
    assert rel is not None and rel["valueCodeableConcept"]["coding"][0] == {
        "system": f"{VN}/CodeSystem/vn-religion-cs",
        "code": "01",
    }
    # Patient.address (VNCoreAddress): vn-addr-province — country VN requires extension:province
    for addr in p["address"]:
        if addr.get("country") == "VN":
            assert _ext(addr, f"{VN}/StructureDefinition/vn-ext-province") is not None
        ward = _ext(addr, f"{VN}/StructureDefinition/vn-ext-ward")
        assert ward is None or re.fullmatch(r"\d{5}", ward["valueCoding"]["code"])
    assert _ext(p["address"][0], f"{VN}/StructureDefinition/vn-ext-ward")["valueCoding"]["code"] == "26734"
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
    # MA_LK: vn-ma-lk-ns
    assert {"system": f"{VN}/sid/ma-lk", "value": v.encounter.visit_code} in enc["identifier"]
    sr = _get(client, f"/fhir/ServiceRequest/{v.order.id}", tok)
    # practitioners by their practising certificate: vn-cchn-ns
    assert sr["requester"]["identifier"]["system"] == f"{VN}/sid/cchn"
    dr = _get(client, f"/fhir/DiagnosticReport/{v.report.id}", tok)
    assert dr["resultsInterpreter"][0]["identifier"]["system"] == f"{VN}/sid/cchn"


def test_every_served_resource_validates(
    client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit
) -> None:
    tok = tokens["physician"]
    pid = inpatient.visit.patient.id
    counts = {}
    for kind in (
        "Patient",
        "Encounter",
        "ServiceRequest",
        "ImagingStudy",
        "DiagnosticReport",
        "DocumentReference",
        "Provenance",
        "AuditEvent",
    ):
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
    found = _get(client, f"/fhir/Patient?identifier={VN}/sid/cccd|079190008888", tok)
    assert [e["resource"]["id"] for e in found["entry"]] == [str(v.patient.id)]
    # the CCCD used as the BHYT card (NĐ 188/2025) is found in the BHYT system too; it has no BHXH number
    found = _get(client, f"/fhir/Patient?identifier={VN}/sid/bhyt|079190008888", tok)
    p = found["entry"][0]["resource"]
    assert _slice(p, f"{VN}/sid/bhyt")["value"] == "079190008888" and _slice(p, f"{VN}/sid/bhxh") is None


ICD10 = "http://hl7.org/fhir/sid/icd-10"  # vn-condition-code-vs / vn-core-condition-code: ICD-10 (QĐ 4469/QĐ-BYT)
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
        assert c["meta"]["profile"] == [f"{VN}/StructureDefinition/vn-core-condition-diagnosis"]
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
