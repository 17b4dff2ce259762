"""The QĐ 130/4750 tables XML1, XML3, XML4, XML5 of one closed visit.

:func:`build_rows` maps a :class:`VisitRecord` onto the annex fields (all
values strings, '' when unknown); :func:`check_rows` is the pre-submission
check; :func:`render_table` writes a table document in annex element order
(UTF-8); :func:`validate_table` checks it against the project's XSD.

What the EMR does not hold is written as the annex's neutral value: money
fields are 0 (prices and payments live in the hospital's billing system),
service quantity 1, payment rates 100.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from lxml import etree

from ..i18n import catalogue, t
from .config import ExportConfig
from .exceptions import FieldProblem
from .records import VisitRecord, fmt_date, fmt_datetime, local
from .tables import TABLES, XML1, XML3, XML4, XML5, Table

__all__ = [
    "Rows",
    "build_rows",
    "check_rows",
    "render_table",
    "validate_table",
    "XSD_DIR",
    "benefit_level",
]

XSD_DIR = Path(__file__).with_name("xsd")

Rows = dict[str, list[dict[str, str]]]  # table name → rows (element → value)

_SEX = {"M": "1", "F": "2", "O": "3"}
# MA_LOAI_KCB: 01 examination (outpatient visit, emergency seen and sent home), 03 inpatient.
_VISIT_TYPE = {"outpatient": "01", "emergency": "01", "inpatient": "03"}
# MA_NHOM (cost group) of imaging services: 2 = chẩn đoán hình ảnh.
_IMAGING_COST_GROUP = "2"
# Benefit level (3rd character of a legacy 15-character card) → MUC_HUONG (%).
_BENEFIT = {"1": "100", "2": "100", "3": "95", "4": "80", "5": "100"}


def benefit_level(card: str | None) -> str:
    """MUC_HUONG from the card's benefit digit; '' when the card does not say (10-digit number)."""
    if card and len(card) == 15 and card[2] in _BENEFIT:
        return _BENEFIT[card[2]]
    return ""


def _cert(user: object) -> str:
    return (getattr(user, "practising_cert_no", None) or "").strip()


def _birth(record: VisitRecord) -> str:
    p = record.patient
    if p.birth_year_only:
        return f"{p.birth_date.year:04d}00000000"
    return p.birth_date.strftime("%Y%m%d") + "0000"


def _xml1(record: VisitRecord, config: ExportConfig) -> dict[str, str]:
    e, p = record.encounter, record.patient
    codes = [c for c, _ in record.diagnoses]
    settled = e.discharged_at or e.closed_at
    settled_local = local(settled)
    days = ""
    if e.discharged_at is not None:
        if e.kind == "inpatient":
            start = local(e.inpatient_at or e.admitted_at)
            end = local(e.discharged_at)
            assert start is not None and end is not None
            days = str(max((end.date() - start.date()).days, 1))
        else:
            days = "0"
    return {
        "MA_LK": e.visit_code,
        "STT": "1",
        "MA_BN": p.code,
        "HO_TEN": p.full_name,
        "SO_CCCD": p.cccd or "",
        "NGAY_SINH": _birth(record),
        "GIOI_TINH": _SEX.get(p.sex, ""),
        "NHOM_MAU": p.blood_type or "",
        "MA_QUOCTICH": p.nationality_code or "",
        "MA_DANTOC": p.ethnicity_code or "",
        "MA_NGHE_NGHIEP": p.occupation_code or "",
        "DIA_CHI": p.address or "",
        "MATINH_CU_TRU": p.province_code or "",
        "MAHUYEN_CU_TRU": p.district_code or "",
        "MAXA_CU_TRU": p.ward_code or "",
        "DIEN_THOAI": p.phone or "",
        "MA_THE_BHYT": p.bhyt_number or "",
        "MA_DKBD": p.bhyt_registered_facility or "",
        "GT_THE_TU": fmt_date(p.bhyt_valid_from),
        "GT_THE_DEN": fmt_date(p.bhyt_valid_to),
        "NGAY_MIEN_CCT": "",
        "LY_DO_VV": e.reason or "",
        "LY_DO_VNT": "",
        "MA_LY_DO_VNT": "",
        "CHAN_DOAN_VAO": e.admission_diagnosis or "",
        "CHAN_DOAN_RV": e.discharge_diagnosis or "",
        "MA_BENH_CHINH": codes[0] if codes else "",
        "MA_BENH_KT": ";".join(codes[1:12]),
        "MA_BENH_YHCT": "",
        "MA_PTTT_QT": "",
        "MA_DOITUONG_KCB": e.insurance_object or "",
        "MA_NOI_DI": e.referral_from or "",
        "MA_NOI_DEN": e.referral_to or "",
        "MA_TAI_NAN": e.accident_code or "",
        "NGAY_VAO": fmt_datetime(e.admitted_at),
        "NGAY_VAO_NOI_TRU": fmt_datetime(e.inpatient_at),
        "NGAY_RA": fmt_datetime(e.discharged_at),
        "GIAY_CHUYEN_TUYEN": "",
        "SO_NGAY_DTRI": days,
        "PP_DIEU_TRI": "",
        "KET_QUA_DTRI": e.treatment_result or "",
        "MA_LOAI_RV": e.discharge_type or "",
        "GHI_CHU": "",
        "NGAY_TTOAN": fmt_datetime(settled),
        **{k: "0" for k in ("T_THUOC", "T_VTYT", "T_TONGCHI_BV", "T_TONGCHI_BH", "T_BNTT", "T_BNCCT", "T_BHTT")},
        "T_NGUONKHAC": "0",
        "T_BHTT_GDV": "0",
        "NAM_QT": f"{settled_local:%Y}" if settled_local else "",
        "THANG_QT": f"{settled_local:%m}" if settled_local else "",
        "MA_LOAI_KCB": _VISIT_TYPE.get(e.kind, ""),
        "MA_KHOA": record.department.code if record.department else "",
        "MA_CSKCB": config.facility_code,
        "MA_KHUVUC": "",
        "CAN_NANG": e.weight_kg or "",
        "CAN_NANG_CON": "",
        "NAM_NAM_LIEN_TUC": fmt_date(p.bhyt_five_years_since),
        "NGAY_TAI_KHAM": "",
        "MA_HSBA": e.record_no or "",
        "MA_TTDV": config.head_code or "",
        "DU_PHONG": "",
    }


