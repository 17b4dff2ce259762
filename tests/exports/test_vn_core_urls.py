"""Every ``http://fhir.ehealth.gov.vn/core/...`` URL the exports can emit is one the VN Core IG defines.

:data:`IG_DEFINED` is written from the IG's own files (github hl7vn/vn-core-ig, ``input/resources/`` at
commit 8e6b6e0, 2025-10-23), independently of :mod:`emr.exports.vn_core`: a typo there, or a canonical
invented under the Ministry's base, fails here. The old draft base ``http://fhir.hl7.org.vn/core`` is never
emitted, and no exporter writes a FHIR URL outside the one table.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.exports.fhir import RESOURCE_TYPES

from .conftest import InpatientVisit, make_inpatient_visit

IG_BASE = "http://fhir.ehealth.gov.vn/core"
OLD_BASE = "http://fhir.hl7.org.vn/core"
IG_DEFINED = {
    # StructureDefinition.VN-Core.Patient_v1.0.0.xml: url; identifier slices TheCCCD, TheBHYT, MaBenhNhan
    f"{IG_BASE}/StructureDefinition/vn-core-patient",
    f"{IG_BASE}/sid/national_id",  # also NamingSystem.sid-national-id.xml uniqueId
    f"{IG_BASE}/sid/insurance_number",  # also NamingSystem.sid-insurance_number.xml uniqueId
    f"{IG_BASE}/sid/patient-internal-id",  # also NamingSystem.sid-patient-internal-id.xml uniqueId
    # StructureDefinition.VN-Core.Encounter_v1.0.0.xml: url; identifier slice MaDotThamKham
    f"{IG_BASE}/StructureDefinition/vn-core-encounter",
    f"{IG_BASE}/sid/VisitNumber",
    # StructureDefinition.VN-Core.Condition-Encounter-Diagnosis_v1.0.0.xml: url
    f"{IG_BASE}/StructureDefinition/vn-core-condition-encounter-diagnosis",
    # StructureDefinition.VN-Core.Provider_v1.0.0.xml: identifier slice MaCSKCB
    f"{IG_BASE}/sid/provider-code",
    f"{IG_BASE}/StructureDefinition/extension-race",  # StructureDefinition.VN-Core.Extension-Race_v1.0.0.xml
    f"{IG_BASE}/StructureDefinition/extension-occupation",  # ...Extension-Occupation_v1.0.0.xml
    f"{IG_BASE}/StructureDefinition/extension-ethic",  # ...Extension-Ethic_v1.0.0.xml
    f"{IG_BASE}/StructureDefinition/extension-administrative-address",  # ...Extension-AdministrativeAddress_v1.0.0.xml
    f"{IG_BASE}/CodeSystem/vn-core-race",  # CodeSystem-vn-core-race-v1.0.xml
    f"{IG_BASE}/CodeSystem/vn-core-ethic",  # CodeSystem-vn-core-ethic-v1.0.xml
}
_EXPORTERS = ("emr/exports", "emr/ehr", "emr/fhir")
_ROOT = Path(__file__).resolve().parents[2]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_the_url_table_names_only_what_the_ig_defines() -> None:
    from emr.exports import vn_core

    assert vn_core.IG_BASE == IG_BASE
    assert set(vn_core.IG.values()) <= IG_DEFINED, set(vn_core.IG.values()) - IG_DEFINED
    for url in [*vn_core.OWN.values(), *vn_core.LEGACY_SYSTEMS.values()]:
        assert url in IG_DEFINED or not url.startswith((IG_BASE, OLD_BASE)), url  # nothing minted there
    assert all(url.startswith(vn_core.OWN_BASE + "/") for url in vn_core.OWN.values())


def test_no_exporter_writes_a_fhir_url_outside_the_table() -> None:
    """String constants (docstrings aside) naming either VN Core base live only in emr/exports/vn_core.py."""
    scattered = []
    for folder in _EXPORTERS:
        for path in sorted((_ROOT / folder).rglob("*.py")):
            if path.name == "vn_core.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(n.body[0].value)
                for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                and n.body
                and isinstance(n.body[0], ast.Expr)
                and isinstance(n.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and ("fhir.ehealth.gov.vn" in node.value or "fhir.hl7.org.vn" in node.value)
                ):
                    scattered.append(f"{path.relative_to(_ROOT)}:{node.lineno}")
    assert scattered == []


@pytest.fixture
def inpatient(session: Session, world: Any) -> InpatientVisit:
    return make_inpatient_visit(session, world)


def test_every_emitted_vn_core_url_is_defined_by_the_ig(
    client: FlaskClient, tokens: dict[str, str], inpatient: InpatientVisit, session: Session, settings: Any
) -> None:
    """What the API serves and what is pushed to the health record, for a visit with every field filled."""
    from emr.ehr.bundle import report_bundle, visit_bundle

    pid = inpatient.visit.patient.id
    emitted: list[Any] = []
    for kind in RESOURCE_TYPES:  # every resource type the API serves
        query = f"_id={pid}" if kind == "Patient" else f"patient={pid}"
        token = tokens["admin"] if kind == "AuditEvent" else tokens["physician"]
        r = client.get(f"/fhir/{kind}?{query}&_count=200", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.get_json().get("entry"), kind
        emitted.append(r.get_json())
    r = client.get("/fhir/metadata", headers={"Authorization": f"Bearer {tokens['physician']}"})
    emitted.append(r.get_json())
    facility = dataclasses.replace(settings, facility_code="79001")
    visit = visit_bundle(session, facility, inpatient.visit.encounter.id).bundle
    emitted += [visit, report_bundle(session, facility, inpatient.visit.report.id).bundle]

    found = {s for s in _strings(emitted) if "fhir.ehealth.gov.vn" in s or "fhir.hl7.org.vn" in s}
    assert found - IG_DEFINED == set()
    # the patient, the visit, the diagnoses, the address and the facility use them (the test sees them all)
    assert found == IG_DEFINED
    [custodian] = [e["resource"]["custodian"] for e in visit["entry"][:1]]
    assert custodian["identifier"]["system"] == f"{IG_BASE}/sid/provider-code"
    assert custodian["identifier"]["value"] == "79001"
    # the IG has no Bundle or Composition profile: none is claimed
    assert "meta" not in visit and "meta" not in visit["entry"][0]["resource"]
