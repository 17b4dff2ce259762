"""Issue 10, item 5: physicians, radiologists and technicians open only the patients in their care.

The rule lives in emr/permissions.py (encounter department or attending;
reading worklist; orders scheduled around today; break the glass). Here a
clinician tries every door to a patient outside their care — chart, JSON
API, documents, the reading page, measurements, the DICOMweb proxy, a share
slip — and then breaks the glass: a reason is required, the access lasts the
configured hours, is audited with the reason, and the admin sees it listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from emr.access.audit import Actor
from emr.access.users import create_token
from emr.imaging import orders
from emr.models import AuditEntry, BreakGlassAccess, Encounter, ImagingOrder, User, utcnow
from storage import OrthancStore
from tests.security.access_world import SETUP, AccessWorld, Case, build_world, csrf_from, http_login


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancStore) -> Iterator[AccessWorld]:
    yield from build_world(tmp_path_factory.mktemp("access-care"), orthanc)


def _token(world: AccessWorld, username: str) -> str:
    with world.sessions() as s:
        user = s.scalars(select(User).where(User.username == username)).one()
        return create_token(s, SETUP, user.id, "red team")


def _doors(world: AccessWorld, case: Case) -> list[str]:
    with world.sessions() as s:
        enc = s.scalars(select(Encounter.id).where(Encounter.patient_id == case.patient_id)).first()
    return [
        f"/patients/{case.patient_id}",
        f"/orders/new/{case.patient_id}",
        f"/patients/{case.patient_id}/documents/new",
        f"/documents/{case.doc_id}",
        f"/signing/documents/{case.doc_id}/versions/1/pdf",
        f"/reading/studies/{case.study_id}",
        f"/reading/studies/{case.study_id}/share",
        f"/reading/measurements/{case.study_uid}",
        f"/dicomweb/studies/{case.study_uid}/series",
        f"/dicomweb/studies/{case.study_uid}/series/{case.series_uid}/instances/{case.sop_uids[0]}/frames/1",
        f"/dicomweb/studies?StudyInstanceUID={case.study_uid}",
        f"/export/encounters/{enc}/hsba.json",
    ]


def _api_doors(case: Case, encounter_id: int) -> list[str]:
    return [
        f"/api/patients/{case.patient_id}",
        f"/api/patients/{case.patient_id}/encounters",
        f"/api/patients/{case.patient_id}/orders",
        f"/api/encounters/{encounter_id}",
        f"/api/documents/{case.doc_id}",
        f"/api/orders/{case.order_id}",
    ]


def _encounter(world: AccessWorld, case: Case) -> int:
    with world.sessions() as s:
        return s.scalars(select(Encounter.id).where(Encounter.patient_id == case.patient_id)).one()


@pytest.mark.parametrize(("username", "mine", "other"), [("bs_a", "a", "b"), ("bs_b", "b", "a"), ("ktv", "a", "b")])
def test_clinicians_open_their_patients_and_no_other(world: AccessWorld, username: str, mine: str, other: str) -> None:
    http = http_login(world.base, username)
    own: Case = getattr(world, mine)
    stranger: Case = getattr(world, other)
    assert http.get(f"{world.base}/patients/{own.patient_id}", timeout=10).status_code == 200
    if username != "ktv":
        assert http.get(f"{world.base}/dicomweb/studies/{own.study_uid}/series", timeout=30).status_code == 200
    opened = {}
    for door in _doors(world, stranger):
        r = http.get(world.base + door, timeout=30, allow_redirects=False)
        if r.status_code not in (403, 404) or stranger.patient_name in r.text or stranger.patient_code in r.text:
            opened[door] = r.status_code
    assert opened == {}, f"{username} reached {stranger.patient_name}: {opened}"
    chart = http.get(f"{world.base}/patients/{stranger.patient_id}", timeout=10)
    assert chart.status_code == 403 and f"/patients/{stranger.patient_id}/break-glass" in chart.text
    token = _token(world, username)
    for door in _api_doors(stranger, _encounter(world, stranger)):
        r = requests.get(world.base + door, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if username == "ktv" and r.status_code == 403 and r.json()["error"] == "forbidden":
            continue  # the role matrix already refuses the technician this route
        assert (r.status_code, r.json()["error"]) == (403, "out_of_care_scope"), (door, r.status_code)
    with world.sessions() as s:
        denied = s.scalars(
            select(AuditEntry).where(
                AuditEntry.username == username,
                AuditEntry.action == "care.denied",
                AuditEntry.patient_id == stranger.patient_id,
            )
        ).all()
    assert len(denied) >= 5, "every refusal is audited with the patient"


def test_the_new_visit_form_opens_but_a_visit_elsewhere_grants_nothing(world: AccessWorld) -> None:
    """Opening a visit in one's own department is how care begins, so its form opens for a patient
    outside care; it shows what search shows (the name), no record, and a visit that would not put
    the patient in the physician's care (another department, another attending) is refused."""
    from tests.security.access_world import REPORT_TEXT

    http = http_login(world.base, "bs_a")
    stranger = world.b  # K01, attended by bs_b
    form_url = f"{world.base}/patients/{stranger.patient_id}/encounters/new"
    form = http.get(form_url, timeout=10)
    assert form.status_code == 200 and stranger.patient_name in form.text
    assert REPORT_TEXT not in form.text and "Viêm phổi" not in form.text
    with world.sessions() as s:
        before = s.scalars(select(Encounter.id).where(Encounter.patient_id == stranger.patient_id)).all()
    elsewhere = {"csrf_token": csrf_from(http, form_url), "kind": "outpatient", "department_code": "K01",
                 "attending_username": "bs_b"}
    r = http.post(form_url, data=elsewhere, timeout=10, allow_redirects=False)
    assert r.status_code == 403 and "phạm vi điều trị" in r.text
    with world.sessions() as s:
        assert s.scalars(select(Encounter.id).where(Encounter.patient_id == stranger.patient_id)).all() == before
        denied = s.scalars(select(AuditEntry).where(AuditEntry.username == "bs_a", AuditEntry.action == "care.denied",
                                                    AuditEntry.patient_id == stranger.patient_id)).all()
    assert denied
    assert http.get(f"{world.base}/patients/{stranger.patient_id}", timeout=10).status_code == 403
    # The refusal page of the chart offers the way in that is allowed: a visit in one's own department.
    assert f"/patients/{stranger.patient_id}/encounters/new" in http.get(
        f"{world.base}/patients/{stranger.patient_id}", timeout=10).text


