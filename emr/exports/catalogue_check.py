"""The pre-submission check's catalogue part: every coded field of the claim tables against the
Ministry catalogue version in force on the day of the service (issue 15 §4).

Which fields carry which catalogue comes from the QĐ 130/4750 annex (see
../shared/vn-exchange-formats.md): XML1 MA_BENH_CHINH / MA_BENH_KT (ICD-10,
several separated by ";"), MATINH_CU_TRU / MAXA_CU_TRU (administrative units,
the commune inside the province), MA_CSKCB / MA_DKBD / MA_NOI_DI / MA_NOI_DEN
(facilities), MA_KHOA (departments); XML3 MA_DICH_VU (DVKT), MA_KHOA, MA_BENH;
XML4 MA_DICH_VU. The day is the visit's admission (XML1 NGAY_VAO) and each
service line's order time (XML3 NGAY_YL), XML4's result time (NGAY_KQ).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.orm import Session

from emr.catalogues import CodeCheck, check_code
from emr.i18n import t

from .xml130 import FieldProblem, Rows, _problem

__all__ = ["catalogue_problems"]

# table → [(field, catalogue kind)]; the date field of the row decides the version.
_FIELDS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "XML1": (
        "NGAY_VAO",
        [
            ("MA_BENH_CHINH", "icd10"),
            ("MA_BENH_KT", "icd10"),
            ("MA_CSKCB", "facility"),
            ("MA_DKBD", "facility"),
            ("MA_NOI_DI", "facility"),
            ("MA_NOI_DEN", "facility"),
            ("MA_KHOA", "department"),
            ("MATINH_CU_TRU", "admin_unit"),
            ("MAXA_CU_TRU", "admin_unit"),
        ],
    ),
    "XML3": ("NGAY_YL", [("MA_DICH_VU", "dvkt"), ("MA_KHOA", "department"), ("MA_BENH", "icd10")]),
    "XML4": ("NGAY_KQ", [("MA_DICH_VU", "dvkt")]),
}


def _day(value: str) -> date | None:
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def catalogue_problems(session: Session, rows: Rows) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    for table, (date_field, fields) in _FIELDS.items():
        for i, row in enumerate(rows.get(table, []), start=1):
            on = _day(row.get(date_field, ""))
            if on is None:
                continue  # the format check reports the date itself
            for field, kind in fields:
                value = row.get(field, "")
                for code in (c.strip() for c in value.split(";")):
                    if not code:
                        continue
                    parent = (row.get("MATINH_CU_TRU") or None) if field == "MAXA_CU_TRU" else None
                    found = check_code(session, kind, code, on, parent=parent)
                    if found is not None:
                        problems.append(_problem(table, i, field, "exports.check.catalogue", reason=_reason(found)))
    return problems


def _reason(found: CodeCheck) -> str:
    key, params = found.key, found.params
    if key == "catalogues.check.no_version":
        params = {**params, "kind": t(f"catalogues.kind.{params['kind']}")}
    return t(key, **params)
