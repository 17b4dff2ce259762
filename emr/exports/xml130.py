"""The QĐ 130/4750 tables XML1, XML3, XML4, XML5 of one closed visit.

:func:`build_rows` maps a :class:`VisitRecord` onto the annex fields (all
values strings, '' when unknown); :func:`check_rows` is the pre-submission
check; :func:`render_table` writes a table document in annex element order
(UTF-8); :func:`validate_table` checks it against the project's XSD.

Money comes from the price each order snapshotted from the service price
catalogue when it was placed and from the visit's benefit level (MUC_HUONG);
the arithmetic is in :mod:`.money`. What the EMR does not hold is written as
the annex's neutral value: drugs and supplies 0, service quantity 1, payment
rates 100. A service without a price or an insured visit without a benefit
level leaves its money fields empty and fails the pre-submission check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

from lxml import etree

from ..i18n import catalogue, t
from ..models import ImagingOrder
from .config import ExportConfig
from .exceptions import FieldProblem
from .money import ZERO, ServiceAmounts, fmt_money, service_amounts, visit_totals
from .records import VisitRecord, admission_diagnosis, fmt_date, fmt_datetime, latest_of, local
from .tables import TABLES, XML1, XML3, XML4, XML5, Table

__all__ = [
    "Rows",
    "build_rows",
    "check_rows",
    "render_table",
    "validate_table",
    "XSD_DIR",
    "benefit_level",
    "treatment_days",
    "weight_kg",
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
# PHAM_VI: 1 = within the insurance's scope, 2 = outside it (the service has no BHYT price).
_IN_SCOPE, _OUT_OF_SCOPE = "1", "2"
# MA_PTTT (payment method of a row): 1 = fee for service, 2 = capitation, 3 = DRG. Imaging
# services billed by this EMR are paid per service; T_BHTT_GDV sums T_BHTT over the rows with 1.
_FEE_FOR_SERVICE = "1"
# SO_NGAY_DTRI by MA_LOAI_KCB (annex, table 1, field 38): 0 for 01, 07, 09; NGAY_RA − NGAY_VAO + 1
# (calendar days, admission date counted) for 02, 03, 04, 06. Codes 05 and 08 count days of
# medication or of services, which this EMR does not hold.
_ZERO_DAYS = {"01", "07", "09"}
_SPAN_DAYS = {"02", "03", "04", "06"}
_SERVICE_MONEY = ("DON_GIA_BV", "DON_GIA_BH", "THANH_TIEN_BV", "THANH_TIEN_BH", "T_BNTT", "T_BNCCT", "T_BHTT")
_FUND_MONEY = ("MUC_HUONG", "T_BNCCT", "T_BHTT")
_VISIT_MONEY = ("T_TONGCHI_BV", "T_TONGCHI_BH", "T_BNTT", "T_BNCCT", "T_BHTT", "T_BHTT_GDV")
_VISIT_FUND = ("T_BNCCT", "T_BHTT", "T_BHTT_GDV")


def benefit_level(card: str | None, entered: int | None = None) -> str:
    """MUC_HUONG (%): the level entered at registration, else the legacy card's benefit digit, else ''.

    A 10-digit card number (the new format) does not carry the level: it must be entered.
    """
    if entered is not None:
        return str(entered)
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


def _insured(record: VisitRecord) -> bool:
    return bool(record.patient.bhyt_number)


def _level(record: VisitRecord) -> int | None:
    """The visit's benefit level as a number; None when unknown (or the patient has no card)."""
    if not _insured(record):
        return None
    level = benefit_level(record.patient.bhyt_number, record.encounter.benefit_level)
    return int(level) if level else None


@dataclass(frozen=True)
class _Money:
    """One service's money: its XML3 fields and amounts (None: no price)."""

    fields: dict[str, str]
    amounts: ServiceAmounts | None
    fund_known: bool  # False: insured and covered, but the benefit level is unknown