def test_radiologist_worklist_shows_only_studies_in_their_care(world: AccessWorld) -> None:
    http = http_login(world.base, "bschan")
    page = http.get(f"{world.base}/reading/", timeout=10).text
    assert f'data-study-uid="{world.a.study_uid}"' in page
    assert f'data-study-uid="{world.b.study_uid}"' not in page and world.b.patient_name not in page
    assert http.get(f"{world.base}/reading/studies/{world.a.study_id}", timeout=10).status_code == 200
    assert http.get(f"{world.base}/reading/studies/{world.b.study_id}", timeout=10).status_code == 403


def test_desk_roles_are_not_scoped(world: AccessWorld) -> None:
    for username in ("luutru", "dieuduong"):
        http = http_login(world.base, username)
        assert http.get(f"{world.base}/patients/{world.b.patient_id}", timeout=10).status_code == 200, username


def _break_glass(http: requests.Session, world: AccessWorld, case: Case, reason: str, nxt: str) -> requests.Response:
    url = f"{world.base}/patients/{case.patient_id}/break-glass"
    token = csrf_from(http, url)
    return http.post(url, data={"csrf_token": token, "reason": reason, "next": nxt}, allow_redirects=False, timeout=10)


def test_break_the_glass_needs_a_reason_lasts_hours_and_is_reviewed(world: AccessWorld) -> None:
    world.app.extensions["emr.settings"] = replace(world.app.extensions["emr.settings"], break_glass_hours=2)
    http = http_login(world.base, "bs_a")
    b = world.b
    chart = f"{world.base}/patients/{b.patient_id}"
    assert http.get(chart, timeout=10).status_code == 403
    # No reason, or a token one: refused, nothing granted.
    for reason in ("", "   ", "cần xem"):
        r = _break_glass(http, world, b, reason, f"/patients/{b.patient_id}")
        assert r.status_code == 422, reason
    assert http.get(chart, timeout=10).status_code == 403
    with world.sessions() as s:
        assert s.scalars(select(BreakGlassAccess)).all() == []
    # A reason opens it; `next` may not send the user off-site.
    reason = "Bệnh nhân vào cấp cứu, bác sĩ điều trị vắng mặt"
    r = _break_glass(http, world, b, reason, "//evil.example/x")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/patients/{b.patient_id}")
    assert http.get(chart, timeout=10).status_code == 200
    assert http.get(f"{world.base}/dicomweb/studies/{b.study_uid}/series", timeout=30).status_code == 200
    with world.sessions() as s:
        grant = s.scalars(select(BreakGlassAccess)).one()
        assert grant.reason == reason
        assert grant.expires_at - grant.created_at == timedelta(hours=2)
        row = s.scalars(select(AuditEntry).where(AuditEntry.action == "patient.break_glass")).one()
        assert (row.username, row.patient_id) == ("bs_a", b.patient_id) and reason in row.details
    # The admin reviews it; nobody else may.
    admin = http_login(world.base, "quantri")
    review = admin.get(f"{world.base}/admin/break-glass", timeout=10)
    assert review.status_code == 200 and reason in review.text and b.patient_name in review.text
    assert http.get(f"{world.base}/admin/break-glass", timeout=10).status_code == 403
    with world.sessions() as s:
        assert s.scalars(select(AuditEntry).where(AuditEntry.action == "break_glass.review")).all()
    # Time-limited: once expired the door closes again.
    with world.sessions() as s:
        s.scalars(select(BreakGlassAccess)).one().expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert http.get(chart, timeout=10).status_code == 403


