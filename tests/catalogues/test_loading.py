"""Loading Ministry catalogues: the published layouts (CSV with a title row, XLSX), all lines or
none with Vietnamese errors by line, versions that close the previous one, the package's units."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.catalogues import (
    admin_unit_map_from_package,
    admin_units_from_package,
    check_code,
    codes_on,
    entry_on,
    load_catalogue,
    new_communes,
    search_entries,
    store_version,
    version_on,
)
from emr.core.exceptions import FileRejected
from emr.models import AuditEntry, CatalogueEntry, CatalogueVersion, Icd10Code

from .conftest import ADMIN_ACTOR, load, load_all


def test_every_sample_file_loads_with_its_published_layout(session: Session) -> None:
    load_all(session)
    day = date(2026, 1, 1)
    # ICD-10: the title row above the header is skipped, the Vietnamese name column is used
    assert entry_on(session, "icd10", "J18.9", day).name == "Viêm phổi, không xác định"
    assert len(codes_on(session, "icd10", day)) == 10
    # the diagnoses' foreign-key table follows the catalogue (export disease names)
    assert session.get(Icd10Code, "J44.9").title == "Bệnh phổi tắc nghẽn mạn tính, không xác định"
    # DVKT: MA_TUONG_DUONG / TEN_DVKT_PHEDUYET / DON_GIA (empty = no insurance price)
    ct = entry_on(session, "dvkt", "18.0043.0002", day)
    assert (ct.name, ct.price) == ("Chụp CT ngực không tiêm thuốc cản quang", Decimal("536000.00"))
    assert entry_on(session, "dvkt", "18.0001.0004", day).price is None
    assert entry_on(session, "facility", "01001", day).parent == "01"
    # administrative units: provinces derived from the communes' lines, communes under provinces
    assert entry_on(session, "admin_unit", "79", day).name == "Thành phố Hồ Chí Minh"
    assert entry_on(session, "admin_unit", "26740", day).parent == "79"
    # the old commune split between two new ones maps to both
    assert new_communes(session, "00001", day) == ["00004", "00097"]
    assert check_code(session, "admin_unit", "00001", day).key == "catalogues.check.old_commune"
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.load")).all()
    assert len(audit) == 6 and all(a.outcome == "success" for a in audit)


def test_bad_file_loads_nothing_and_names_every_bad_line(session: Session) -> None:
    with pytest.raises(FileRejected) as err:
        load(session, "icd10", "icd10_bad.csv")
    assert [p[0] for p in err.value.problems] == [3, 4, 5]
    messages = err.value.messages()
    assert messages[0] == "Dòng 3: cột MABENH có giá trị «a0x» sai định dạng"
    assert messages[1] == "Dòng 4: thiếu giá trị cột TENBENH"
    assert messages[2] == "Dòng 5: mã A00 đã có ở dòng 2"
    assert session.scalar(select(func.count()).select_from(CatalogueVersion)) == 0
    assert session.scalar(select(func.count()).select_from(CatalogueEntry)) == 0
    assert session.get(Icd10Code, "A00") is None
    refused = session.scalar(select(AuditEntry).where(AuditEntry.action == "catalog.load"))
    assert refused.outcome == "failure" and json.loads(refused.details)["lines"] == [3, 4, 5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mã,Tên khác\nA00,x\n", "Dòng 1: không tìm thấy dòng tiêu đề trong 20 dòng đầu (cần các cột MABENH, TENBENH)"),
        ("MA_BENH,TEN_BENH\n", "Dòng 1: tệp không có dòng dữ liệu nào"),
    ],
)
def test_files_without_header_or_lines_are_refused(session: Session, tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FileRejected) as err:
        load_catalogue(session, ADMIN_ACTOR, "icd10", path, valid_from=date(2025, 1, 1))
    assert err.value.messages() == [expected]


def test_latin1_and_broken_xlsx_are_refused(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("MA_BENH,TEN_BENH\nA00,Bệnh tả\n".encode("cp1258", errors="replace").replace(b"?", b"\xe9"))
    with pytest.raises(FileRejected) as err:
        load_catalogue(session, ADMIN_ACTOR, "icd10", path, valid_from=date(2025, 1, 1))
    assert err.value.problems[0][1] == "catalogues.error.encoding"
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04not a zip")
    with pytest.raises(FileRejected) as err:
        load_catalogue(session, ADMIN_ACTOR, "icd10", broken, valid_from=date(2025, 1, 1))
    assert err.value.problems[0][1] == "catalogues.error.xlsx"


def test_xlsx_as_published_number_cells_keep_their_leading_zeros(session: Session, tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["DANH MỤC CƠ SỞ KHÁM BỆNH, CHỮA BỆNH"])
    sheet.append([])
    sheet.append(["STT", "Mã CSKCB", "Tên CSKCB", "Mã tỉnh"])
    sheet.append([1, 1001, "Bệnh viện Bạch Mai", 1])  # Excel turned the codes into numbers
    sheet.append([2, "79024", "Bệnh viện Chợ Rẫy", "79"])
    path = tmp_path / "cskcb.xlsx"
    book.save(path)
    result = load_catalogue(session, ADMIN_ACTOR, "facility", path, valid_from=date(2025, 1, 1))
    assert result.entries == 2
    assert entry_on(session, "facility", "01001", date(2025, 1, 2)).parent == "01"
    book = Workbook()
    book.active.append(["MA_CSKCB", "TEN_CSKCB"])
    book.active.append(["7A024", "Sai mã"])
    bad = tmp_path / "bad.xlsx"
    book.save(bad)
    with pytest.raises(FileRejected) as err:
        load_catalogue(session, ADMIN_ACTOR, "facility", bad, valid_from=date(2026, 1, 1))
    assert err.value.messages() == ["Dòng 2: cột MACSKCB có giá trị «7A024» sai định dạng"]
    assert version_on(session, "facility", date(2026, 6, 1)).source == "cskcb.xlsx"


def test_a_new_version_closes_the_previous_one_and_codes_are_checked_by_date(session: Session, tmp_path: Path) -> None:
    first = load(session, "icd10", since=date(2024, 1, 1))
    newer = tmp_path / "icd10-2026.csv"
    newer.write_text(
        'MA_BENH,TEN_BENH\nJ18.9,"Viêm phổi, không xác định"\nU07.1,COVID-19, đã xác định virus\n',
        encoding="utf-8",
    )
    with pytest.raises(FileRejected) as err:  # not on or before the newest version: history is kept
        load_catalogue(session, ADMIN_ACTOR, "icd10", newer, valid_from=date(2024, 1, 1))
    assert err.value.problems[0][1] == "catalogues.error.not_after"
    second = load_catalogue(session, ADMIN_ACTOR, "icd10", newer, valid_from=date(2026, 1, 1))
    assert second.closed_version_id == first.version_id
    old = session.get(CatalogueVersion, first.version_id)
    assert (old.valid_from, old.valid_to) == (date(2024, 1, 1), date(2025, 12, 31))
    assert check_code(session, "icd10", "R05", date(2025, 12, 31)) is None
    gone = check_code(session, "icd10", "R05", date(2026, 1, 1))
    assert gone.key == "catalogues.check.unknown_icd10" and gone.params["version"] == "icd10-2026.csv"
    assert check_code(session, "icd10", "U07.1", date(2025, 12, 31)).key == "catalogues.check.unknown_icd10"
    assert check_code(session, "icd10", "U07.1", date(2026, 3, 1)) is None
    assert check_code(session, "icd10", "J18.9", date(2023, 12, 31)).key == "catalogues.check.no_version"
    # a kind never loaded is not enforced
    assert check_code(session, "dvkt", "ANY.CODE", date(2026, 3, 1)) is None
    # the same file again is refused (loaded already)
    with pytest.raises(FileRejected) as err:
        load_catalogue(session, ADMIN_ACTOR, "icd10", newer, valid_from=date(2027, 1, 1))
    assert err.value.problems[0][1] == "catalogues.error.same_file"


def test_mapping_needs_the_new_communes_and_units_check_their_province(session: Session) -> None:
    with pytest.raises(FileRejected) as err:  # no unit list yet: the new communes cannot be checked
        load(session, "admin_unit_map")
    assert {p[1] for p in err.value.problems} == {"catalogues.error.parent"}
    load(session, "admin_unit")
    load(session, "admin_unit_map")
    day = date(2026, 1, 1)
    assert check_code(session, "admin_unit", "26740", day, parent="79") is None
    assert check_code(session, "admin_unit", "26740", day, parent="01").key == "catalogues.check.wrong_province"


def test_the_package_units_are_the_34_provinces_of_july_2025(session: Session) -> None:
    lines, source, digest = admin_units_from_package()
    assert source.startswith("vietnam-provinces ")
    result = store_version(
        session, ADMIN_ACTOR, "admin_unit", lines, valid_from=date(2025, 7, 1), source=source, sha256=digest
    )
    version = session.get(CatalogueVersion, result.version_id)
    provinces = session.scalar(
        select(func.count()).where(CatalogueEntry.version_id == version.id, CatalogueEntry.parent.is_(None))
    )
    assert provinces == 34
    assert result.entries == 34 + len(lines) and len(lines) > 3000
    assert entry_on(session, "admin_unit", "26737", date(2025, 7, 1)).name == "Phường Tân Định"
    assert check_code(session, "admin_unit", "26737", date(2025, 7, 1), parent="79") is None
    rows, total = search_entries(session, version.id, "tan dinh")
    assert total >= 1 and "26737" in [r.code for r in rows]
    # the shipped old-to-new mapping: every new commune it names is in the package's list (or nothing loads)
    lines, source, digest = admin_unit_map_from_package()
    assert len(lines) > 10000 and source.startswith("vietnamadminunits")
    store_version(
        session, ADMIN_ACTOR, "admin_unit_map", lines, valid_from=date(2025, 7, 1), source=source, sha256=digest
    )
    day = date(2026, 1, 1)
    assert new_communes(session, "26734", day) == ["26737"]  # Phường Tân Định, Quận 1 → Phường Tân Định
    found = check_code(session, "admin_unit", "26734", day)
    assert found is not None and found.params == {"code": "26734", "new": "26737"}


def test_search_pages_by_code_and_by_name_without_diacritics(session: Session) -> None:
    version = load(session, "icd10").version_id
    rows, total = search_entries(session, version, "", page=2, per_page=4)
    assert total == 10 and [r.code for r in rows] == ["I10", "J18.9", "J44.9", "K29.7"]
    assert [r.code for r in search_entries(session, version, "viem phoi")[0]] == ["J18.9"]
    assert [r.code for r in search_entries(session, version, "Viêm")[0]] == ["J18.9", "K29.7"]
    assert [r.code for r in search_entries(session, version, "j4")[0]] == ["J44.9"]
    assert search_entries(session, version, "100%_")[1] == 0  # LIKE wildcards are text
