"""QĐ 130/4750 field rules checked on exported files (lxml and xmllint against the project's XSDs).

Sizes and types come from the annex spreadsheet of Decision 4750/QĐ-BYT ("Bảng 1..5"; public copy
``XML130/QD4570/phu-luc-quyet-dinh-4750.xlsx`` in dh-hos/Mo-ta-he-thong). Each test names the
annex row it checks.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy.orm import Session

from emr.core.identifiers import bhyt_problem, bhyt_ssn
from emr.exports import tables as tbl
from emr.exports.config import ExportConfig
from emr.exports.facility_key import FacilityKey
from emr.exports.money import ServiceAmounts, fmt_money
from emr.exports.records import load_visit
from emr.exports.service import check_visit, export_xml130
from emr.exports.xml130 import XSD_DIR, _Money, _visit_money, build_rows, treatment_days, validate_table
from emr.models import Encounter

from .conftest import InpatientVisit, Visit, make_inpatient_visit, make_visit, utc


def _xmllint(name: str, document: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.xml"
    path.write_bytes(document)
    return subprocess.run(
        ["xmllint", "--noout", "--schema", str(XSD_DIR / f"{name.lower()}.xsd"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _both_accept(name: str, document: bytes, tmp_path: Path) -> None:
    assert validate_table(name, document) == []
    r = _xmllint(name, document, tmp_path)
    assert r.returncode == 0, r.stderr


def _both_refuse(name: str, document: bytes, tmp_path: Path) -> None:
    assert validate_table(name, document) != []
    assert _xmllint(name, document, tmp_path).returncode != 0


def _with(document: bytes, field: str, value: str, row: int = 0) -> bytes:
    root = etree.fromstring(document)
    el = root.find(field) if root.tag == "TONG_HOP" else root[0][row].find(field)
    assert el is not None, field
    el.text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture
def inpatient(session: Session, world) -> InpatientVisit:
    return make_inpatient_visit(session, world)


@pytest.fixture
def exported(
    session: Session, world, inpatient: InpatientVisit, export_config: ExportConfig, facility_key: FacilityKey
):
    return export_xml130(
        session, world.actor("records_clerk"), inpatient.visit.encounter.id, export_config, facility_key
    )


def test_annex_sizes_and_types() -> None:
    """The known mismatches against the annex, field by field (Bảng 1, 3, 4)."""
    f1 = {f.name: f for f in tbl.XML1.fields}
    f3 = {f.name: f for f in tbl.XML3.fields}
    f4 = {f.name: f for f in tbl.XML4.fields}
    assert f1["MA_TTDV"].max_len == 10  # Bảng 1 row 64: Chuỗi 10, the head's health ID (mã số BHXH)
    assert (f1["NGAY_MIEN_CCT"].max_len, f1["NGAY_MIEN_CCT"].kind) == (12, "date_or_datetime")  # row 20
    assert f1["NHOM_MAU"].max_len == 5  # NHOM_MAU, Chuỗi 5
    for name in ("MA_THE_BHYT", "MA_DKBD", "GT_THE_TU", "GT_THE_DEN", "LY_DO_VV", "LY_DO_VNT"):
        assert f1[name].max_len is None, name  # rows 16-19, 21, 22: size "n"
    assert f1["MA_DOITUONG_KCB"].max_len == 3  # row 30: Chuỗi 3
    assert f1["MA_KHOA"].max_len == 50  # row 56
    assert (f3["TT_THAU"].max_len, f3["MA_KHOA"].max_len, f3["MUC_HUONG"].max_len) == (25, 20, 3)  # Bảng 3 16, 31, 22
    assert f3["MA_BENH_YHCT"].max_len == 255  # Bảng 3 row 36
    assert (f3["VI_TRI_TH_DVKT"].max_len, f3["VI_TRI_TH_DVKT"].kind) == (3, "int")  # row 43: Số 3
    assert (f4["MA_CHI_SO"].max_len, f4["GIA_TRI"].max_len) == (50, 50)  # Bảng 4 rows 4, 6
    assert [t.names for t in (tbl.XML1, tbl.XML3, tbl.XML4, tbl.XML5)] == [
        tbl.XML1.names,
        tbl.XML3.names,
        tbl.XML4.names,
        tbl.XML5.names,
    ]
    assert (len(tbl.XML1.fields), len(tbl.XML3.fields), len(tbl.XML4.fields), len(tbl.XML5.fields)) == (66, 47, 12, 9)


def test_xsd_limits_on_exported_xml1(exported, tmp_path: Path) -> None:
    xml1 = exported.tables["XML1"]
    _both_accept("XML1", xml1, tmp_path)
    # MA_TTDV String(10)
    assert etree.fromstring(xml1).findtext("MA_TTDV") == "7901234567"
    _both_refuse("XML1", _with(xml1, "MA_TTDV", "000999/HCM-CCHN"), tmp_path)
    # several cards joined by ';' (new card issued during the stay), and the 12-digit CCCD as a card
    cards = "DN4790123456789;079190007777;7901234567"
    _both_accept("XML1", _with(_with(xml1, "MA_THE_BHYT", cards), "MA_DKBD", "79001;79002;79001"), tmp_path)
    _both_accept("XML1", _with(xml1, "GT_THE_TU", "20260101;20260701"), tmp_path)
    _both_refuse("XML1", _with(xml1, "MA_THE_BHYT", "DN479012345678"), tmp_path)  # 14 characters
    _both_refuse("XML1", _with(xml1, "MA_THE_BHYT", "DN4790123456789;"), tmp_path)
    # NGAY_MIEN_CCT: yyyymmdd (certificate) or yyyymmddHHMM
    _both_accept("XML1", _with(xml1, "NGAY_MIEN_CCT", "20260405"), tmp_path)
    _both_accept("XML1", _with(xml1, "NGAY_MIEN_CCT", "202604051520"), tmp_path)
    _both_refuse("XML1", _with(xml1, "NGAY_MIEN_CCT", "2026040515"), tmp_path)
    # NHOM_MAU at most 5
    _both_accept("XML1", _with(xml1, "NHOM_MAU", "AB+"), tmp_path)
    _both_refuse("XML1", _with(xml1, "NHOM_MAU", "AB Rh+"), tmp_path)
    # CAN_NANG: decimal point, exactly two decimals
    assert etree.fromstring(xml1).findtext("CAN_NANG") == "52.50"
    _both_refuse("XML1", _with(xml1, "CAN_NANG", "52.5"), tmp_path)
    _both_refuse("XML1", _with(xml1, "CAN_NANG", "52,50"), tmp_path)
    # MA_KHOA: several departments joined by ';'
    _both_accept("XML1", _with(xml1, "MA_KHOA", "K01;K19"), tmp_path)


def test_xsd_limits_on_exported_xml3_and_xml4(exported, tmp_path: Path) -> None:
    xml3, xml4 = exported.tables["XML3"], exported.tables["XML4"]
    _both_accept("XML3", xml3, tmp_path)
    _both_accept("XML4", xml4, tmp_path)
    _both_refuse("XML3", _with(xml3, "TT_THAU", "x" * 26), tmp_path)
    _both_accept("XML3", _with(xml3, "TT_THAU", "20.00;G1;N1;2021"), tmp_path)
    _both_refuse("XML3", _with(xml3, "MA_KHOA", "K" * 21), tmp_path)
    _both_refuse("XML3", _with(xml3, "MUC_HUONG", "1000"), tmp_path)
    _both_accept("XML3", _with(xml3, "MA_BENH_YHCT", "U" * 255), tmp_path)
    _both_refuse("XML3", _with(xml3, "MA_BENH_YHCT", "U" * 256), tmp_path)
    _both_refuse("XML3", _with(xml3, "MA_PTTT", ""), tmp_path)  # filled: the EMR bills per service
    _both_refuse("XML4", _with(xml4, "MA_CHI_SO", "C" * 51), tmp_path)
    _both_refuse("XML4", _with(xml4, "GIA_TRI", "9" * 51), tmp_path)
    _both_accept("XML4", _with(xml4, "GIA_TRI", "9" * 50), tmp_path)


def test_ma_pttt_and_t_bhtt_gdv_on_exported_files(
    session: Session, world, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    """Bảng 1 row 52: T_BHTT_GDV = Σ T_BHTT of the XML2/XML3 rows whose MA_PTTT is 1 (fee for service)."""
    v = make_visit(session, world, cccd="079190003333")
    exp = export_xml130(session, world.actor("records_clerk"), v.encounter.id, export_config, facility_key)
    xml1 = etree.fromstring(exp.tables["XML1"])
    rows = etree.fromstring(exp.tables["XML3"])[0]
    assert [r.findtext("MA_PTTT") for r in rows] == ["1"]
    fee = sum(Decimal(r.findtext("T_BHTT")) for r in rows if r.findtext("MA_PTTT") == "1")
    assert Decimal(xml1.findtext("T_BHTT_GDV")) == fee == Decimal("428800")

    # a capitation row (MA_PTTT 2) counts in T_BHTT but not in T_BHTT_GDV
    def amounts(price: int, fund: int) -> ServiceAmounts:
        d = Decimal(price)
        return ServiceAmounts(
            Decimal(1), d, d, d, d, fund_pays=Decimal(fund), copayment=d - fund, patient_pays=Decimal(0)
        )

    money = _visit_money(
        [_Money({"MA_PTTT": "1"}, amounts(100, 80), True), _Money({"MA_PTTT": "2"}, amounts(50, 40), True)]
    )
    assert (money["T_BHTT"], money["T_BHTT_GDV"]) == (fmt_money(Decimal(120)), fmt_money(Decimal(80)))


def test_treatment_days_for_an_inpatient_stay(exported, inpatient: InpatientVisit) -> None:
    """Bảng 1 row 38: MA_LOAI_KCB 2, 3, 4, 6 → NGAY_RA − NGAY_VAO + 1, from the admission (local dates)."""
    xml1 = etree.fromstring(exported.tables["XML1"])
    assert xml1.findtext("MA_LOAI_KCB") == "03"
    assert xml1.findtext("NGAY_VAO") == "202611210030"  # 17:30 UTC on the 20th
    assert xml1.findtext("NGAY_VAO_NOI_TRU") == "202611210900"
    assert xml1.findtext("NGAY_RA") == "202611231645"
    assert xml1.findtext("SO_NGAY_DTRI") == "3"  # 21, 22, 23 Nov (UTC dates would give 4)
    assert treatment_days("03", utc(2026, 11, 23, 1, 0), utc(2026, 11, 23, 9, 0)) == "1"  # same day
    assert treatment_days("01", utc(2026, 11, 20, 1, 0), utc(2026, 11, 23, 9, 0)) == "0"
    assert treatment_days("05", utc(2026, 11, 20, 1, 0), utc(2026, 11, 23, 9, 0)) == ""  # days of medication
    assert treatment_days("03", utc(2026, 11, 20, 1, 0), None) == ""


def test_inpatient_xml1_carries_the_discharge_paper(exported) -> None:
    xml1 = etree.fromstring(exported.tables["XML1"])
    assert xml1.findtext("PP_DIEU_TRI") == "Nội khoa: kháng sinh tĩnh mạch, hạ sốt"  # row 39
    assert xml1.findtext("GHI_CHU") == "Uống đủ nước, tái khám nếu sốt lại"  # row 42: doctor's advice


def test_xml5_progress_notes_in_local_time(exported, tmp_path: Path) -> None:
    """Bảng 5: one row per signed progress note, THOI_DIEM_DBLS yyyymmddHHMM in Vietnam time."""
    assert list(exported.tables) == ["XML1", "XML3", "XML4", "XML5"]
    xml5 = exported.tables["XML5"]
    _both_accept("XML5", xml5, tmp_path)
    rows = etree.fromstring(xml5)[0]
    notes = [(r.findtext("DIEN_BIEN_LS"), r.findtext("THOI_DIEM_DBLS")) for r in rows]
    assert notes == [  # in the order they were signed
        ("Còn sốt 38 °C, giảm ho.", "202611220600"),
        ("Hết sốt, phổi thông khí tốt.", "202611230600"),
        ("Sốt 38,5 °C, ho đờm, ran nổ đáy phổi phải.", "202611231055"),
    ]
    assert all(r.findtext("NGUOI_THUC_HIEN") for r in rows)
    assert [r.findtext("STT") for r in rows] == ["1", "2", "3"]


def test_every_timestamp_is_vietnam_local_time(exported, inpatient: InpatientVisit) -> None:
    """Stored times are UTC; every yyyymmddHHMM in the tables is the same instant at UTC+7."""
    enc = inpatient.visit.encounter
    order = inpatient.visit.order
    xml1 = etree.fromstring(exported.tables["XML1"])
    xml3 = etree.fromstring(exported.tables["XML3"])[0][0]
    xml4 = etree.fromstring(exported.tables["XML4"])[0][0]
    assert xml1.findtext("NGAY_TTOAN") == "202611231645"
    assert (xml1.findtext("NAM_QT"), xml1.findtext("THANG_QT")) == ("2026", "11")
    assert xml3.findtext("NGAY_YL") == "202611230900"  # ordered 02:00 UTC
    assert xml3.findtext("NGAY_TH_YL") == "202611230940"
    assert xml4.findtext("NGAY_KQ") == "202611231015"  # report signed 03:15 UTC
    assert enc.admitted_at.hour == 17 and order.ordered_at.hour == 2


def test_cccd_as_insurance_card(
    session: Session, world, export_config: ExportConfig, facility_key: FacilityKey, tmp_path: Path
) -> None:
    """NĐ 188/2025 (VN Core BHYT NamingSystem): the 12-digit CCCD may be the card number."""
    assert bhyt_problem("079190004444") is None
    assert bhyt_problem("999190004444") == "patients.error.cccd_province"
    assert bhyt_problem("07919000444") == "patients.error.bhyt_format"
    assert bhyt_problem("DN4790123456789") is None and bhyt_problem("7901234567") is None
    assert bhyt_ssn("079190004444") is None and bhyt_ssn("DN4790123456789") == "0123456789"
    v = make_visit(session, world, cccd="079190004444", bhyt_number="079190004444", benefit_level=80)
    exp = export_xml130(session, world.actor("records_clerk"), v.encounter.id, export_config, facility_key)
    xml1 = exp.tables["XML1"]
    assert etree.fromstring(xml1).findtext("MA_THE_BHYT") == "079190004444"
    _both_accept("XML1", xml1, tmp_path)
    # two patients may both use their CCCD as a card (no social-insurance number to collide on)
    other = make_visit(session, world, cccd="079190004445", bhyt_number="079190004445", benefit_level=80)
    assert other.patient.bhyt_ssn is None


def test_check_reports_annex_violations(session: Session, world, export_config: ExportConfig) -> None:
    v = make_visit(session, world, cccd="079190006666")
    enc = session.get(Encounter, v.encounter.id)
    assert enc is not None
    enc.weight_kg = "sáu"
    session.commit()
    config = ExportConfig(facility_code="79001", public_url="http://x", head_code="000999/HCM-CCHN")
    _rows, problems = check_visit(session, v.encounter.id, config)
    keys = {(p.field, p.key) for p in problems}
    assert ("MA_TTDV", "exports.check.too_long") in keys
    assert ("CAN_NANG", "exports.check.format_str") in keys
    rows = build_rows(load_visit(session, enc), export_config)
    assert rows["XML1"][0]["MA_TTDV"] == "7901234567"


def test_outpatient_visit_has_zero_treatment_days(visit: Visit, session: Session, export_config: ExportConfig) -> None:
    rows = build_rows(load_visit(session, visit.encounter), export_config)
    assert (rows["XML1"][0]["MA_LOAI_KCB"], rows["XML1"][0]["SO_NGAY_DTRI"]) == ("01", "0")


def test_timestamps_follow_the_facility_time_zone(visit: Visit, session: Session, export_config: ExportConfig) -> None:
    """The facility's zone (emr.core.clock, FILMLESS_TIMEZONE), not the server's, decides every local time."""
    from emr.core import clock
    from emr.exports.hsba import build_hsba

    record = load_visit(session, visit.encounter)
    assert build_rows(record, export_config)["XML1"][0]["NGAY_VAO"] == "202611230830"  # 01:30 UTC at UTC+7
    clock.use_timezone("Asia/Tokyo")
    try:
        assert build_rows(record, export_config)["XML1"][0]["NGAY_VAO"] == "202611231030"
        hsba = build_hsba(record, export_config)
        assert hsba["ThongTinVaoVien"]["ngayvaovien"] == "2026-11-23T10:30:00+09:00"
    finally:
        clock.use_timezone(clock.DEFAULT_TIMEZONE)
    assert build_hsba(record, export_config)["ThongTinVaoVien"]["ngayvaovien"] == "2026-11-23T08:30:00+07:00"
