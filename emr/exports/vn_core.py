"""Every URL the FHIR exports emit: one table, the VN Core IG's canonicals and the project's own.

The HL7 Vietnam VN Core IG of the Ministry of Health (Cục Công nghệ thông tin – Bộ Y tế; github
hl7vn/vn-core-ig, CI build https://build.fhir.org/ig/hl7vn/vn-core-ig/, canonical
``http://fhir.ehealth.gov.vn/core``) as published at commit 8e6b6e0 (2025-10-23). Each IG URL below names
the file of ``input/resources/`` it is defined in; an identifier system is the ``fixedUri`` of the profile's
identifier slice (the NamingSystem resources' ``uniqueId`` agree where they exist, except provider-code, see
``facility``). Nothing is minted under the IG's base: what the IG does not define (practising certificate,
BHXH number, administrative-unit codes of 2025, the hospital's own numbers) is under :data:`OWN_BASE`.
The old draft base ``http://fhir.hl7.org.vn/core`` (drafts 0.3–0.5) is no longer emitted; its identifier
systems stay accepted in searches (:data:`LEGACY_SYSTEMS`).
"""

from __future__ import annotations

IG_BASE = "http://fhir.ehealth.gov.vn/core"
OWN_BASE = "https://filmless.vn/fhir"
_SD, _CS, _SID = f"{IG_BASE}/StructureDefinition", f"{IG_BASE}/CodeSystem", f"{IG_BASE}/sid"

IG: dict[str, str] = {
    # -- profiles claimed in meta.profile (the IG has no Bundle, Composition, DocumentReference or
    # Provenance profile: those resources claim none)
    "patient_profile": f"{_SD}/vn-core-patient",  # StructureDefinition.VN-Core.Patient_v1.0.0.xml
    "encounter_profile": f"{_SD}/vn-core-encounter",  # StructureDefinition.VN-Core.Encounter_v1.0.0.xml
    # StructureDefinition.VN-Core.Condition-Encounter-Diagnosis_v1.0.0.xml
    "condition_diagnosis_profile": f"{_SD}/vn-core-condition-encounter-diagnosis",
    # -- extensions (VNCorePatient's slices; VNCoreAddress's addressExtension)
    "ext_race": f"{_SD}/extension-race",  # StructureDefinition.VN-Core.Extension-Race_v1.0.0.xml
    "ext_occupation": f"{_SD}/extension-occupation",  # StructureDefinition.VN-Core.Extension-Occupation_v1.0.0.xml
    "ext_ethic": f"{_SD}/extension-ethic",  # StructureDefinition.VN-Core.Extension-Ethic_v1.0.0.xml
    # StructureDefinition.VN-Core.Extension-AdministrativeAddress_v1.0.0.xml (sub-extensions state, ward, ...)
    "ext_address": f"{_SD}/extension-administrative-address",
    # -- code systems
    "cs_race": f"{_CS}/vn-core-race",  # CodeSystem-vn-core-race-v1.0.xml
    "cs_ethic": f"{_CS}/vn-core-ethic",  # CodeSystem-vn-core-ethic-v1.0.xml
    # -- identifier systems (VNCorePatient slices TheCCCD, TheBHYT, MaBenhNhan; VNCoreEncounter MaDotThamKham;
    # VNCoreProvider MaCSKCB)
    # StructureDefinition.VN-Core.Patient_v1.0.0.xml, slices TheCCCD, TheBHYT, MaBenhNhan (and the uniqueId of
    # NamingSystem.sid-national-id.xml, NamingSystem.sid-insurance_number.xml, NamingSystem.sid-patient-internal-id.xml)
    "cccd": f"{_SID}/national_id",
    "bhyt": f"{_SID}/insurance_number",
    "patient": f"{_SID}/patient-internal-id",
    "visit": f"{_SID}/VisitNumber",  # StructureDefinition.VN-Core.Encounter_v1.0.0.xml MaDotThamKham
    # StructureDefinition.VN-Core.Provider_v1.0.0.xml MaCSKCB (NamingSystem.sid-provider-code.xml has the
    # uniqueId of the medical licence, .../sid/provider-medical-license-number: the profile's fixedUri is used)
    "facility": f"{_SID}/provider-code",
}

# Identifier type codes the IG fixes on those slices (v2-0203; the IG's types, not a code system of its own).
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ID_TYPE: dict[str, tuple[str, str]] = {
    "cccd": ("NI", "National unique individual identifier"),  # TheCCCD
    "bhyt": ("SB", "Social Beneficiary Identifier"),  # TheBHYT
    "patient": ("PI", "Patient internal identifier"),  # MaBenhNhan
    "visit": ("VN", "Visit number"),  # MaDotThamKham
    "facility": ("PRN", "Provider number"),  # MaCSKCB
}
# Identifier.use the IG fixes on the slice.
ID_USE = {"cccd": "official", "bhyt": "official", "patient": "secondary", "visit": "official", "facility": "secondary"}

# The project's own systems: things the IG defines none for.
OWN: dict[str, str] = {
    "cchn": f"{OWN_BASE}/sid/cchn",  # practising certificate (VNCorePractitioner slices only an employee number)
    "bhxh": f"{OWN_BASE}/sid/bhxh",  # social-insurance number (10 digits); the IG has only the BHYT card
    "record": f"{OWN_BASE}/sid/ma-hsba",  # MA_HSBA
    "accession": f"{OWN_BASE}/sid/accession",  # DICOM Accession Number
    "procedure": f"{OWN_BASE}/sid/ma-dich-vu",  # MA_DICH_VU
    "document": f"{OWN_BASE}/sid/so-phieu",  # document number "<id>-v<version>"
    "visit_summary": f"{OWN_BASE}/sid/tom-tat",  # a visit's summary document (Composition), numbered by MA_LK
    "audit_action": f"{OWN_BASE}/sid/audit-action",
    "form_type": f"{OWN_BASE}/CodeSystem/loai-phieu",  # the EMR's form types (FORM_TYPES)
    "signer_capacity": f"{OWN_BASE}/CodeSystem/tu-cach-ky",  # head / deputy / acting head of department
    # Province and ward codes after the 1 July 2025 reorganisation: the IG's vn-core-administrative-address
    # (CodeSystem-vn-core-administrative-address-v1.0.xml) is dated 2020-12-31, has districts and no content.
    "admin_unit": f"{OWN_BASE}/CodeSystem/don-vi-hanh-chinh-2025",
}

# Identifier systems emitted before, still accepted in searches: old → current.
LEGACY_SYSTEMS: dict[str, str] = {
    "http://fhir.hl7.org.vn/core/sid/cccd": IG["cccd"],
    "http://fhir.hl7.org.vn/core/sid/bhyt": IG["bhyt"],
    "http://fhir.hl7.org.vn/core/sid/bhxh": OWN["bhxh"],
    "http://fhir.hl7.org.vn/core/sid/cchn": OWN["cchn"],
    "http://fhir.hl7.org.vn/core/sid/ma-lk": IG["visit"],
    f"{OWN_BASE}/sid/cccd": IG["cccd"],
    f"{OWN_BASE}/sid/bhyt": IG["bhyt"],
    f"{OWN_BASE}/sid/ma-lk": IG["visit"],
    f"{OWN_BASE}/sid/ma-bn": IG["patient"],
}
