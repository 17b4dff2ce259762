"""A patient's coded demographics as people read them, and the parents a child's paper names.

Ethnicity (MA_DANTOC), occupation (MA_NGHE_NGHIEP) and religion are stored as codes; the chart and the
signed papers show "name (code)" from the catalogue in force that day (``emr.catalogues.code_name``: a
loaded version, or the list shipped with filmless). A code no list names stays a code, and says so:
nothing is guessed.

A discharge paper names the father and mother of a child under 16 (QĐ 4750/QĐ-BYT, XML7 HO_TEN_CHA /
HO_TEN_ME: "trường hợp người bệnh là trẻ em dưới 16 tuổi", per annex 3 of Circular 56/2017/TT-BYT); the
guardian (NGUOI_GIAM_HO) is named with them when the record holds one.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from ..catalogues import code_name, has_versions
from ..catalogues.packaged import SHIPPED
from ..i18n import t
from ..models import Patient

__all__ = ["CHILD_UNDER", "age_on", "coded_text", "demographic_lines", "parent_lines"]

CHILD_UNDER = 16  # years; XML7 HO_TEN_CHA / HO_TEN_ME (QĐ 4750), Circular 56/2017/TT-BYT annex 3
_FIELDS = (("ethnicity", "ethnicity_code"), ("occupation", "occupation_code"), ("religion", "religion_code"))


def coded_text(session: Session, kind: str, code: str | None, on: date) -> str:
    """``Kinh (01)``; a code no list names: ``mã 00001 (chưa có danh mục)`` / ``(không có trong danh mục)``."""
    if not code:
        return "—"
    name = code_name(session, kind, code, on)
    if name:
        return f"{name} ({code})"
    listed = kind in SHIPPED or has_versions(session, kind)
    return t("patients.code_unlisted" if listed else "patients.code_no_list", code=code)


def demographic_lines(session: Session, patient: Patient, on: date, *, religion: bool = True) -> list[tuple[str, str]]:
    """(label, text) of ethnicity, occupation and (unless ``religion`` is False) religion; unset ones left out
    (ethnicity always has a value: XML1 MA_DANTOC is required)."""
    out = []
    for kind, attr in _FIELDS:
        if kind == "religion" and not religion:
            continue
        code = getattr(patient, attr)
        if code:
            out.append((t(f"patients.{kind}"), coded_text(session, kind, code, on)))
    return out


def age_on(patient: Patient, on: date) -> int:
    """Full years on ``on``; a birth year only counts as born on 31 December (the youngest the year
    allows: someone who may still be a child is treated as one, so a parent is named rather than left off)."""
    born = patient.birth_date
    if patient.birth_year_only:
        return on.year - born.year - 1 if on.year > born.year else 0
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def parent_lines(patient: Patient, on: date) -> list[tuple[str, str]]:
    """Father, mother and guardian of a child under :data:`CHILD_UNDER` on ``on`` (those the record holds)."""
    if age_on(patient, on) >= CHILD_UNDER:
        return []
    names = (
        ("patients.father_name", patient.father_name),
        ("patients.mother_name", patient.mother_name),
        ("patients.guardian_name", patient.guardian_name),
    )
    return [(t(key), value) for key, value in names if value]
