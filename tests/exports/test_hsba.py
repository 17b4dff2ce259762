"""HoSoBenhAn export: groups, signature status, offline verification of the detached CMS."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.exports.artifacts import InMemoryArtifacts
from emr.exports.config import ExportConfig
from emr.exports.envelope import verify_envelope
from emr.exports.facility_key import FacilityKey
from emr.exports.hsba import canonical_bytes
from emr.exports.service import export_hsba
from emr.models import AuditEntry, DocumentVersion

from .conftest import Visit


def _openssl_verify(tmp: Path, canonical: bytes, cms: bytes, ca: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "c.json").write_bytes(canonical)
    (tmp / "s.p7s").write_bytes(cms)
    return subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(tmp / "s.p7s"),
            "-content",
            str(tmp / "c.json"),
            "-CAfile",
            str(ca),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_export_groups_and_offline_signature(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey, pki, tmp_path: Path
) -> None:
    v1 = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == visit.report.id)).one()
    artifacts = InMemoryArtifacts(cms={v1.id: b"\x30\x03\x02\x01\x01"})
    exp = export_hsba(
        session,
        world.actor("records_clerk"),
        visit.encounter.id,
        export_config,
        facility_key,
        "json",
        artifacts=artifacts,
    )
    doc = json.loads(exp.data)
    hsba = doc["HoSoBenhAn"]
    assert {
        "ThongTinBenhNhan",
        "ThongTinVaoVien",
        "ThongTinDieuTri",
        "PhieuChiDinh",
        "KetQuaChanDoanHinhAnh",
        "ChuKy",
    } <= set(hsba)
    assert hsba["ThongTinBenhNhan"]["cccd_so"] == "079190001234"
    assert hsba["ThongTinVaoVien"]["sovaovien"] == visit.encounter.visit_code
    assert hsba["ThongTinVaoVien"]["ngayvaovien"] == "2026-11-23T08:30:00+07:00"
    assert hsba["ThongTinDieuTri"]["maicd"] == "J18.9" and hsba["ThongTinDieuTri"]["maicd_kemtheo"] == ["I10"]
    kq = hsba["KetQuaChanDoanHinhAnh"][0]
    assert kq["kqcls_ketluan"] == "Viêm phổi thùy dưới phải."
    assert kq["link_hinhanh"] == f"http://127.0.0.1:8080/viewer/?study={visit.order.study_instance_uid}"
    assert kq["mabacsithuchien"] == world.users["radiologist"].practising_cert_no
    sigs = {s["loaiphieu"]: s for s in hsba["ChuKy"]}
    assert sigs["radiology_report"]["trangthai"] == "da_ky"
    assert sigs["radiology_report"]["cms_base64"] == base64.b64encode(b"\x30\x03\x02\x01\x01").decode()
    assert sigs["progress_note"]["cms_base64"] is None

    # offline: canonical bytes rebuilt from the JSON alone, checked by openssl
    canonical = canonical_bytes(hsba)
    cms = base64.b64decode(doc["chuky_xuat"]["cms_base64"])
    assert doc["chuky_xuat"]["canonical_sha256"] == __import__("hashlib").sha256(canonical).hexdigest()
    r = _openssl_verify(tmp_path, canonical, cms, pki.ca_cert_path)
    assert r.returncode == 0, r.stderr
    # one changed character in the record → refused
    hsba["KetQuaChanDoanHinhAnh"][0]["kqcls_ketluan"] = "Viêm phổi thùy dưới trái."
    assert _openssl_verify(tmp_path, canonical_bytes(hsba), cms, pki.ca_cert_path).returncode != 0

    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "export.hsba")).one()
    assert '"format": "json"' in row.details


def test_xml_export_is_signed_and_mirrors_json(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey, pki, tmp_path: Path
) -> None:
    exp = export_hsba(session, world.actor("physician"), visit.encounter.id, export_config, facility_key, "xml")
    root = etree.fromstring(exp.data)
    assert root.tag == "HoSoBenhAn"
    assert root.findtext("ThongTinBenhNhan/hoten") == "Nguyễn Thị Hồng Nhung"
    assert root.findtext("KetQuaChanDoanHinhAnh/KetQua/machidinh") == visit.order.accession_number
    assert [e.findtext("loaiphieu") for e in root.findall("ChuKy/ChuKySo")] == ["radiology_report", "progress_note"]
    path = tmp_path / "hsba.xml"
    path.write_bytes(exp.data)
    r = subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(pki.ca_cert_path), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    verify_envelope(exp.data, ca_pem_file=pki.ca_cert_path)


def test_open_encounter_exports_without_key(session: Session, world, export_config: ExportConfig) -> None:
    from .conftest import make_visit

    v = make_visit(session, world, close=False)
    exp = export_hsba(session, world.actor("records_clerk"), v.encounter.id, export_config, None, "json")
    doc = json.loads(exp.data)
    assert doc["HoSoBenhAn"]["ThongTinDieuTri"]["trangthai"] == "open"
    assert doc["chuky_xuat"]["cms_base64"] is None


def test_signing_library_checks_the_export_signature(
    session: Session, world, visit: Visit, export_config: ExportConfig, facility_key: FacilityKey, pki
) -> None:
    """The record-signing library (issue 5) verifies the export's CMS: intact, valid, trusted (no timestamp)."""
    from emr.signing import verify_json_signature

    exp = export_hsba(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key, "json")
    doc = json.loads(exp.data)
    cms = base64.b64decode(doc["chuky_xuat"]["cms_base64"])
    report = verify_json_signature(doc["HoSoBenhAn"], cms, [pki.ca_certificate()], crls=[pki.crl()])
    assert report.intact and report.signature_valid and report.trusted
    doc["HoSoBenhAn"]["ThongTinBenhNhan"]["hoten"] = "Nguyễn Thị Hồng Nhung "
    assert not verify_json_signature(doc["HoSoBenhAn"], cms, [pki.ca_certificate()], crls=[pki.crl()]).intact


