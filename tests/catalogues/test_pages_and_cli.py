"""The catalogue pages (versions, paged diacritic-insensitive search) and `filmless emr load-catalogue`."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr import EmrSettings, open_session
from emr.catalogues import entry_on, version_on
from emr.i18n import t
from emr.models import AuditEntry, CatalogueEntry, CatalogueVersion
from filmless.cli import main
from tests.emr.conftest import csrf_token, login

from .conftest import DATA, World, load, load_all, patient_data


def test_overview_lists_every_kind_and_marks_the_missing_ones(
    session: Session, world: World, client: FlaskClient
) -> None:
    load(session, "icd10", since=date(2024, 1, 1))
    load(session, "icd10", "icd10_v2.csv", since=date(2026, 1, 1))
    load(session, "department")
    assert login(client, "records_clerk1").status_code == 302
    page = client.get("/admin/catalogues/").get_data(as_text=True)
    assert "Danh mục dùng chung" in page and "ICD-10 (mã bệnh)" in page
    assert "01/01/2024" in page and "31/12/2025" in page and "đang hiệu lực" in page
    # dvkt, facility, units, mapping, ethnicity, occupation, religion
    assert page.count("Chưa nạp (chưa kiểm tra mã theo danh mục này)") == 7
    assert 'href="/admin/catalogues/' in page


def test_version_page_searches_and_pages(session: Session, world: World, client: FlaskClient) -> None:
    load_all(session)
    icd = version_on(session, "icd10", date(2026, 1, 1))
    dvkt = version_on(session, "dvkt", date(2026, 1, 1))
    session.commit()  # no read transaction left open: SQLite would block the app's audit write
    assert login(client, "admin1").status_code == 302
    page = client.get(f"/admin/catalogues/{icd.id}?q=viem+phoi").get_data(as_text=True)
    assert "J18.9" in page and "Viêm phổi, không xác định" in page and "K29.7" not in page
    assert "1 mục, trang 1/1" in page
    units = version_on(session, "admin_unit_map", date(2026, 1, 1))
    session.commit()
    page = client.get(f"/admin/catalogues/{units.id}?q=tan+dinh").get_data(as_text=True)
    # the new commune is named beside its code
    assert "Phường Tân Định (Quận 1)" in page and "<code>26737</code> Phường Tân Định" in page
    page = client.get(f"/admin/catalogues/{dvkt.id}").get_data(as_text=True)
    assert "536.000" in page and "Đơn giá BHYT (VNĐ)" in page
    # a page past the end shows the last page
    page = client.get(f"/admin/catalogues/{icd.id}?page=999999").get_data(as_text=True)
    assert "10 mục, trang 1/1" in page
    views = session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.view")).all()
    assert [json.loads(v.details)["query"] for v in views if v.details] == ["viem phoi", "tan dinh", "", ""]


def test_many_pages(session: Session, world: World, client: FlaskClient, tmp_path: Path) -> None:
    big = tmp_path / "icd10-big.csv"
    big.write_text(
        "MA_BENH,TEN_BENH\n" + "".join(f"A{i // 10:02d}.{i % 10},Bệnh số {i}\n" for i in range(120)),
        encoding="utf-8",
    )
    from emr.catalogues import load_catalogue

    from .conftest import ADMIN_ACTOR

    version = load_catalogue(session, ADMIN_ACTOR, "icd10", big, valid_from=date(2025, 1, 1)).version_id
    session.commit()
    assert login(client, "admin1").status_code == 302
    page = client.get(f"/admin/catalogues/{version}?page=3").get_data(as_text=True)
    assert "120 mục, trang 3/3" in page and "A11.9" in page and "A04.9" not in page
    assert "Trang trước" in page and "Trang sau" not in page


def test_cli_loads_all_or_nothing_in_vietnamese(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(tmp_path))
    assert main(["emr", "migrate"]) == 0
    capsys.readouterr()
    assert main(["emr", "load-catalogue", "icd10", str(DATA / "icd10_bad.csv"), "--valid-from", "2024-01-01"]) == 1
    err = capsys.readouterr().err
    assert "Tệp icd10_bad.csv có 3 dòng lỗi; không nạp dòng nào:" in err
    assert "  Dòng 3: cột MABENH có giá trị «a0x» sai định dạng" in err
    assert main(["emr", "load-catalogue", "icd10", str(DATA / "icd10.csv"), "--valid-from", "01/01/2024"]) == 0
    assert "Đã nạp danh mục ICD-10 (mã bệnh): 10 mục, hiệu lực từ 01/01/2024." in capsys.readouterr().out
    assert main(["emr", "load-catalogue", "icd10", str(DATA / "icd10_v2.csv"), "--valid-from", "2026-01-01"]) == 0
    assert "Phiên bản trước (số 1) đã được đóng" in capsys.readouterr().out
    assert main(["emr", "load-catalogue", "admin_unit", "--package", "--valid-from", "2025-07-01"]) == 0
    assert "Đơn vị hành chính (từ 01/07/2025): 3355 mục, hiệu lực từ 01/07/2025." in capsys.readouterr().out
    assert main(["emr", "load-catalogue", "admin_unit_map", "--package", "--valid-from", "2025-07-01"]) == 0
    capsys.readouterr()
    assert main(["emr", "load-catalogue", "icd10", str(tmp_path / "missing.csv")]) == 2
    assert main(["emr", "load-catalogue", "icd10", str(DATA / "icd10.csv"), "--valid-from", "31/02/2026"]) == 2
    assert main(["emr", "load-catalogue", "dvkt", "--package"]) == 2
    assert main(["emr", "load-catalogue", "prices", str(tmp_path / "none.csv")]) == 2
    with open_session(EmrSettings(database_url=f"sqlite:///{tmp_path}/emr.sqlite3")) as s:
        assert s.scalar(select(func.count()).select_from(CatalogueVersion)) == 4
        assert entry_on(s, "admin_unit", "79", date(2025, 7, 1)).name == "Thành phố Hồ Chí Minh"
        assert s.scalar(select(func.count()).select_from(CatalogueEntry)) > 13000


def test_patient_form_says_which_commune_code_replaced_an_old_one(
    session: Session, world: World, client: FlaskClient
) -> None:
    load(session, "admin_unit")
    load(session, "admin_unit_map")
    session.commit()
    assert login(client, "records_clerk1").status_code == 302
    token = csrf_token(client, "/patients/new")
    r = client.post("/patients/new", data={**patient_data(ward_code="26734"), "csrf_token": token})
    page = r.get_data(as_text=True)
    assert r.status_code == 422
    assert re.search(r'id="err-ward_code">' + re.escape(t("catalogues.entry.ward_old")), page)
    r = client.post("/patients/new", data={**patient_data(ward_code="26737"), "csrf_token": token})
    assert r.status_code == 302


def test_the_cli_offers_every_kind() -> None:
    from emr.catalogues import KINDS
    from filmless.commands.emr import CATALOGUE_KINDS

    assert CATALOGUE_KINDS == tuple(KINDS)
