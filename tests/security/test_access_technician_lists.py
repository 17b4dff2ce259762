"""What the technician's lists and chart show: only what their care and role open, nothing more.

Technicians now have a home page listing the day's exams and the list of
studies (/reading/), and their chart no longer links to documents. Against a
real ``filmless emr serve`` a technician tries to widen those lists (filters,
dates, another day) to a patient outside their care, to read report text
through them, and to open the documents the chart no longer links; what they
type into the filters is shown back escaped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from emr.models import AuditEntry, Encounter, EncounterDiagnosis, Icd10Code, ImagingOrder, Patient, Study
from tests.security.auth_support import Record, RunningEmr, in_session, make_record, make_users, running_emr

REPORT_TEXT = "Không thấy tổn thương khu trú."  # make_record's findings


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("emr-technician-lists")) as running:
        make_users(running, ("bacsi", "physician"), ("bschan", "radiologist"), ("ktv", "technician"),
                   ("dieuduong", "nurse"))

        def imaging_department(session: Any) -> None:  # the technician works in imaging, not on the ward
            from emr.models import User
            from emr.patients import encounters

            dep = encounters.ensure_department(session, "K48", "Khoa Chẩn đoán hình ảnh")
            session.scalar(select(User).where(User.username == "ktv")).department_id = dep.id
            session.commit()

        in_session(running, imaging_department)
        yield running



@pytest.fixture(scope="module")
def records(emr: RunningEmr) -> tuple[Record, Record]:
    """Today's CT (in the technician's care) and an old one (scheduled 60 days ago: outside it)."""
    today = make_record(emr, "bacsi", "bschan", signed=True)
    old = make_record(emr, "bacsi", "bschan", signed=True)

    def age(session: Any) -> None:
        order = session.get(ImagingOrder, old.order_id)
        order.scheduled_at = order.ordered_at = order.scheduled_at - timedelta(days=60)
        session.get(Patient, old.patient_id).full_name = "Hoàng Thị Xa"
        session.get(Study, old.study_id).study_date = "20261008"
        session.commit()

    in_session(emr, age)
    return today, old


def test_the_lists_never_reach_a_patient_outside_care(emr: RunningEmr, records: tuple[Record, Record]) -> None:
    today, old = records
    ktv, r = emr.login("ktv", source="127.0.0.50")
    assert r.status_code == 302
    old_uid = in_session(emr, lambda s: s.get(Study, old.study_id).study_instance_uid)
    attempts = [
        "/reading/", "/reading/?status=signed", "/reading/?date_from=2000-01-01&date_to=2100-12-31",
        "/reading/?date_from=08/10/2026&date_to=08/10/2026", "/reading/?modality=CT&urgency=routine",
        "/patients/", "/patients/?modality=CT", "/patients/?day=2026-10-08", "/patients/?modality=../../x",
    ]
    for path in attempts:
        page = ktv.get(emr.url(path), timeout=30)
        assert page.status_code in (200, 422), path
        assert "Hoàng Thị Xa" not in page.text and old_uid not in page.text, path
        assert REPORT_TEXT not in page.text, path  # report content: document.read, not the technician's
    listed = ktv.get(emr.url("/reading/"), timeout=30).text
    assert f"/reading/studies/{today.study_id}" in listed
    assert ktv.get(emr.url(f"/reading/studies/{old.study_id}"), timeout=30).status_code == 403
    home = ktv.get(emr.url("/patients/"), timeout=30).text
    assert "Trần Văn Đức" in home and f"/reading/studies/{today.study_id}" in home
    # Each listing is audited with what it showed.
    shown = in_session(emr, lambda s: s.scalars(select(AuditEntry.details).where(
        AuditEntry.username == "ktv", AuditEntry.action == "order.worklist")).all())
    assert shown and all('"results": 1' in d for d in shown)


def test_every_showing_of_the_reading_list_is_audited(emr: RunningEmr, records: tuple[Record, Record]) -> None:
    """However the list is asked for (no slash, HEAD, filters, junk parameters, repeated), each showing writes
    one ``reading.worklist`` row naming what it listed; a refused role writes a refusal, never a listing."""
    def listings(user: str) -> list[tuple[str, str]]:
        return in_session(emr, lambda s: [tuple(r) for r in s.execute(
            select(AuditEntry.outcome, AuditEntry.details)
            .where(AuditEntry.username == user, AuditEntry.action == "reading.worklist").order_by(AuditEntry.id))])

    ktv, _ = emr.login("ktv", source="127.0.0.54")
    before = len(listings("ktv"))
    shown = 0
    for path in ("/reading/", "/reading", "/reading/?status=signed&status=unread", "/reading/?modality=CT&x=1",
                 "/reading/?date_from=2000-01-01&date_to=2100-12-31", "/reading/?urgency=../../x", "/reading/"):
        r = ktv.get(emr.url(path), timeout=30)
        assert r.status_code == 200, path
        shown += 1
    assert ktv.head(emr.url("/reading/"), timeout=30).status_code == 200
    shown += 1
    rows = listings("ktv")[before:]
    assert len(rows) == shown and all(outcome == "success" and '"list": "reading"' in d for outcome, d in rows)
    assert '"results": 1' in rows[0][1] and '"status": "signed"' in rows[2][1]  # the first value, as filtered
    for user, source in (("bschan", "127.0.0.55"), ("bacsi", "127.0.0.56")):
        reader, _ = emr.login(user, source=source)
        assert reader.get(emr.url("/reading/"), timeout=30).status_code == 200
        assert [o for o, _ in listings(user)] == ["success"], user
    nurse, _ = emr.login("dieuduong", source="127.0.0.57")
    assert nurse.get(emr.url("/reading/"), timeout=30).status_code == 403
    assert [o for o, _ in listings("dieuduong")] == ["denied"]


def test_the_chart_links_no_document_and_the_document_stays_closed(emr: RunningEmr,
                                                                   records: tuple[Record, Record]) -> None:
    today, _ = records
    ktv, _ = emr.login("ktv", source="127.0.0.51")
    chart = ktv.get(emr.url(f"/patients/{today.patient_id}"), timeout=30)
    assert chart.status_code == 200 and "/documents/" not in chart.text
    for path in (f"/documents/{today.report_id}", f"/api/documents/{today.report_id}"):
        assert ktv.get(emr.url(path), timeout=30).status_code in (302, 401, 403), path
    nurse, _ = emr.login("dieuduong", source="127.0.0.52")
    page = nurse.get(emr.url(f"/patients/{today.patient_id}"), timeout=30).text
    assert f"/documents/{today.report_id}" in page and "/viewer/?study=" not in page  # no image.view: no link


def test_the_chart_shows_no_visit_or_diagnosis_without_encounter_read(emr: RunningEmr,
                                                                     records: tuple[Record, Record]) -> None:
    """A technician (no encounter.read) opens a patient in their care: the visit and its ICD-10 diagnoses are
    on no page or API answer they reach, whatever they add to the address; a nurse's chart shows them."""
    today, _ = records

    def diagnose(session: Any) -> str:
        for code, title in (("S06.0", "Chấn động não"), ("R51", "Đau đầu")):
            if session.get(Icd10Code, code) is None:
                session.add(Icd10Code(code=code, title=title))
        session.flush()
        session.add_all([EncounterDiagnosis(encounter_id=today.encounter_id, icd10_code="S06.0", position=0),
                         EncounterDiagnosis(encounter_id=today.encounter_id, icd10_code="R51", position=1)])
        visit_code = session.get(Encounter, today.encounter_id).visit_code
        session.commit()
        return visit_code

    visit_code = in_session(emr, diagnose)
    pid, eid = today.patient_id, today.encounter_id
    ktv, _ = emr.login("ktv", source="127.0.0.58")
    for path in (f"/patients/{pid}", f"/patients/{pid}?encounters=1&show=all", f"/patients/{pid}/",
                 f"/patients/{pid}?role=physician"):
        page = ktv.get(emr.url(path), timeout=30)
        assert page.status_code == 200, path
        assert visit_code not in page.text and "S06.0" not in page.text and "R51" not in page.text, path
        assert 'id="chart-encounters"' not in page.text and "Trần Văn Đức" in page.text, path
    for path in (f"/api/patients/{pid}/encounters", f"/api/encounters/{eid}", f"/fhir/Encounter?patient={pid}",
                 f"/fhir/Encounter/{eid}", f"/patients/{pid}/encounters/{eid}/close",
                 f"/patients/{pid}/encounters/{eid}/benefit-level", f"/export/encounters/{eid}/hsba.json"):
        r = ktv.get(emr.url(path), timeout=30, allow_redirects=False)
        assert r.status_code in (302, 401, 403, 404), path
        assert "S06.0" not in r.text and visit_code not in r.text, path
    nurse, _ = emr.login("dieuduong", source="127.0.0.59")
    page = nurse.get(emr.url(f"/patients/{pid}"), timeout=30).text
    assert visit_code in page and "S06.0, R51" in page


def test_what_is_typed_into_the_filters_comes_back_escaped(emr: RunningEmr, records: tuple[Record, Record]) -> None:
    ktv, _ = emr.login("ktv", source="127.0.0.53")
    probe = '"><script>alert(1)</script>'
    page = ktv.get(emr.url("/reading/"), params={"date_from": probe, "modality": probe}, timeout=30)
    assert page.status_code == 422 and "<script>alert(1)" not in page.text
    assert "&lt;script&gt;alert(1)" in page.text or "&#34;&gt;&lt;script" in page.text
    home = ktv.get(emr.url("/patients/"), params={"modality": probe}, timeout=30)
    assert home.status_code == 200 and "<script>alert(1)" not in home.text