def test_full_record_of_an_inpatient_stay(
    session: Session, world, export_config: ExportConfig, facility_key: FacilityKey, pki, tmp_path: Path
) -> None:
    """XML7/XML8 fields (QĐ 4750 Bảng 7, 8) and one signer per paper: admission note, diagnosis, discharge."""
    from .conftest import make_inpatient_visit

    stay = make_inpatient_visit(session, world)
    doctor = world.users["physician"]
    exp = export_hsba(
        session, world.actor("records_clerk"), stay.visit.encounter.id, export_config, facility_key, "json"
    )
    doc = json.loads(exp.data)
    hsba = doc["HoSoBenhAn"]
    patient = hsba["ThongTinBenhNhan"]
    assert (patient["hoten_cha"], patient["hoten_me"], patient["tongiao"], patient["madinhdanhyte"]) == (
        "Nguyễn Văn Hùng",
        "Trần Thị Lan",
        "01",
        "7912345678",
    )
    admission = hsba["ThongTinVaoVien"]["PhieuKhamVaoVien"]
    assert admission["sophieu"] == str(stay.admission.id) and admission["nguoiky_hoten"] == doctor.full_name
    assert admission["ngayky"] == "2026-11-21T00:50:00+07:00" and admission["chandoanbandau"] == "Viêm phổi"
    treatment = hsba["ThongTinDieuTri"]
    diagnosis = treatment["PhieuChanDoan"]
    assert (diagnosis["maicd_chinh"], diagnosis["maicd_kemtheo"]) == ("J18.9", "I10")
    assert diagnosis["nguoiky_cchn"] == doctor.practising_cert_no and diagnosis["sophieu"] == str(stay.diagnosis.id)
    assert treatment["quatrinhbenhly"].startswith("Sốt, ho đờm 5 ngày")  # QT_BENHLY
    assert treatment["tomtat_kqcls"] == "CT ngực: đám mờ thùy dưới phổi phải"  # TOMTAT_KQ
    assert treatment["phuongphapdieutri"] == "Nội khoa: kháng sinh tĩnh mạch, hạ sốt"  # PP_DIEUTRI
    assert treatment["loidan_bacsi"] == "Uống đủ nước, tái khám nếu sốt lại"  # GHI_CHU
    paper = hsba["GiayRaVien"]
    assert paper["soluutru"] == "LT-2026-00123"  # SO_LUU_TRU
    assert paper["mayte"] == "7912345678"  # MA_YTE
    assert paper["bacsi_ravien"] == doctor.full_name and paper["bacsi_ravien_cchn"] == doctor.practising_cert_no
    assert paper["ngaychungtu"] == "2026-11-23"  # NGAY_CT (signed 16:50 local, after the discharge at 16:45)
    assert paper["ma_ttdv"] == export_config.head_code and len(paper["ma_ttdv"]) <= 10
    assert (paper["hoten_cha"], paper["hoten_me"]) == ("Nguyễn Văn Hùng", "Trần Thị Lan")
    assert paper["ngayvao"] == "2026-11-21T00:30:00+07:00" and paper["ngayra"] == "2026-11-23T16:45:00+07:00"
    kinds = [s["loaiphieu"] for s in hsba["ChuKy"]]
    assert {"admission_note", "diagnosis", "discharge_summary", "progress_note", "radiology_report"} <= set(kinds)
    assert all(s["chuky_hoten"] for s in hsba["ChuKy"])
    # the whole record still verifies offline
    canonical = canonical_bytes(hsba)
    assert (
        _openssl_verify(
            tmp_path, canonical, base64.b64decode(doc["chuky_xuat"]["cms_base64"]), pki.ca_cert_path
        ).returncode
        == 0
    )
    xml = etree.fromstring(
        export_hsba(
            session, world.actor("records_clerk"), stay.visit.encounter.id, export_config, facility_key, "xml"
        ).data
    )
    assert xml.findtext("GiayRaVien/soluutru") == "LT-2026-00123"
    assert xml.findtext("ThongTinDieuTri/PhieuChanDoan/nguoiky_hoten") == doctor.full_name