def _xml3_and_4(record: VisitRecord, config: ExportConfig) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    e = record.encounter
    main = record.diagnoses[0][0] if record.diagnoses else ""
    level = benefit_level(record.patient.bhyt_number)
    services: list[dict[str, str]] = []
    results: list[dict[str, str]] = []
    for order in record.orders:
        report = record.reports.get(order.id)
        reader = report.signer if report else None
        performer = record.user(order.performed_by) or reader
        result_at = order.result_at or (report.version.signed_at if report else None)
        dep = record.department.code if record.department else ""
        row = {name: "" for name in XML3.names}
        row.update(
            {
                "MA_LK": e.visit_code,
                "STT": str(len(services) + 1),
                "MA_DICH_VU": order.procedure_code or "",
                "MA_NHOM": _IMAGING_COST_GROUP,
                "TEN_DICH_VU": order.procedure_name,
                "DON_VI_TINH": "Lần",
                "PHAM_VI": "1",
                "SO_LUONG": "1",
                "DON_GIA_BV": "0",
                "DON_GIA_BH": "0",
                "TYLE_TT_DV": "100",
                "TYLE_TT_BH": "100",
                "THANH_TIEN_BV": "0",
                "THANH_TIEN_BH": "0",
                "MUC_HUONG": level,
                "T_BNTT": "0",
                "T_BNCCT": "0",
                "T_BHTT": "0",
                "MA_KHOA": dep,
                "MA_BAC_SI": _cert(record.user(order.ordered_by)),
                "NGUOI_THUC_HIEN": _cert(performer),
                "MA_BENH": main,
                "NGAY_YL": fmt_datetime(order.ordered_at),
                "NGAY_TH_YL": fmt_datetime(order.performed_at),
                "NGAY_KQ": fmt_datetime(result_at),
                "MA_MAY": config.device_code_for(order.modality, order.station_ae_title, order.device_code) or "",
            }
        )
        services.append(row)
        if report is not None:
            results.append(
                {
                    "MA_LK": e.visit_code,
                    "STT": str(len(results) + 1),
                    "MA_DICH_VU": order.procedure_code or "",
                    "MA_CHI_SO": "",
                    "TEN_CHI_SO": "",
                    "GIA_TRI": "",
                    "DON_VI_DO": "",
                    "MO_TA": str(report.content.get("findings", "")),
                    "KET_LUAN": str(report.content.get("conclusion", "")),
                    "NGAY_KQ": fmt_datetime(report.version.signed_at),
                    "MA_BS_DOC_KQ": _cert(reader),
                    "DU_PHONG": "",
                }
            )
    return services, results


