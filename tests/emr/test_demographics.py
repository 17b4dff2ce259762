"""Ethnicity, occupation and religion are shown by name ("Kinh (01)") from the published lists, never as a bare
code; a code no list names says so. The discharge paper and the admission note print ethnicity and occupation;
a child's discharge paper (under 16, QĐ 4750 XML7 HO_TEN_CHA/HO_TEN_ME) names the father, mother and guardian."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.catalogues import code_name, demographics_from_package, store_version
from emr.core.exceptions import ValidationFailed
from emr.documents import service as documents
from emr.i18n import t
from emr.models import Patient
from emr.patients import encounters
from emr.patients import service as patients
from emr.patients.demographics import age_on, coded_text, parent_lines
from emr.signing import render_document_pdf
from emr.signing import service as svc
from emr.web.forms import message
from filmless.cli import main

from .conftest import ADMIN_ACTOR, World, csrf_token, login, patient_data

DISCHARGE = {
    "summary": "Sốt cao 3 ngày, hết sốt ngày thứ 2.",
    "discharge_diagnosis": "Viêm phổi",
    "treatment": "Nội khoa",
    "result": "2",
}
ADMISSION = {"reason": "Sốt, ho", "examination": "Phổi ran ẩm", "initial_diagnosis": "Viêm phổi"}
CHILD = {
    "full_name": "Lò Văn Tùng",
    "birth_date": "2021-06-01",
    "sex": "M",
    "ethnicity_code": "03",  # Thái
    "occupation_code": "00001",
    "religion_code": "01",
    "father_name": "Lò Văn Pọm",
    "mother_name": "Lường Thị Ơn",
    "guardian_name": "Lò Thị Bua",
    "cccd": None,
    "bhyt_number": None,
}


def _pdf_text(pdf: bytes) -> str:
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True).stdout
    return " ".join(text.decode().split())


def _paper(session: Session, world: World, tmp_path: Path, form_type: str, **patient: Any) -> Any:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data(**patient))
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "inpatient", "department_code": world.department_code}
    )
    session.commit()
    doc = documents.create_document(
        session,
        doctor,
        {
            "encounter_id": enc.id,
            "form_type": form_type,
            "content": DISCHARGE if form_type != "admission_note" else ADMISSION,
        },
    )
    version = next(v for v in doc.versions if v.number == doc.current_version)
    config = svc.SigningConfig(
        trust_anchors_dir=tmp_path / "anchors", public_url="https://emr.benhvien.example", hospital_name="BV filmless"
    )
    return svc.render_input(session, doc, version, "code-demo1", config)


def test_shipped_lists_are_the_published_ones(session: Session) -> None:
    lines, source, _ = demographics_from_package("ethnicity")
    codes = {ln.code: ln.name for ln in lines}
    # QĐ 121-TCTK/PPCĐ (1979) order, as MA_DANTOC uses it: 04 Hoa, 05 Khơ-me, 06 Mường (not the 2008 re-order)
    assert (codes["01"], codes["04"], codes["05"], codes["06"], codes["54"]) == (
        "Kinh",
        "Hoa",
        "Khơ-me",
        "Mường",
        "Rơ măm",
    )
    assert len(lines) == 56 and "121-TCTK" in source
    religions = {ln.code: ln.name for ln in demographics_from_package("religion")[0]}
    assert len(religions) == 14 and religions["01"] == "Phật giáo" and religions["08"] == "Tin Lành"
    on = date(2026, 3, 1)
    # a kind never loaded: the shipped list; occupation has none, so its code stays a code
    assert code_name(session, "ethnicity", "03", on) == "Thái"
    assert code_name(session, "occupation", "00001", on) is None
    assert coded_text(session, "occupation", "00001", on) == "mã 00001 (chưa có danh mục)"
    assert coded_text(session, "religion", "00", on) == "mã 00 (không có trong danh mục)"
    # once a site loads a version, that version is what names the codes
    store_version(
        session,
        ADMIN_ACTOR,
        "occupation",
        [_line(2, "00001", "Nghề thử")],
        valid_from=date(2026, 1, 1),
        source="occupation.csv",
        sha256="0" * 64,
    )
    assert coded_text(session, "occupation", "00001", on) == "Nghề thử (00001)"
    assert coded_text(session, "occupation", "00002", on) == "mã 00002 (không có trong danh mục)"


def _line(n: int, code: str, name: str) -> Any:
    from emr.catalogues import Line

    return Line(n, code, name)


def test_cli_loads_the_shipped_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(tmp_path))
    assert main(["emr", "migrate"]) == 0
    capsys.readouterr()
    assert main(["emr", "load-catalogue", "ethnicity", "--package", "--valid-from", "2020-01-01"]) == 0
    assert "Dân tộc (MA_DANTOC): 56 mục" in capsys.readouterr().out
    assert main(["emr", "load-catalogue", "religion", "--package", "--valid-from", "2020-01-01"]) == 0
    assert main(["emr", "load-catalogue", "occupation", "--package"]) == 2  # nothing shipped: a file only


def test_chart_shows_name_and_code(session: Session, world: World, client: FlaskClient) -> None:
    p = patients.create_patient(session, world.actor("physician"), patient_data(**CHILD))
    session.commit()
    assert login(client, "records_clerk1").status_code == 302
    page = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert "Thái (03)" in page and "Phật giáo (01)" in page
    assert "mã 00001 (chưa có danh mục)" in page  # no published occupation list: the code, said to be one
    assert "Mã tôn giáo" not in page and ">01<" not in page


def test_discharge_paper_prints_ethnicity_occupation_and_a_childs_parents(
    session: Session, world: World, tmp_path: Path
) -> None:
    paper = _paper(session, world, tmp_path, "discharge_summary", **CHILD)
    details = dict(paper.patient_details)
    assert details[t("patients.ethnicity")] == "Thái (03)"
    assert details[t("patients.occupation")] == "mã 00001 (chưa có danh mục)"
    assert t("patients.religion") not in details  # the form has no religion
    assert (details[t("patients.father_name")], details[t("patients.mother_name")]) == ("Lò Văn Pọm", "Lường Thị Ơn")
    assert details[t("patients.guardian_name")] == "Lò Thị Bua"
    text = _pdf_text(render_document_pdf(paper))
    for expected in (
        "Dân tộc: Thái (03)",
        "Nghề nghiệp: mã 00001 (chưa có danh mục)",
        "Họ tên cha: Lò Văn Pọm",
        "Họ tên mẹ: Lường Thị Ơn",
    ):
        assert expected in text, (expected, text)


def test_an_adults_paper_names_no_parents_and_the_admission_note_carries_the_demographics(
    session: Session, world: World, tmp_path: Path
) -> None:
    adult = dict(CHILD, birth_date="1990-01-01", full_name="Lò Văn Sáu")
    details = dict(_paper(session, world, tmp_path, "discharge_summary", **adult).patient_details)
    assert t("patients.father_name") not in details and t("patients.guardian_name") not in details
    other = dict(adult, full_name="Lò Văn Bảy")
    note = dict(_paper(session, world, tmp_path, "admission_note", **other).patient_details)
    assert note == {t("patients.ethnicity"): "Thái (03)", t("patients.occupation"): "mã 00001 (chưa có danh mục)"}


def test_child_means_under_16_on_the_papers_day() -> None:
    kid = Patient(birth_date=date(2010, 3, 15), birth_year_only=False, father_name="Cha", mother_name=None)
    assert age_on(kid, date(2026, 3, 14)) == 15 and parent_lines(kid, date(2026, 3, 14)) == [("Họ tên cha", "Cha")]
    assert age_on(kid, date(2026, 3, 15)) == 16 and parent_lines(kid, date(2026, 3, 15)) == []
    year_only = Patient(birth_date=date(2010, 1, 1), birth_year_only=True, father_name="Cha")
    assert age_on(year_only, date(2026, 12, 31)) == 15  # may have been born on 31/12/2010: still a child
    assert age_on(year_only, date(2027, 1, 1)) == 16


def test_unknown_ethnicity_or_religion_is_refused_on_entry(session: Session, world: World) -> None:
    """The shipped lists are in force before a site loads anything: a code they lack is refused on its field."""
    clerk = world.actor("records_clerk")
    with pytest.raises(ValidationFailed) as refused:
        patients.create_patient(session, clerk, patient_data(ethnicity_code="77", religion_code="00"))
    assert refused.value.fields == {
        "ethnicity_code": "catalogues.entry.ethnicity",
        "religion_code": "catalogues.entry.religion",
    }
    assert message(refused.value, "religion_code") == (
        "Mã tôn giáo 00 không có trong danh mục tôn giáo hiện hành (2 chữ số, ví dụ 01 Phật giáo; "
        "để trống nếu không theo tôn giáo nào)"
    )
    assert message(refused.value, "ethnicity_code").startswith("Mã dân tộc 77 không có trong danh mục dân tộc")
    session.rollback()
    # occupation: no list loaded, so any code of the right shape goes; listed codes go
    p = patients.create_patient(session, clerk, patient_data(ethnicity_code="99", religion_code="14"))
    assert (p.ethnicity_code, p.religion_code, p.occupation_code) == ("99", "14", None)
    other = patient_data(cccd="079190001235", bhyt_number=None, full_name="Trần Văn Ba", occupation_code="1")
    p = patients.create_patient(session, clerk, other)
    assert p.occupation_code == "1"


def test_occupation_is_checked_once_a_list_is_loaded_and_a_loaded_list_replaces_the_shipped_one(
    session: Session, world: World
) -> None:
    clerk = world.actor("records_clerk")
    for kind, line in (("occupation", _line(2, "00001", "Nghề thử")), ("religion", _line(2, "01", "Phật giáo"))):
        store_version(
            session, ADMIN_ACTOR, kind, [line], valid_from=date(2020, 1, 1), source=f"{kind}.csv", sha256="0" * 64
        )
    session.commit()
    with pytest.raises(ValidationFailed) as refused:
        patients.create_patient(session, clerk, patient_data(occupation_code="00002", religion_code="02"))
    assert refused.value.fields == {
        "occupation_code": "catalogues.entry.occupation",
        "religion_code": "catalogues.entry.religion",  # in the shipped list, not in the one the site loaded
    }
    session.rollback()
    p = patients.create_patient(session, clerk, patient_data(occupation_code="00001", religion_code="01"))
    assert (p.occupation_code, p.religion_code) == ("00001", "01")


def test_a_stored_unknown_code_shows_and_does_not_block_other_edits(session: Session, world: World) -> None:
    """Religion "00" registered before the lists were enforced: still shown as a code the list lacks; the record's
    other fields can be corrected with it in place; changing the code itself needs a listed one."""
    clerk = world.actor("records_clerk")
    p = patients.create_patient(session, clerk, patient_data())
    p.religion_code, p.ethnicity_code = "00", "77"  # as an older release, or an import, stored them
    session.commit()
    kept = dict(patient_data(phone="0909000111"), religion_code="00", ethnicity_code="77")
    patients.update_patient(session, clerk, p.id, kept)
    assert (p.phone, p.religion_code, p.ethnicity_code) == ("0909000111", "00", "77")
    assert coded_text(session, "religion", p.religion_code, date(2026, 3, 1)) == "mã 00 (không có trong danh mục)"
    with pytest.raises(ValidationFailed) as refused:
        patients.update_patient(session, clerk, p.id, dict(kept, religion_code="15"))
    assert refused.value.fields == {"religion_code": "catalogues.entry.religion"}
    session.rollback()
    patients.update_patient(session, clerk, p.id, dict(kept, religion_code="01"))
    assert session.get(Patient, p.id).religion_code == "01"  # type: ignore[union-attr]


def test_registration_form_and_api_refuse_an_unknown_code_keeping_what_was_typed(
    session: Session, world: World, client: FlaskClient, tokens: dict[str, str]
) -> None:
    session.commit()  # no transaction left open: SQLite would keep its lock from the app
    r = client.post(
        "/api/patients",
        json=patient_data(religion_code="00"),
        headers={"Authorization": f"Bearer {tokens['records_clerk']}"},
    )
    assert r.status_code == 422 and r.json["fields"] == {"religion_code": "catalogues.entry.religion"}
    assert login(client, "records_clerk1").status_code == 302
    form = dict(patient_data(ethnicity_code="77", religion_code="01"), csrf_token=csrf_token(client, "/patients/new"))
    r = client.post("/patients/new", data=form)
    page = r.get_data(as_text=True)
    # the message beside the field, on the form that keeps what was typed
    assert r.status_code == 422 and 'id="err-ethnicity_code">Mã dân tộc 77 không có trong danh mục dân tộc' in page
    assert 'value="77"' in page and 'value="Nguyễn Thị Hồng Nhung"' in page and 'value="0901234567"' in page
    assert session.scalar(select(func.count()).select_from(Patient)) == 0
