"""What each catalogue kind looks like in the files the Ministry and Vietnam Social Security publish.

Column names are matched folded (no diacritics, case, spaces or underscores),
so ``MA_BENH``, ``Mã bệnh`` and ``ma benh`` are the same column. Sources:

- ICD-10: the Ministry's list "Danh mục mã bệnh theo ICD-10" (QĐ 4469/QĐ-BYT
  2020, the list used for MA_BENH_CHINH / MA_BENH_KT of QĐ 130/4750): columns
  ``Số TT, Số TT chương, Mã nhóm, Mã loại, Mã bệnh, Disease name, Tên bệnh…``
  under a title row; the code format is that of XML1 MA_BENH_CHINH
  (``[A-Z]\\d{2}(\\.\\d{1,2})?``, QĐ 4750 annex).
- DVKT: the social-insurance catalogue template (Mẫu 05, "danh mục dịch vụ
  kỹ thuật"): ``STT, MA_TUONG_DUONG, TEN_DVKT_PHEDUYET, TEN_DVKT_GIA,
  PHAN_LOAI_PTTT, DON_GIA, GHICHU, QUYET_DINH, TUNGAY, DENNGAY…``;
  MA_TUONG_DUONG is what XML3/XML4 carry as MA_DICH_VU (at most 15
  characters in XML4, QĐ 4750), DON_GIA the insurance price (DON_GIA_BH).
- Facilities: MA_CSKCB, 5 digits (XML1 MA_CSKCB, MA_DKBD, MA_NOI_DI/DEN).
- Departments: MA_KHOA (XML1/XML3 MA_KHOA: letters, digits, ``. _ -``).
- Administrative units after 1 July 2025 (Resolution 202/2025/QH15, two-level
  local government): province code 2 digits and commune code 5 digits as
  published by the National Statistics Office (XML1 MATINH_CU_TRU,
  MAXA_CU_TRU); one line per commune with its province.
- Unit mapping: one line per (old commune, new commune); an old commune split
  between several new ones has several lines.
- Ethnic groups: MA_DANTOC (XML1, 2 digits), the Statistics Office's list of
  QĐ 121-TCTK/PPCĐ (1979), which the QĐ 130/4750 annex names for MA_DANTOC;
  as published in the Ministry's VN Core IG (CodeSystem vn-core-race).
- Occupations: MA_NGHE_NGHIEP (XML1, at most 5 digits, QĐ 34/2020/QĐ-TTg).
  Nothing is shipped for it: a hospital loads the published list itself.
- Religions: the Statistics Office's list of QĐ 1019/QĐ-TCTK (2008), 2 digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emr.core.normalize import fold

__all__ = ["Column", "Kind", "KINDS", "header_key"]


def header_key(text: str) -> str:
    """'Mã bệnh' / 'MA_BENH' / 'ma benh' → 'mabenh'."""
    return re.sub(r"[^a-z0-9]", "", fold(text))


@dataclass(frozen=True)
class Column:
    field: str  # code | name | parent | parent_name | price
    aliases: tuple[str, ...]  # header_key() forms, first = the documented name
    required: bool = True
    pattern: str | None = None
    pad: int | None = None  # a spreadsheet number cell lost its leading zeros: pad back to this width


@dataclass(frozen=True)
class Kind:
    name: str
    columns: tuple[Column, ...]
    parent_kind: str | None = None  # parent codes must exist in this kind's version valid the same day
    unique_code: bool = True  # the mapping lists an old commune once per new commune

    def column(self, field: str) -> Column | None:
        return next((c for c in self.columns if c.field == field), None)


_ICD = r"[A-Z]\d{2}(\.\d{1,2})?"
_SERVICE = r"[A-Za-z0-9.\-_]{1,15}"
_FACILITY = r"\d{5}"
_DEPARTMENT = r"[A-Za-z0-9._-]{1,20}"
_PROVINCE = r"\d{2}"
_COMMUNE = r"\d{5}"
_ETHNICITY = r"\d{2}"
_OCCUPATION = r"\d{1,5}"
_RELIGION = r"\d{2}"

KINDS: dict[str, Kind] = {
    "icd10": Kind(
        "icd10",
        (
            Column("code", ("mabenh", "maicd", "icd10", "ma", "code"), pattern=_ICD),
            Column("name", ("tenbenh", "tenbenhgockhongsuavaocotnay", "tenbenhgoc", "tenicd", "ten", "title")),
        ),
    ),
    "dvkt": Kind(
        "dvkt",
        (
            Column("code", ("matuongduong", "madichvu", "madvkt", "code"), pattern=_SERVICE),
            Column("name", ("tendvktpheduyet", "tendichvu", "tendvktgia", "tendvkt", "name")),
            Column("price", ("dongia", "giabhyt", "dongiabh", "price"), required=False),
        ),
    ),
    "facility": Kind(
        "facility",
        (
            Column("code", ("macskcb", "macosokcb", "ma", "code"), pattern=_FACILITY, pad=5),
            Column("name", ("tencskcb", "tencosokcb", "ten", "name")),
            Column("parent", ("matinh", "province"), required=False, pattern=_PROVINCE, pad=2),
        ),
    ),
    "department": Kind(
        "department",
        (
            Column("code", ("makhoa", "ma", "code"), pattern=_DEPARTMENT),
            Column("name", ("tenkhoa", "ten", "name")),
        ),
    ),
    "admin_unit": Kind(
        "admin_unit",
        (
            Column("code", ("maxa", "maphuongxa", "ward", "code"), pattern=_COMMUNE, pad=5),
            Column("name", ("tenxa", "tenphuongxa", "wardname", "name")),
            Column("parent", ("matinh", "province"), pattern=_PROVINCE, pad=2),
            Column("parent_name", ("tentinh", "tentinhthanhpho", "provincename")),
        ),
    ),
    "admin_unit_map": Kind(
        "admin_unit_map",
        (
            Column("code", ("maxacu", "oldward", "oldcode"), pattern=_COMMUNE, pad=5),
            Column("name", ("tenxacu", "oldwardname", "oldname")),
            Column("parent", ("maxamoi", "newward", "newcode"), pattern=_COMMUNE, pad=5),
        ),
        parent_kind="admin_unit",
        unique_code=False,
    ),
    "ethnicity": Kind(
        "ethnicity",
        (
            Column("code", ("madantoc", "ma", "code"), pattern=_ETHNICITY, pad=2),
            Column("name", ("tendantoc", "dantoc", "ten", "display", "name")),
        ),
    ),
    "occupation": Kind(
        "occupation",
        (
            Column("code", ("manghenghiep", "manghe", "ma", "code"), pattern=_OCCUPATION),
            Column("name", ("tennghenghiep", "nghenghiep", "ten", "name")),
        ),
    ),
    "religion": Kind(
        "religion",
        (
            Column("code", ("matongiao", "ma", "code"), pattern=_RELIGION, pad=2),
            Column("name", ("tentongiao", "tongiao", "ten", "name")),
        ),
    ),
}