def _xml5(record: VisitRecord) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for note in record.progress_notes:
        c = note.content
        rows.append(
            {
                "MA_LK": record.encounter.visit_code,
                "STT": str(len(rows) + 1),
                "DIEN_BIEN_LS": str(c.get("note", "")),
                "GIAI_DOAN_BENH": str(c.get("stage", "")),
                "HOI_CHAN": str(c.get("consultation", "")),
                "PHAU_THUAT": str(c.get("surgery", "")),
                "THOI_DIEM_DBLS": fmt_datetime(note.version.created_at),
                "NGUOI_THUC_HIEN": _cert(note.signer or note.author),
                "DU_PHONG": "",
            }
        )
    return rows


def build_rows(record: VisitRecord, config: ExportConfig) -> Rows:
    """The visit's rows per table; XML3/XML4/XML5 may be empty lists (then the table is not sent)."""
    services, results = _xml3_and_4(record, config)
    return {"XML1": [_xml1(record, config)], "XML3": services, "XML4": results, "XML5": _xml5(record)}


_DATETIME = re.compile(r"\d{12}")
_DATE = re.compile(r"\d{8}")
_INT = re.compile(r"-?\d+")
_DEC = re.compile(r"-?\d+(\.\d+)?")


def _problem(table: str, row: int, name: str, key: str, **params: object) -> FieldProblem:
    label = catalogue().get(f"exports.field.{name}", name)
    return FieldProblem(table, row, name, key, t(key, field=name, label=label, table=table, row=row, **params))


def _valid_datetime(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y%m%d%H%M")
        return True
    except ValueError:
        return value.endswith("00000000")  # birth year only: yyyy00000000


def check_rows(rows: Rows, *, record: VisitRecord | None = None) -> list[FieldProblem]:
    """Every mandatory field, maximum length and format, per table, row and field.

    Plus the visit-level rules: it must be closed, and an imaging visit must
    have a signed report for each service (XML4).
    """
    problems: list[FieldProblem] = []
    if record is not None and record.encounter.status != "closed":
        problems.append(_problem("XML1", 1, "NGAY_RA", "exports.check.not_closed"))
    for name, table_rows in rows.items():
        table = TABLES[name]
        for i, row in enumerate(table_rows, start=1):
            for f in table.fields:
                value = row.get(f.name, "")
                if value == "":
                    if f.required:
                        problems.append(_problem(name, i, f.name, "exports.check.missing"))
                    continue
                if f.max_len is not None and len(value) > f.max_len:
                    problems.append(
                        _problem(name, i, f.name, "exports.check.too_long", max=f.max_len, length=len(value))
                    )
                    continue
                ok = True
                if f.kind == "datetime":
                    ok = bool(_DATETIME.fullmatch(value)) and _valid_datetime(value)
                elif f.kind == "date":
                    ok = bool(_DATE.fullmatch(value))
                elif f.kind == "int":
                    ok = bool(_INT.fullmatch(value))
                elif f.kind == "dec":
                    ok = bool(_DEC.fullmatch(value))
                if ok and f.pattern is not None:
                    ok = re.fullmatch(f.pattern, value) is not None
                if not ok:
                    problems.append(_problem(name, i, f.name, f"exports.check.format_{f.kind}", value=value))
    if record is not None:
        for i, order in enumerate(record.orders, start=1):
            if order.id not in record.reports:
                problems.append(
                    _problem("XML4", i, "KET_LUAN", "exports.check.no_signed_report", service=order.procedure_name)
                )
    return problems


def render_table(table: Table | str, rows: list[dict[str, str]]) -> bytes:
    """The table's own XML document (UTF-8, declaration, annex element order)."""
    tbl = TABLES[table] if isinstance(table, str) else table
    root = etree.Element(tbl.root)
    parent = root if tbl.list_tag is None else etree.SubElement(root, tbl.list_tag)
    for row in rows:
        el = root if tbl.list_tag is None else etree.SubElement(parent, tbl.row_tag)
        for f in tbl.fields:
            etree.SubElement(el, f.name).text = row.get(f.name, "")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


@lru_cache(maxsize=8)
def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"{name.lower()}.xsd")))


def validate_table(name: str, document: bytes) -> list[str]:
    """XSD errors of a table document ([] = valid)."""
    schema = _schema(name)
    doc = etree.fromstring(document)
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


__all__ += ["XML1", "XML3", "XML4", "XML5"]