def _service_money(record: VisitRecord, order: ImagingOrder) -> _Money:
    insured = _insured(record)
    level = _level(record)
    fields = {name: "" for name in _SERVICE_MONEY}
    fields["MA_PTTT"] = _FEE_FOR_SERVICE
    fields["MUC_HUONG"] = (str(level) if level is not None else "") if insured else "0"
    fields["PHAM_VI"] = _IN_SCOPE
    if order.price_hospital is None:
        return _Money(fields, None, True)
    covered = order.price_insurance is not None
    if not covered:
        fields["PHAM_VI"] = _OUT_OF_SCOPE
    fund_known = not (insured and covered and level is None)
    amounts = service_amounts(
        quantity=1,
        price_hospital=order.price_hospital,
        price_insurance=order.price_insurance,
        benefit_level=level if fund_known else 0,
        insured=insured,
    )
    fields.update(
        {
            "DON_GIA_BV": fmt_money(amounts.price_hospital),
            "DON_GIA_BH": fmt_money(amounts.price_insurance),
            "THANH_TIEN_BV": fmt_money(amounts.total_hospital),
            "THANH_TIEN_BH": fmt_money(amounts.total_insurance),
            "T_BNTT": fmt_money(amounts.patient_pays),
            "T_BNCCT": fmt_money(amounts.copayment) if fund_known else "",
            "T_BHTT": fmt_money(amounts.fund_pays) if fund_known else "",
        }
    )
    return _Money(fields, amounts, fund_known)


def _visit_money(services: list[_Money]) -> dict[str, str]:
    """XML1's money: the sums of the service rows; '' where a row's amount is unknown."""
    out = {"T_THUOC": fmt_money(ZERO), "T_VTYT": fmt_money(ZERO), "T_NGUONKHAC": fmt_money(ZERO)}
    if any(m.amounts is None for m in services):
        return {**out, **{name: "" for name in _VISIT_MONEY}}
    totals = visit_totals(m.amounts for m in services if m.amounts is not None)
    fund_known = all(m.fund_known for m in services)
    fee_for_service = visit_totals(
        m.amounts for m in services if m.amounts is not None and m.fields.get("MA_PTTT") == _FEE_FOR_SERVICE
    )
    return {
        **out,
        "T_TONGCHI_BV": fmt_money(totals.total_hospital),
        "T_TONGCHI_BH": fmt_money(totals.total_insurance),
        "T_BNTT": fmt_money(totals.patient_pays),
        **(
            {
                "T_BNCCT": fmt_money(totals.copayment),
                "T_BHTT": fmt_money(totals.fund_pays),
                "T_BHTT_GDV": fmt_money(fee_for_service.fund_pays),
            }
            if fund_known
            else {name: "" for name in _VISIT_FUND}
        ),
    }


def treatment_days(visit_type: str, admitted: datetime | None, discharged: datetime | None) -> str:
    """SO_NGAY_DTRI: calendar days in local time from the admission (NGAY_VAO) to NGAY_RA, both counted."""
    if discharged is None:
        return ""
    if visit_type in _ZERO_DAYS:
        return "0"
    start, end = local(admitted), local(discharged)
    if visit_type in _SPAN_DAYS and start is not None and end is not None:
        return str((end.date() - start.date()).days + 1)
    return ""


def weight_kg(value: str | None) -> str:
    """CAN_NANG: kilograms with a decimal point and exactly two decimals ('' when unknown or not a number)."""
    if not value:
        return ""
    try:
        number = Decimal(value.replace(",", ".").strip())
    except InvalidOperation:
        return value  # the check reports the format
    return f"{number.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)}"


def _discharge_content(record: VisitRecord) -> dict[str, str]:
    """The signed discharge paper's text fields (PP_DIEU_TRI, GHI_CHU come from it), {} without one."""
    for item in reversed(record.other_documents):
        if item.document.form_type == "discharge_summary":
            return {k: str(v) for k, v in item.content.items() if v not in (None, "")}
    return {}


def _xml1(record: VisitRecord, config: ExportConfig, money: list[_Money]) -> dict[str, str]:
    e, p = record.encounter, record.patient
    discharge = _discharge_content(record)
    admission = latest_of(record, "admission_note")
    codes = [c for c, _ in record.diagnoses]
    settled = e.discharged_at or e.closed_at
    settled_local = local(settled)
    visit_type = _VISIT_TYPE.get(e.kind, "")
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
        "CHAN_DOAN_VAO": admission_diagnosis(e, admission.content if admission else None) or "",
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
        "SO_NGAY_DTRI": treatment_days(visit_type, e.admitted_at, e.discharged_at),
        "PP_DIEU_TRI": discharge.get("treatment", ""),
        "KET_QUA_DTRI": e.treatment_result or "",
        "MA_LOAI_RV": e.discharge_type or "",
        "GHI_CHU": discharge.get("doctor_advice", ""),
        "NGAY_TTOAN": fmt_datetime(settled),
        **_visit_money(money),
        "NAM_QT": f"{settled_local:%Y}" if settled_local else "",
        "THANG_QT": f"{settled_local:%m}" if settled_local else "",
        "MA_LOAI_KCB": visit_type,
        "MA_KHOA": record.department.code if record.department else "",
        "MA_CSKCB": config.facility_code,
        "MA_KHUVUC": "",
        "CAN_NANG": weight_kg(e.weight_kg),
        "CAN_NANG_CON": "",
        "NAM_NAM_LIEN_TUC": fmt_date(p.bhyt_five_years_since),
        "NGAY_TAI_KHAM": "",
        "MA_HSBA": e.record_no or "",
        "MA_TTDV": config.head_code or "",
        "DU_PHONG": "",
    }


