"""CCCD/BHYT validation and diacritic folding (pure functions)."""

from __future__ import annotations

from datetime import date

import pytest

from emr.core.identifiers import bhyt_problem, bhyt_ssn, cccd_problem
from emr.core.normalize import fold, split_name


@pytest.mark.parametrize(
    ("cccd", "sex", "born", "problem"),
    [
        ("079190001234", "F", date(1990, 5, 17), None),
        ("001085012345", "M", date(1985, 1, 1), None),
        ("001005012345", "M", date(2005, 1, 1), "patients.error.cccd_mismatch"),  # 0 = 1900s male
        ("001205012345", "M", date(2005, 1, 1), None),  # 2 = 2000s male
        ("001305012345", "F", date(2005, 1, 1), None),  # 3 = 2000s female
        ("079090001234", "F", date(1990, 5, 17), "patients.error.cccd_mismatch"),  # male digit for a woman
        ("079191001234", "F", date(1990, 5, 17), "patients.error.cccd_mismatch"),  # year 91 ≠ 90
        ("003190001234", "F", date(1990, 5, 17), "patients.error.cccd_province"),  # 003 is no province
        ("07919000123", "F", date(1990, 5, 17), "patients.error.cccd_format"),
        ("07919000123a", "F", date(1990, 5, 17), "patients.error.cccd_format"),
    ],
)
def test_cccd_rules(cccd: str, sex: str, born: date, problem: str | None) -> None:
    assert cccd_problem(cccd, sex, born) == problem


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("DN4790123456789", True),
        ("0123456789", True),
        ("dn4790123456789", False),
        ("DN6790123456789", False),
        ("DN47901234567", False),
        ("012345678", False),
        ("", False),
    ],
)
def test_bhyt_forms(number: str, ok: bool) -> None:
    assert (bhyt_problem(number) is None) is ok


def test_bhyt_legacy_and_new_share_the_social_insurance_number() -> None:
    assert bhyt_ssn("DN4790123456789") == "0123456789"


def test_fold_removes_diacritics_and_d_bar() -> None:
    assert fold("  Nguyễn   Thị Hồng NHUNG ") == "nguyen thi hong nhung"
    assert fold("Đặng Đức Đạt") == "dang duc dat"
    assert fold("Trần Ngọc Ánh") == "tran ngoc anh"
    assert split_name("Nguyễn Thị Hồng Nhung") == ("Nguyễn", "Thị Hồng Nhung")
