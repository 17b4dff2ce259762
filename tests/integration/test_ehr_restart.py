"""The EHR push survives an outage AND a restart of the EMR process: nothing lost, nothing sent twice.

Real processes: ``filmless emr serve`` (its outbox worker thread) and the
EHR stand-in (a real HTTP server). Visits are closed over HTTP while the
health record is down; the EMR is stopped with messages still failing, the
record comes back, a new EMR process starts on the same database and
delivers each summary exactly once. The first EMR is killed (SIGKILL), not stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from emr import Actor
from emr.models import OutboxMessage
from tests.helpers import wait_for
from tests.security.auth_support import SETUP, RunningEmr, csrf, make_users, running_emr
from tests.standins.ehr import EhrStandIn

pytestmark = pytest.mark.slow


def _visits(emr: RunningEmr, doctor_id: int, n: int) -> list[tuple[int, int]]:
    from emr.patients import encounters
    from emr.patients import service as patients

    factory = emr.session_factory()
    out = []
    with factory() as s:
        catalogue = emr.settings.data_dir / "icd10.csv"
        catalogue.write_text("code,title\nR51,Đau đầu\nI10,Tăng huyết áp vô căn\n", "utf-8")
        encounters.load_icd10(s, SETUP, catalogue)
        doctor = Actor(doctor_id, "bs.an", "physician", "127.0.0.1")
        for i in range(n):
            p = patients.create_patient(s, SETUP, {
                "full_name": f"Trần Văn Đức {i}", "birth_date": "1958-11-02", "sex": "M",
                "cccd": f"00105800{i:04d}", "province_code": "01", "address": "45 Phố Huế, Hà Nội",
            })
            enc = encounters.create_encounter(s, doctor, {
                "patient_id": p.id, "kind": "outpatient", "department_code": "K19", "reason": "Đau đầu",
                "diagnoses": ["R51", "I10"],
            })
            out.append((p.id, enc.id))
    factory.kw["bind"].dispose()
    return out


def _messages(emr: RunningEmr) -> list[OutboxMessage]:
    factory = emr.session_factory()
    with factory() as s:
        rows = list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        s.expunge_all()
    factory.kw["bind"].dispose()
    return rows


def test_outage_and_restart_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    standin = EhrStandIn()
    standin.down()  # the health record is unreachable while the visits close
    env = {
        "FILMLESS_EHR_URL": standin.url,
        "FILMLESS_OUTBOX_POLL_SECONDS": "1",
        "FILMLESS_OUTBOX_RETRY_SECONDS": "1",
        "FILMLESS_OUTBOX_RETRY_MAX_SECONDS": "2",
        "FILMLESS_OUTBOX_MAX_ATTEMPTS": "1000",
        # killed while "sending" (between claim and outcome), a message is taken over when its lease ends
        "FILMLESS_OUTBOX_LEASE_SECONDS": "10",
        "FILMLESS_EHR_TIMEOUT": "5",
    }
    try:
        with running_emr(tmp_path, env) as emr:
            ids = make_users(emr, ("bs.an", "physician"))
            visits = _visits(emr, ids["bs.an"], 2)
            http, r = emr.login("bs.an")
            assert r.status_code == 302
            for patient_id, encounter_id in visits:
                path = f"/patients/{patient_id}/encounters/{encounter_id}/close"
                token = csrf(http.get(emr.url(path), timeout=30).text)
                r = http.post(emr.url(path), data={"csrf_token": token, "discharge_diagnosis": "Đau đầu"},
                              allow_redirects=False, timeout=30)
                assert r.status_code == 302, r.text[:500]
            wait_for(lambda: len(_messages(emr)) == 2 and all(m.attempts >= 2 for m in _messages(emr)),
                     timeout=60, what="the worker to try (and fail) each push twice")
            assert {m.status for m in _messages(emr)} <= {"failed", "sending", "waiting"}
            assert "unreachable" in (_messages(emr)[0].last_error or "")
            emr.process.kill()  # a crash, not a clean stop
            emr.process.wait(10)
        # the EMR process is gone; the health record comes back before it restarts
        standin.up()
        with running_emr(tmp_path, env) as emr:
            wait_for(lambda: all(m.status == "sent" for m in _messages(emr)), timeout=60,
                     what="the restarted EMR to deliver both summaries")
            messages = _messages(emr)
        assert len(messages) == 2
        for message, (patient_id, encounter_id) in zip(messages, visits, strict=True):
            assert standin.requests_with(message.key) == [201]  # exactly once
            got = standin.accepted[message.key]
            [encounter] = got.resources("Encounter")
            assert encounter["id"] == str(encounter_id) and encounter["status"] == "finished"
            assert message.patient_id == patient_id
        assert len(standin.accepted) == 2
    finally:
        standin.down()