def _xml3_and_4(
    record: VisitRecord, config: ExportConfig, money: list[_Money]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    e = record.encounter
    main = record.diagnoses[0][0] if record.diagnoses else ""
    services: list[dict[str, str]] = []
    results: list[dict[str, str]] = []
    for order, paid in zip(record.orders, money, strict=True):
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
                "DON_VI_TINH": order.price_unit or "Lần",
                "SO_LUONG": "1",
                "TYLE_TT_DV": "100",
                "TYLE_TT_BH": "100",
                **paid.fields,
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
    money = [_service_money(record, o) for o in record.orders]
    services, results = _xml3_and_4(record, config, money)
    return {"XML1": [_xml1(record, config, money)], "XML3": services, "XML4": results, "XML5": _xml5(record)}


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


def _money_problems(rows: Rows, record: VisitRecord | None) -> list[FieldProblem]:
    """A service without a price; an insured visit whose benefit level is unknown."""
    problems: list[FieldProblem] = []
    if record is not None and _insured(record) and _level(record) is None:
        problems.append(_problem("XML1", 1, "MUC_HUONG", "exports.check.benefit_unknown"))
    for i, row in enumerate(rows.get("XML3", []), start=1):
        if row.get("DON_GIA_BV", "") == "":
            problems.append(
                _problem(
                    "XML3",
                    i,
                    "DON_GIA_BV",
                    "exports.check.no_price",
                    service=row.get("TEN_DICH_VU", ""),
                    code=row.get("MA_DICH_VU", "") or "—",
                )
            )
    return problems


def _explained_blanks(rows: Rows, problems: list[FieldProblem]) -> set[tuple[str, int, str]]:
    """Empty money fields that a 'no price' or 'benefit level unknown' problem already explains."""
    keys = {(p.table, p.row, p.key) for p in problems}
    out: set[tuple[str, int, str]] = set()
    priceless = [r for (table, r, key) in keys if table == "XML3" and key == "exports.check.no_price"]
    for r in priceless:
        out.update(("XML3", r, name) for name in _SERVICE_MONEY)
    if priceless:
        out.update(("XML1", 1, name) for name in _VISIT_MONEY)
    if ("XML1", 1, "exports.check.benefit_unknown") in keys:
        for r in range(1, len(rows.get("XML3", [])) + 1):
            out.update(("XML3", r, name) for name in _FUND_MONEY)
        out.update(("XML1", 1, name) for name in _VISIT_FUND)
    return out


def check_rows(rows: Rows, *, record: VisitRecord | None = None) -> list[FieldProblem]:
    """Every mandatory field, maximum length and format, per table, row and field.

    Plus the visit-level rules: it must be closed, every service must have a
    price, an insured visit must have a benefit level (MUC_HUONG), and an
    imaging visit must have a signed report for each service (XML4). The
    empty money fields a missing price or benefit level leaves are reported
    once, as that cause, not field by field.
    """
    problems: list[FieldProblem] = []
    if record is not None and record.encounter.status != "closed":
        problems.append(_problem("XML1", 1, "NGAY_RA", "exports.check.not_closed"))
    problems += _money_problems(rows, record)
    explained = _explained_blanks(rows, problems)
    for name, table_rows in rows.items():
        table = TABLES[name]
        for i, row in enumerate(table_rows, start=1):
            for f in table.fields:
                value = row.get(f.name, "")
                if value == "":
                    if f.required and (name, i, f.name) not in explained:
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
                elif f.kind == "date_or_datetime":
                    ok = bool(_DATE.fullmatch(value)) or (bool(_DATETIME.fullmatch(value)) and _valid_datetime(value))
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
