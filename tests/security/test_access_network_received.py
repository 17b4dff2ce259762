"""The list of what other facilities sent (/network/received): only what the user's care opens, every showing on record.

Against a real ``filmless emr serve``: a physician's patient was sent over first, then more than three times the
list's length of studies of a patient outside their care and some not matched to anyone yet. However the
physician asks for the list (junk parameters naming the other patient, a larger limit, HEAD, repeated), it shows
their patient and nothing of the others; a physician of another department sees none of it; the records desk's
roles (not care-scoped) see the newest rows; an admin is refused. Each showing writes one audit row saying how
many rows it showed; a refusal writes a refusal, never a listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from emr.access.audit import Actor
from emr.models import AuditEntry, NetworkReceived, Patient, User
from emr.network.incoming import RECEIVED_LIMIT
from tests.security.auth_support import RunningEmr, in_session, make_users, running_emr

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
AWAY = "Hoàng Thị Xa"
STRANGER = "Người Lạ Chưa Khớp"



@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("emr-network-received")) as running:
        make_users(running, ("bacsi", "physician"), ("bskhac", "physician"), ("dieuduong", "nurse"),
                   ("quantri", "admin"))
        yield running


@pytest.fixture(scope="module")
def sent(emr: RunningEmr) -> dict[str, Any]:
    """bacsi's patient (an open visit in K19) sent first; then 3 × RECEIVED_LIMIT + 1 studies of a patient in
    nobody's care and a few not matched yet. bskhac works in another department."""
    from emr.network.sites import SiteIn, create_site
    from emr.patients import encounters
    from emr.patients import service as patients

    def setup(session: Any) -> dict[str, Any]:
        other = encounters.ensure_department(session, "K01", "Khoa Khám bệnh")
        session.scalar(select(User).where(User.username == "bskhac")).department_id = other.id
        doctor = session.scalar(select(User).where(User.username == "bacsi"))
        site, _ = create_site(session, SETUP, SiteIn("Bệnh viện tỉnh B", "SITEB", "127.0.0.1", 11112, None, None,
                                                     None, "t" * 40), inbound_token="SITEB-token-" + "x" * 30)
        mine = patients.create_patient(session, SETUP, {"full_name": "Trần Văn Đức", "birth_date": "1958-11-02",
                                                        "sex": "M", "cccd": "001058012345"})
        encounters.create_encounter(session, Actor(doctor.id, "bacsi", "physician", None),
                                    {"patient_id": mine.id, "kind": "outpatient", "department_code": "K19"})
        away = patients.create_patient(session, SETUP, {"full_name": AWAY, "birth_date": "1970-01-01", "sex": "F",
                                                        "cccd": "001170054321"})
        first = NetworkReceived(kind="study", site_id=site.id, remote_ref="mine", study_instance_uid="1.2.826.0.7.1",
                                patient_id=mine.id, match_method="cccd", modality="CT", procedure_name="CT sọ não")
        session.add(first)
        session.commit()

        def rows(ref: int, patient: Patient | None, name: str, count: int) -> list[dict[str, Any]]:
            return [{"kind": "study", "site_id": site.id, "remote_ref": f"{ref}-{i}",
                     "study_instance_uid": f"1.2.826.0.7.{ref}.{i}",
                     "patient_id": patient.id if patient else None, "patient_name": name,
                     "match_method": "cccd" if patient else None, "modality": "CT"} for i in range(count)]

        session.execute(insert(NetworkReceived), rows(2, away, AWAY, 3 * RECEIVED_LIMIT + 1))
        session.execute(insert(NetworkReceived), rows(3, None, STRANGER, 3))
        session.commit()
        return {"first": first.id, "away": away.id}

    return in_session(emr, setup)


def _listings(emr: RunningEmr, user: str) -> list[tuple[str, str]]:
    return in_session(emr, lambda s: [tuple(r) for r in s.execute(
        select(AuditEntry.outcome, AuditEntry.details).where(AuditEntry.username == user,
                                                             AuditEntry.action == "network.received.list")
        .order_by(AuditEntry.id))])


def test_the_received_list_shows_only_patients_in_care_however_it_is_asked_for(emr: RunningEmr,
                                                                              sent: dict[str, Any]) -> None:
    doctor, r = emr.login("bacsi", source="127.0.0.60")
    assert r.status_code == 302
    attempts = ["/network/received", f"/network/received?patient_id={sent['away']}", "/network/received?limit=100000",
                "/network/received?all=1&scope=hospital&role=nurse", "/network/received?page=2&offset=600",
                "/network/received"]
    for path in attempts:
        page = doctor.get(emr.url(path), timeout=30)
        assert page.status_code == 200, path
        assert f'data-received="{sent["first"]}"' in page.text and page.text.count("data-received=") == 1, path
        assert "Trần Văn Đức" in page.text and AWAY not in page.text and STRANGER not in page.text, path
    assert doctor.head(emr.url("/network/received"), timeout=30).status_code == 200
    rows = _listings(emr, "bacsi")
    assert len(rows) == len(attempts) + 1  # HEAD runs the listing too: on record as well
    assert all(outcome == "success" and '"results": 1' in d and '"list": "received"' in d for outcome, d in rows)

    other, _ = emr.login("bskhac", source="127.0.0.61")  # another department: none of these patients
    text = other.get(emr.url(f"/network/received?patient_id={sent['away']}"), timeout=30).text
    assert "data-received=" not in text and "Trần Văn Đức" not in text and AWAY not in text
    assert [(o, '"results": 0' in d) for o, d in _listings(emr, "bskhac")] == [("success", True)]
    # The row outside care stays closed when opened directly, too.
    away_row = in_session(emr, lambda s: s.scalar(
        select(NetworkReceived.id).where(NetworkReceived.patient_id == sent["away"]).limit(1)))
    assert other.get(emr.url(f"/network/received/{away_row}/view"), timeout=30).status_code == 403


def test_roles_not_scoped_see_the_newest_and_admins_are_refused(emr: RunningEmr, sent: dict[str, Any]) -> None:
    nurse, _ = emr.login("dieuduong", source="127.0.0.62")
    page = nurse.get(emr.url("/network/received"), timeout=30).text
    assert page.count("data-received=") == RECEIVED_LIMIT and STRANGER in page and AWAY in page
    assert [(o, f'"results": {RECEIVED_LIMIT}' in d) for o, d in _listings(emr, "dieuduong")] == [("success", True)]
    admin, _ = emr.login("quantri", source="127.0.0.63")
    r = admin.get(emr.url("/network/received"), timeout=30)
    assert r.status_code == 403 and AWAY not in r.text and STRANGER not in r.text
    assert _listings(emr, "quantri") == []
    denied = in_session(emr, lambda s: s.scalars(select(AuditEntry.action).where(AuditEntry.username == "quantri",
                                                                         AuditEntry.outcome == "denied")).all())
    assert denied == ["network.received"]
