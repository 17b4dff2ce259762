"""QĐ 130/4750 tables: golden files, XSD, pre-submission check, envelope signature and base64."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy.orm import Session

from emr.exports import tables as tbl
from emr.exports.config import ExportConfig
from emr.exports.envelope import encode_for_submission, envelope_schema_errors, read_envelope, verify_envelope
from emr.exports.exceptions import ExportCheckFailed, ExportError
from emr.exports.facility_key import FacilityKey
from emr.exports.service import export_xml130, export_xml130_range
from emr.exports.xml130 import validate_table

from .conftest import GOLDEN, Visit

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def test_golden_tables(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    exp = export_xml130(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key)
    assert list(exp.tables) == ["XML1", "XML3", "XML4", "XML5"]
    for name, doc in exp.tables.items():
        path = GOLDEN / f"{name.lower()}.xml"
        if UPDATE:
            path.write_bytes(doc)
        assert doc == path.read_bytes(), name
        assert validate_table(name, doc) == []


def test_committed_xsds_match_the_tables() -> None:
    from emr.exports.xsd_gen import XSD_DIR, expected_files

    for name, text in expected_files().items():
        assert (XSD_DIR / name).read_text(encoding="utf-8") == text, f"run python -m emr.exports.xsd_gen ({name})"


@pytest.mark.parametrize("name", ["XML1", "XML3", "XML4", "XML5"])
def test_xsd_accepts_golden_and_rejects_broken_tables(name: str) -> None:
    doc = (GOLDEN / f"{name.lower()}.xml").read_bytes()
    assert validate_table(name, doc) == []
    root = etree.fromstring(doc)
    # element order matters: swapping two fields is refused
    row = root if name == "XML1" else root[0][0]
    assert [c.tag for c in row] == tbl.TABLES[name].names
    row[2], row[3] = row[3], row[2]
    assert validate_table(name, etree.tostring(root))
    # an empty mandatory field is refused
    root = etree.fromstring(doc)
    row = root if name == "XML1" else root[0][0]
    row.find("MA_LK").text = ""
    assert any("MA_LK" in e for e in validate_table(name, etree.tostring(root)))


def test_dates_are_local_time_in_annex_format() -> None:
    xml1 = etree.fromstring((GOLDEN / "xml1.xml").read_bytes())
    # admitted 01:30 UTC → 08:30 in Vietnam
    assert xml1.findtext("NGAY_VAO") == "202611230830"
    assert xml1.findtext("NGAY_SINH") == "199005170000"
    assert xml1.findtext("GT_THE_DEN") == "20261231"


def _xmlsec_verify(path: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(ca), str(path)], capture_output=True, text=True, timeout=60
    )


def test_envelope_verified_by_xmlsec1_and_tamper_rejected(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey, pki, tmp_path: Path
) -> None:
    exp = export_xml130(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key)
    assert envelope_schema_errors(exp.envelope) == []
    root = etree.fromstring(exp.envelope)
    sig = root.find("CHUKYDONVI/{http://www.w3.org/2000/09/xmldsig#}Signature")
    assert sig is not None, "Signature inside CHUKYDONVI"
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    assert sig.find(f"{ds}SignedInfo/{ds}SignatureMethod").get("Algorithm").endswith("rsa-sha256")
    assert sig.find(f"{ds}SignedInfo/{ds}CanonicalizationMethod").get("Algorithm") == (
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    )
    assert sig.find(f"{ds}SignedInfo/{ds}Reference").get("URI") == ""
    assert sig.find(f"{ds}KeyInfo/{ds}X509Data/{ds}X509Certificate") is not None

    good = tmp_path / "good.xml"
    good.write_bytes(exp.envelope)
    r = _xmlsec_verify(good, pki.ca_cert_path)
    assert r.returncode == 0 and "OK" in r.stdout + r.stderr, r.stderr

    # one changed character inside the signed content: MACSKCB 79001 → 79002
    bad = tmp_path / "bad.xml"
    bad.write_bytes(exp.envelope.replace(b"<MACSKCB>79001<", b"<MACSKCB>79002<", 1))
    assert bad.read_bytes() != exp.envelope
    r = _xmlsec_verify(bad, pki.ca_cert_path)
    assert r.returncode != 0
    # one changed character in the base64 of a table
    text = exp.envelope.decode()
    i = text.index("<NOIDUNGFILE>") + len("<NOIDUNGFILE>") + 10
    swapped = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
    bad.write_text(swapped, encoding="utf-8")
    assert _xmlsec_verify(bad, pki.ca_cert_path).returncode != 0

    # the same checks through signxml
    verified = verify_envelope(exp.envelope, ca_pem_file=pki.ca_cert_path)
    assert verified.facility_code == "79001"
    with pytest.raises(ExportError):
        verify_envelope(swapped.encode(), ca_pem_file=pki.ca_cert_path)


def test_base64_round_trip(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    exp = export_xml130(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key)
    _root, tables = read_envelope(exp.envelope)
    assert tables == exp.tables
    assert [k for k in tables] == ["XML1", "XML3", "XML4", "XML5"]
    for name, doc in tables.items():
        assert doc == (GOLDEN / f"{name.lower()}.xml").read_bytes()
    # the whole envelope base64-encoded again for submission decodes to the same bytes
    assert base64.b64decode(encode_for_submission(exp.envelope)) == exp.envelope


def test_missing_fields_give_per_field_list_and_no_file(
    session: Session, world, export_config: ExportConfig, facility_key: FacilityKey, tmp_path: Path
) -> None:
    from .conftest import make_visit

    v = make_visit(session, world, bhyt_number=None, bhyt_valid_from=None, bhyt_valid_to=None, ward_code=None)
    v.order.procedure_code = None
    session.commit()
    incomplete = ExportConfig(facility_code="79001", public_url="http://x", head_code=None, device_codes={})
    out = tmp_path / "out"
    result = export_xml130_range(session, world.actor("records_clerk"), [v.encounter.id], incomplete, facility_key, out)
    assert result.written == []
    assert not out.exists() or list(out.iterdir()) == []
    problems = result.failed[v.encounter.visit_code]
    fields = {(p.table, p.field) for p in problems}
    assert {
        ("XML1", "MA_THE_BHYT"),
        ("XML1", "GT_THE_TU"),
        ("XML1", "GT_THE_DEN"),
        ("XML1", "MAXA_CU_TRU"),
        ("XML1", "MA_TTDV"),
        ("XML3", "MA_DICH_VU"),
        ("XML3", "MA_MAY"),
        ("XML4", "MA_DICH_VU"),
    } <= fields
    # no card: nothing is claimed, so no benefit level is needed (MUC_HUONG 0) and the price is known
    assert not {("XML1", "MUC_HUONG"), ("XML3", "MUC_HUONG"), ("XML3", "DON_GIA_BV")} & fields
    by_field = {p.field: p.message for p in problems}
    assert by_field["MA_THE_BHYT"] == "XML1 dòng 1: thiếu mã thẻ BHYT (MA_THE_BHYT) – trường bắt buộc"
    assert "mã máy thực hiện" in by_field["MA_MAY"]
    # audited as a failure
    from sqlalchemy import select

    from emr.models import AuditEntry

    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "export.xml130")).all()[-1]
    assert row.outcome == "failure" and row.object_id == str(v.encounter.id)


def test_open_visit_and_bad_formats_are_refused(
    session: Session, world, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    from .conftest import make_visit

    v = make_visit(session, world, close=False, cccd="079190005678")
    v.encounter.weight_kg = "6 5kg"
    session.commit()
    with pytest.raises(ExportCheckFailed) as info:
        export_xml130(session, world.actor("records_clerk"), v.encounter.id, export_config, facility_key)
    keys = {(p.field, p.key) for p in info.value.problems}
    assert ("NGAY_RA", "exports.check.not_closed") in keys
    assert ("NGAY_RA", "exports.check.missing") in keys
    # CAN_NANG: annex "Chuỗi 6", kilograms with a decimal point and two decimals
    assert ("CAN_NANG", "exports.check.format_str") in keys


def test_export_is_audited(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    import hashlib

    from sqlalchemy import select

    from emr.models import AuditEntry

    exp = export_xml130(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key)
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "export.xml130")).one()
    assert row.outcome == "success" and row.username == "records_clerk1"
    assert hashlib.sha256(exp.envelope).hexdigest() in row.details


def test_envelope_signed_on_pkcs11_token_verifies(pki, tmp_path: Path) -> None:
    import sys

    out = tmp_path / "token.xml"
    script = Path(__file__).with_name("token_sign.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(pki.directory), str(GOLDEN / "xml1.xml"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert _xmlsec_verify(out, pki.ca_cert_path).returncode == 0
    verified = verify_envelope(out.read_bytes(), ca_pem_file=pki.ca_cert_path)
    assert verified.tables["XML1"] == (GOLDEN / "xml1.xml").read_bytes()
    tampered = tmp_path / "t.xml"
    tampered.write_bytes(out.read_bytes().replace(b"<NGAYLAP>20261123<", b"<NGAYLAP>20261124<"))
    assert _xmlsec_verify(tampered, pki.ca_cert_path).returncode != 0