def test_admission_diagnosis_and_discharge_papers_have_their_own_signers(session: Session, world) -> None:
    """The signing workflow's slots: the admitting doctor signs the admission note, the treating physician the
    diagnosis, the treating physician then the head of department the discharge paper."""
    from emr.documents import service as docs
    from emr.signing.service import can_sign_now, slots_for

    assert [s.who for s in slots_for("admission_note")] == ["author"]
    assert [s.who for s in slots_for("diagnosis")] == ["treating"]
    assert [s.who for s in slots_for("discharge_summary")] == ["treating", "head"]
    from .conftest import make_visit

    v = make_visit(session, world, close=False, cccd="079190002222")
    doctor, reader = world.actor("physician"), world.actor("radiologist")
    diagnosis = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": v.encounter.id,
            "form_type": "diagnosis",
            "content": {"main_code": "J18.9", "main_text": "Viêm phổi"},
        },
    )
    users = world.users
    assert v.encounter.attending_id == users["physician"].id
    assert can_sign_now(session, diagnosis, users["physician"])  # the treating physician
    assert not can_sign_now(session, diagnosis, users["radiologist"])
    note = docs.create_document(
        session,
        doctor,
        {
            "encounter_id": v.encounter.id,
            "form_type": "admission_note",
            "content": {"reason": "Sốt", "examination": "Ran nổ", "initial_diagnosis": "Viêm phổi"},
        },
    )
    assert can_sign_now(session, note, users["physician"]) and not can_sign_now(session, note, users["radiologist"])
    import pytest as _pytest

    from emr.core.exceptions import EmrError

    with _pytest.raises(EmrError):  # a diagnosis needs a valid ICD-10 code
        docs.create_document(
            session,
            reader,
            {
                "encounter_id": v.encounter.id,
                "form_type": "diagnosis",
                "content": {"main_code": "pneumonia", "main_text": "x"},
            },
        )


def _signed(session: Session, world, encounter_id: int, form_type: str, content: dict) -> int:  # type: ignore[type-arg]
    from emr.documents import service as docs

    doctor = world.actor("physician")
    doc = docs.create_document(session, doctor, {"encounter_id": encounter_id, "form_type": form_type,
                                                 "content": content})
    docs.mark_signed(session, doctor, doc.id, 1)
    return doc.id


OUTPATIENT_RECORD = {
    "chief_complaint": "Ho, sốt 3 ngày",
    "history": "Sốt 38,5 °C từ 3 ngày, ho đờm vàng",
    "examination": "Ran nổ đáy phổi phải, SpO2 96 %",
    "conclusion": "Viêm phổi thùy dưới phải",
    "treatment_plan": "Kháng sinh uống 7 ngày, tái khám sau 1 tuần",
}


