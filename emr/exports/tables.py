"""The QĐ 130/4750 tables this project exports: element order, lengths, which are mandatory.

One source for three consumers: the XML builder (element order), the
pre-submission check (mandatory fields, maximum lengths, formats) and the
XSD files in ``xsd/`` (a test regenerates them from here and compares).

Element order, names, data types and maximum sizes: the annex spreadsheet
of Decision 4750/QĐ-BYT ("Bảng 1..5", columns "Kiểu dữ liệu" and "Kích thước
tối đa"; public copy ``XML130/QD4570/phu-luc-quyet-dinh-4750.xlsx`` in the
GitHub repository dh-hos/Mo-ta-he-thong). A size of "n" in the annex is
"unlimited" here (None). Fields the annex lets carry several values joined
by ";" (cards, registration facilities, card validity dates, departments)
have a pattern for the list. The "mandatory" flags are this project's
pre-submission rules (what the portal rejects when empty). Where the EMR
cannot know a value (drugs and supplies, which it does not hold) the field is
written as 0 and not flagged; service money comes from the price catalogue
(see ``money.py``). Every element is always written, empty when unknown, as
the portal expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Field", "Table", "TABLES", "XML1", "XML3", "XML4", "XML5"]

Kind = Literal["str", "int", "dec", "datetime", "date", "date_or_datetime"]


@dataclass(frozen=True)
class Field:
    name: str
    max_len: int | None = None
    required: bool = False
    kind: Kind = "str"
    pattern: str | None = None  # extra format for codes (regular expression, whole value)


@dataclass(frozen=True)
class Table:
    name: str  # XML1 ...
    root: str  # the document element
    list_tag: str | None  # the list wrapper (None: XML1 has a single row)
    row_tag: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


def _f(
    name: str, max_len: int | None = None, required: bool = False, kind: Kind = "str", pattern: str | None = None
) -> Field:
    return Field(name, max_len, required, kind, pattern)


_MONEY = 15
# A card number: legacy 15 characters, the 10-digit social-insurance number, or since NĐ 188/2025
# (in force 15 Aug 2025) the 12-digit personal ID (CCCD) that stands in for the card.
_CARD = r"[A-Z]{2}[1-5]\d{12}|\d{10}|\d{12}"
_DATE8 = r"\d{8}"


def _list(item: str) -> str:
    """Several values joined by ';' (annex: when a new card is issued during the stay, and so on)."""
    return f"({item})(;({item}))*"


XML1 = Table(
    "XML1",
    "TONG_HOP",
    None,
    "TONG_HOP",
    (
        _f("MA_LK", 100, True),
        _f("STT", 10, True, "int"),
        _f("MA_BN", 100, True),
        _f("HO_TEN", 255, True),
        _f("SO_CCCD", 15, pattern=r"\d{9}|\d{12}"),
        _f("NGAY_SINH", 12, True, "datetime"),
        _f("GIOI_TINH", 1, True, "int", r"[123]"),
        _f("NHOM_MAU", 5),
        _f("MA_QUOCTICH", 3, True, pattern=r"\d{3}"),
        _f("MA_DANTOC", 2, True, pattern=r"\d{2}"),
        _f("MA_NGHE_NGHIEP", 5, pattern=r"\d{1,5}"),
        _f("DIA_CHI", 1024, True),
        _f("MATINH_CU_TRU", 3, True, pattern=r"\d{2,3}"),
        # Districts were abolished on 1 July 2025 (two-level local government): optional.
        _f("MAHUYEN_CU_TRU", 3, pattern=r"\d{3}"),
        _f("MAXA_CU_TRU", 5, True, pattern=r"\d{5}"),
        _f("DIEN_THOAI", 15),
        _f("MA_THE_BHYT", None, True, pattern=_list(_CARD)),
        _f("MA_DKBD", None, True, pattern=_list(r"\d{5}")),
        _f("GT_THE_TU", None, True, pattern=_list(_DATE8)),
        _f("GT_THE_DEN", None, True, pattern=_list(_DATE8)),
        _f("NGAY_MIEN_CCT", 12, kind="date_or_datetime"),
        _f("LY_DO_VV", None, True),
        _f("LY_DO_VNT", None),
        _f("MA_LY_DO_VNT", 5),
        _f("CHAN_DOAN_VAO", None, True),
        _f("CHAN_DOAN_RV", None, True),
        _f("MA_BENH_CHINH", 7, True, pattern=r"[A-Z]\d{2}(\.\d{1,2})?"),
        _f("MA_BENH_KT", 100),
        _f("MA_BENH_YHCT", 255),
        _f("MA_PTTT_QT", 125),
        _f("MA_DOITUONG_KCB", 3, True),
        _f("MA_NOI_DI", 5),
        _f("MA_NOI_DEN", 5),
        _f("MA_TAI_NAN", 1, kind="int"),
        _f("NGAY_VAO", 12, True, "datetime"),
        _f("NGAY_VAO_NOI_TRU", 12, kind="datetime"),
        _f("NGAY_RA", 12, True, "datetime"),
        _f("GIAY_CHUYEN_TUYEN", 50),
        _f("SO_NGAY_DTRI", 3, True, "int"),
        _f("PP_DIEU_TRI", None),
        _f("KET_QUA_DTRI", 1, True, "int", r"[1-7]"),
        _f("MA_LOAI_RV", 1, True, "int", r"[1-5]"),
        _f("GHI_CHU", None),
        _f("NGAY_TTOAN", 12, True, "datetime"),
        _f("T_THUOC", _MONEY, True, "dec"),
        _f("T_VTYT", _MONEY, True, "dec"),
        _f("T_TONGCHI_BV", _MONEY, True, "dec"),
        _f("T_TONGCHI_BH", _MONEY, True, "dec"),
        _f("T_BNTT", _MONEY, True, "dec"),
        _f("T_BNCCT", _MONEY, True, "dec"),
        _f("T_BHTT", _MONEY, True, "dec"),
        _f("T_NGUONKHAC", _MONEY, True, "dec"),
        _f("T_BHTT_GDV", _MONEY, True, "dec"),
        _f("NAM_QT", 4, True, "int"),
        _f("THANG_QT", 2, True, "int"),
        _f("MA_LOAI_KCB", 2, True, pattern=r"\d{2}"),
        _f("MA_KHOA", 50, True, pattern=_list(r"[A-Za-z0-9._-]+")),
        _f("MA_CSKCB", 5, True, pattern=r"\d{5}"),
        _f("MA_KHUVUC", 2),
        _f("CAN_NANG", 6, pattern=r"\d{1,3}\.\d{2}"),
        _f("CAN_NANG_CON", 100),
        _f("NAM_NAM_LIEN_TUC", 8, kind="date"),
        _f("NGAY_TAI_KHAM", 50),
        _f("MA_HSBA", 100, True),
        _f("MA_TTDV", 10, True),
        _f("DU_PHONG", None),
    ),
)

XML3 = Table(
    "XML3",
    "CHITIEU_CHITIET_DVKT_VTYT",
    "DSACH_CHI_TIET_DVKT",
    "CHI_TIET_DVKT",
    (
        _f("MA_LK", 100, True),
        _f("STT", 10, True, "int"),
        _f("MA_DICH_VU", 50, True),
        _f("MA_PTTT_QT", 255),
        _f("MA_VAT_TU", 255),
        _f("MA_NHOM", 2, True, "int"),
        _f("GOI_VTYT", 3),
        _f("TEN_VAT_TU", 1024),
        _f("TEN_DICH_VU", 1024, True),
        _f("MA_XANG_DAU", 20),
        _f("DON_VI_TINH", 50),
        _f("PHAM_VI", 1, True, "int"),
        _f("SO_LUONG", 10, True, "dec"),
        _f("DON_GIA_BV", _MONEY, True, "dec"),
        _f("DON_GIA_BH", _MONEY, True, "dec"),
        _f("TT_THAU", 25),
        _f("TYLE_TT_DV", 3, True, "int"),
        _f("TYLE_TT_BH", 3, True, "int"),
        _f("THANH_TIEN_BV", _MONEY, True, "dec"),
        _f("THANH_TIEN_BH", _MONEY, True, "dec"),
        _f("T_TRANTT", _MONEY, kind="dec"),
        _f("MUC_HUONG", 3, True, "int"),
        _f("T_NGUONKHAC_NSNN", _MONEY, kind="dec"),
        _f("T_NGUONKHAC_VTNN", _MONEY, kind="dec"),
        _f("T_NGUONKHAC_VTTN", _MONEY, kind="dec"),
        _f("T_NGUONKHAC_CL", _MONEY, kind="dec"),
        _f("T_NGUONKHAC", _MONEY, kind="dec"),
        _f("T_BNTT", _MONEY, True, "dec"),
        _f("T_BNCCT", _MONEY, True, "dec"),
        _f("T_BHTT", _MONEY, True, "dec"),
        _f("MA_KHOA", 20, True),
        _f("MA_GIUONG", 50),
        _f("MA_BAC_SI", 255, True),
        # Imaging: the project requires the performer and the machine (issue 7).
        _f("NGUOI_THUC_HIEN", 255, True),
        _f("MA_BENH", 100),
        _f("MA_BENH_YHCT", 255),
        _f("NGAY_YL", 12, True, "datetime"),
        _f("NGAY_TH_YL", 12, True, "datetime"),
        _f("NGAY_KQ", 12, True, "datetime"),
        _f("MA_PTTT", 1, True, "int", r"[123]"),
        _f("VET_THUONG_TP", 1, kind="int"),
        _f("PP_VO_CAM", 1, kind="int"),
        _f("VI_TRI_TH_DVKT", 3, kind="int"),
        _f(
            "MA_MAY",
            1024,
            True,
            pattern=r"[A-Z]{2,3}\.\d\.\d{5}\.[A-Za-z0-9\-]+(;[A-Z]{2,3}\.\d\.\d{5}\.[A-Za-z0-9\-]+)*",
        ),
        _f("MA_HIEU_SP", 255),
        _f("TAI_SU_DUNG", 1, kind="int"),
        _f("DU_PHONG", None),
    ),
)

XML4 = Table(
    "XML4",
    "CHITIEU_CHITIET_DICHVUCANLAMSANG",
    "DSACH_CHI_TIET_CLS",
    "CHI_TIET_CLS",
    (
        _f("MA_LK", 100, True),
        _f("STT", 10, True, "int"),
        _f("MA_DICH_VU", 15, True),
        _f("MA_CHI_SO", 50),
        _f("TEN_CHI_SO", 255),
        _f("GIA_TRI", 50),
        _f("DON_VI_DO", 50),
        _f("MO_TA", None, True),
        _f("KET_LUAN", None, True),
        _f("NGAY_KQ", 12, True, "datetime"),
        _f("MA_BS_DOC_KQ", 255, True),
        _f("DU_PHONG", None),
    ),
)

XML5 = Table(
    "XML5",
    "CHITIEU_CHITIET_DIENBIENLAMSANG",
    "DSACH_CHI_TIET_DIEN_BIEN_BENH",
    "CHI_TIET_DIEN_BIEN_BENH",
    (
        _f("MA_LK", 100, True),
        _f("STT", 10, True, "int"),
        _f("DIEN_BIEN_LS", None, True),
        _f("GIAI_DOAN_BENH", None),
        _f("HOI_CHAN", None),
        _f("PHAU_THUAT", None),
        _f("THOI_DIEM_DBLS", 12, True, "datetime"),
        _f("NGUOI_THUC_HIEN", 255, True),
        _f("DU_PHONG", None),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (XML1, XML3, XML4, XML5)}