def test_break_the_glass_is_for_clinicians_only(world: AccessWorld) -> None:
    for username in ("luutru", "dieuduong", "quantri"):
        http = http_login(world.base, username)
        token = csrf_from(http, f"{world.base}/")
        r = http.post(
            f"{world.base}/patients/{world.b.patient_id}/break-glass",
            data={"csrf_token": token, "reason": "Tôi muốn xem hồ sơ này ngay"},
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 403, username


def test_fhir_reads_and_searches_stay_within_care(world: AccessWorld) -> None:
    token = _token(world, "bs_a")
    auth = {"Authorization": f"Bearer {token}"}
    own = requests.get(f"{world.base}/fhir/Patient/{world.a.patient_id}", headers=auth, timeout=10)
    assert own.status_code == 200
    for url in (
        f"/fhir/Patient/{world.b.patient_id}",
        f"/fhir/Patient?_id={world.b.patient_id}",
        "/fhir/Patient?birthdate=1970-02-03",  # matches both patients: refused whole
        f"/fhir/Encounter?patient={world.b.patient_id}",
        f"/fhir/DiagnosticReport?patient={world.b.patient_id}",
    ):
        r = requests.get(world.base + url, headers=auth, timeout=10)
        assert r.status_code == 403, (url, r.status_code)
        assert world.b.patient_name not in r.text and world.b.patient_code not in r.text, url


def _orders_of(world: AccessWorld, patient_id: int) -> dict[int, str]:
    with world.sessions() as s:
        return {o.id: o.status for o in s.scalars(select(ImagingOrder).where(ImagingOrder.patient_id == patient_id))}


def _denied(world: AccessWorld, username: str, patient_id: int) -> int:
    with world.sessions() as s:
        return len(s.scalars(select(AuditEntry.id).where(
            AuditEntry.username == username, AuditEntry.action == "care.denied", AuditEntry.patient_id == patient_id,
        )).all())


def _order_without_images(world: AccessWorld, doctor: str, case: Case) -> int:
    """An order the patient's own physician places (still cancellable: no images yet)."""
    visit = _encounter(world, case)
    with world.sessions() as s:
        user = s.scalars(select(User).where(User.username == doctor)).one()
        actor = Actor(user.id, doctor, "physician", "127.0.0.1")
        return orders.create_order(
            s, actor, {"patient_id": case.patient_id, "encounter_id": visit, "modality": "CR",
                       "procedure_name": "X-quang ngực thẳng"},
        ).id


def test_orders_are_placed_and_cancelled_only_for_patients_in_care(world: AccessWorld) -> None:
    """Reading was scoped; writing must be too: a physician may not order imaging on another
    department's visit, nor cancel another department's order, by the API or the web form."""
    token = _token(world, "bs_a")
    auth = {"Authorization": f"Bearer {token}"}
    b, b_visit = world.b, _encounter(world, world.b)
    theirs = _order_without_images(world, "bs_b", b)
    before = _orders_of(world, b.patient_id)
    denied_before = _denied(world, "bs_a", b.patient_id)
    order = {"patient_id": b.patient_id, "modality": "CT", "procedure_name": "CT sọ não"}
    # On their visit, or letting the server pick it (the patient's open visit is in K01, not bs_a's K19).
    for body in ({**order, "encounter_id": b_visit}, order):
        r = requests.post(f"{world.base}/api/orders", json=body, headers=auth, timeout=10)
        assert (r.status_code, r.json()["error"]) == (403, "out_of_care_scope"), body
        assert b.patient_name not in r.text
    r = requests.post(f"{world.base}/api/orders/{theirs}/cancel", json={"reason": "Chỉ định trùng lặp"},
                      headers=auth, timeout=10)
    assert (r.status_code, r.json()["error"]) == (403, "out_of_care_scope")
    http = http_login(world.base, "bs_a")
    r = http.post(f"{world.base}/orders/{theirs}/cancel", allow_redirects=False, timeout=10,
                  data={"csrf_token": csrf_from(http, f"{world.base}/"), "reason": "Chỉ định trùng lặp"})
    assert r.status_code == 403 and b.patient_name not in r.text
    assert _orders_of(world, b.patient_id) == before, "nothing ordered, nothing cancelled"
    assert _denied(world, "bs_a", b.patient_id) == denied_before + 4, "each refusal audited with the patient"
    # The same doors open for a patient in one's care (so the refusals above are the care rule).
    mine = requests.post(f"{world.base}/api/orders", headers=auth, timeout=10,
                         json={"patient_id": world.a.patient_id, "modality": "CR", "procedure_name": "X-quang ngực"})
    assert mine.status_code == 201, mine.text
    r = http.post(f"{world.base}/orders/{mine.json()['id']}/cancel", allow_redirects=False, timeout=10,
                  data={"csrf_token": csrf_from(http, f"{world.base}/"), "reason": "Bệnh nhân chuyển viện"})
    assert r.status_code == 302
    assert _orders_of(world, world.a.patient_id)[mine.json()["id"]] == "cancelled"
    r = requests.post(f"{world.base}/api/orders/{theirs}/cancel", json={"reason": "Chỉ định trùng lặp"},
                      headers={"Authorization": f"Bearer {_token(world, 'bs_b')}"}, timeout=10)
    assert r.status_code == 200 and _orders_of(world, b.patient_id)[theirs] == "cancelled"


def test_the_home_list_shows_only_patients_in_care(world: AccessWorld) -> None:
    """The list of patients under treatment on a clinician's home page is another door: bs_a (K19)
    sees A's visit and never B's (K01), whatever the query string says."""
    http = http_login(world.base, "bs_a")
    for url in ("/patients/", "/patients/?department=K01", "/patients/?q="):
        page = http.get(world.base + url, timeout=10).text
        assert world.a.patient_name in page, url
        assert world.b.patient_name not in page and world.b.patient_code not in page, url
    page = http_login(world.base, "bs_b").get(f"{world.base}/patients/", timeout=10).text
    assert world.b.patient_name in page and world.a.patient_name not in page