def test_open_visit_exports_its_signed_papers_but_no_discharge_paper(
    session: Session, world, export_config: ExportConfig
) -> None:
    """A visit still open (a new user's walk-through): the admission diagnosis comes from the signed admission note,
    the outpatient record is exported whole, and no GiayRaVien is written while there is no discharge (QĐ 4750
    Bảng 7: NGAY_RA, MA_BS, TEN_BS and NGAY_CT are mandatory) — not one with ``ngayra`` null."""
    from emr.exports.service import check_visit
    from emr.patients import encounters as encs

    from .conftest import make_visit

    v = make_visit(session, world, close=False, cccd="079190003333")
    v.encounter.admission_diagnosis = None  # nothing typed when the visit was opened
    session.commit()
    _signed(session, world, v.encounter.id, "admission_note",
            {"reason": "Sốt, ho", "examination": "Ran nổ đáy phổi phải", "initial_diagnosis": "Viêm phổi thùy dưới"})
    record_id = _signed(session, world, v.encounter.id, "outpatient_record", OUTPATIENT_RECORD)
    _signed(session, world, v.encounter.id, "discharge_summary",
            {"summary": "Hết sốt", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "1"})
    clerk = world.actor("records_clerk")

    hsba = json.loads(export_hsba(session, clerk, v.encounter.id, export_config, None, "json").data)["HoSoBenhAn"]
    assert hsba["ThongTinDieuTri"]["trangthai"] == "open"
    assert "GiayRaVien" not in hsba  # no discharge yet: no discharge paper, not an empty one
    assert hsba["ThongTinVaoVien"]["chandoanvaovien"] == "Viêm phổi thùy dưới"  # CHAN_DOAN_VAO, the signed note
    outpatient = hsba["BenhAnNgoaiTru"]
    assert outpatient == {
        "sophieu": str(record_id),
        "nguoiky_hoten": world.users["physician"].full_name,
        "nguoiky_cchn": world.users["physician"].practising_cert_no,
        "ngayky": outpatient["ngayky"],
        "lydokham": "Ho, sốt 3 ngày",
        "benhsu": "Sốt 38,5 °C từ 3 ngày, ho đờm vàng",
        "khamlamsang": "Ran nổ đáy phổi phải, SpO2 96 %",
        "ketluan": "Viêm phổi thùy dưới phải",
        "huongdieutri": "Kháng sinh uống 7 ngày, tái khám sau 1 tuần",
    }
    assert outpatient["ngayky"] and outpatient["ngayky"].endswith("+07:00")
    xml = etree.fromstring(export_hsba(session, clerk, v.encounter.id, export_config, None, "xml").data)
    assert xml.find("GiayRaVien") is None
    assert xml.findtext("BenhAnNgoaiTru/ketluan") == "Viêm phổi thùy dưới phải"
    assert xml.findtext("ThongTinVaoVien/chandoanvaovien") == "Viêm phổi thùy dưới"

    # Once the visit ends the paper is there, with its discharge time.
    encs.close_encounter(session, world.actor("physician"), v.encounter.id, "Viêm phổi thùy dưới phải")
    hsba = json.loads(export_hsba(session, clerk, v.encounter.id, export_config, None, "json").data)["HoSoBenhAn"]
    paper = hsba["GiayRaVien"]
    assert paper["ngayra"] is not None and paper["ngayra"] == hsba["ThongTinDieuTri"]["ngayravien"]
    assert paper["chandoan_rv"] == "Viêm phổi" and paper["ngaychungtu"]
    assert list(hsba).index("GiayRaVien") < list(hsba).index("PhieuChiDinh")  # the groups keep their order
    rows, _problems = check_visit(session, v.encounter.id, export_config)
    assert rows["XML1"][0]["CHAN_DOAN_VAO"] == "Viêm phổi thùy dưới"  # the claim agrees with the record


def test_closed_visit_without_a_signed_discharge_paper_has_no_giayravien(
    session: Session, world, visit: Visit, export_config: ExportConfig
) -> None:
    hsba = json.loads(
        export_hsba(session, world.actor("records_clerk"), visit.encounter.id, export_config, None, "json").data
    )["HoSoBenhAn"]
    assert hsba["ThongTinDieuTri"]["trangthai"] == "closed" and hsba["ThongTinDieuTri"]["ngayravien"]
    assert "GiayRaVien" not in hsba and "BenhAnNgoaiTru" not in hsba
    # no signed admission note: the diagnosis typed when the visit was opened
    assert hsba["ThongTinVaoVien"]["chandoanvaovien"] == "Theo dõi viêm phổi"
