"""Issue 13: every date a person or a modality sees is the facility's, on a server whose clock
zone is UTC, at 17:30 UTC (00:30 the next day in Vietnam) — the moment UTC dates go wrong."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pydicom
import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from emr.core import clock
from emr.imaging import orders
from emr.imaging.worklist import query_worklist
from emr.patients import encounters
from emr.patients import service as patients
from emr.signing.dicom_pdf import encapsulate_pdf

from .conftest import World, login, patient_data

FROZEN = datetime(2026, 12, 6, 17, 30)  # naive UTC: 7 Dec 2026, 00:30 in Vietnam


@pytest.fixture(autouse=True)
def utc_server_near_vietnam_midnight(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    for module in ("emr.imaging.orders", "emr.patients.encounters", "emr.core.clock", "emr.signing.dicom_pdf"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: FROZEN)
    clock.use_timezone(clock.DEFAULT_TIMEZONE)
    yield
    monkeypatch.undo()
    time.tzset()


def test_numbers_and_the_worklist_use_the_vietnam_date(session: Session, world: World) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    enc = encounters.create_encounter(
        session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": "K19"}
    )
    order = orders.create_order(
        session, doctor, {"patient_id": p.id, "encounter_id": enc.id, "modality": "CT", "procedure_name": "CT"}
    )
    assert order.accession_number.startswith("261207"), order.accession_number
    assert enc.visit_code.startswith("261207"), enc.visit_code
    # The CT console asks for "today" (7 Dec in Vietnam) and gets the order, dated and timed locally.
    today = query_worklist(session, {"ScheduledProcedureStepStartDate": "20261207", "Modality": "CT"})
    answer = next(a for a in today if a["AccessionNumber"] == order.accession_number)
    assert answer["ScheduledProcedureStepStartDate"] == "20261207"
    assert str(answer["ScheduledProcedureStepStartTime"]).startswith("0030")
    yesterday = query_worklist(session, {"ScheduledProcedureStepStartDate": "20261206", "Modality": "CT"})
    assert order.accession_number not in {a["AccessionNumber"] for a in yesterday}


def test_signed_pdf_in_the_pacs_carries_local_content_date() -> None:
    data = encapsulate_pdf(b"%PDF-1.7\n%%EOF\n", {"StudyInstanceUID": "1.2.3", "PatientID": "BN1"})
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.ContentDate == "20261207" and ds.ContentTime.startswith("0030")


def test_pages_show_local_time(client: FlaskClient, session: Session, world: World) -> None:
    from emr.app import _ict

    aware = FROZEN.replace(tzinfo=UTC)  # a signature's time as pyHanko reports it (/verify page)
    assert _ict(aware, "%d/%m/%Y %H:%M:%S") == "07/12/2026 00:30:00"
    assert _ict(FROZEN) == "07/12/2026 00:30"
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    encounters.create_encounter(session, doctor, {"patient_id": p.id, "kind": "outpatient", "department_code": "K19"})
    login(client, "physician1")
    chart = client.get(f"/patients/{p.id}").get_data(as_text=True)
    assert "07/12/2026 00:30" in chart and "06/12/2026" not in chart


def test_cli_log_lines_are_in_facility_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from filmless import cli
    from filmless.settings import load

    before = logging.Formatter.converter
    try:
        cli._facility_time(load({"FILMLESS_DATA_DIR": "/nonexistent"}))
        record = logging.LogRecord("filmless.up", logging.INFO, __file__, 1, "filmless stopped", None, None)
        record.created = FROZEN.replace(tzinfo=UTC).timestamp()
        line = logging.Formatter("%(asctime)s %(message)s").format(record)
        assert line.startswith("2026-12-07 00:30:00"), line
    finally:
        logging.Formatter.converter = before  # type: ignore[method-assign]
