"""Revoking a share slip's link: only those who print slips, and the records clerk at the desk.

A slip's link is the patient's access to their images and signed report. A
technician may neither read that report nor print a slip (issue 10), so they
may not end the patient's access either: on the reading page the technician
saw *Thu hồi* beside the radiologist's links and revoking one worked. Against
a real ``filmless emr serve``: the revoke button is not shown, the form's POST
is refused (403) and audited, the JSON API has no share door, the service
refuses on its own, and the patient's link keeps working; the radiologist and
the records clerk still revoke.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from emr.core.exceptions import PermissionDenied
from emr.models import AuditEntry, ShareLink, User
from emr.sharing import service as sharing
from tests.security.auth_support import (
    SETUP,
    Record,
    RunningEmr,
    actor_for,
    client,
    csrf,
    in_session,
    make_record,
    make_users,
    running_emr,
)


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmr]:
    with running_emr(tmp_path_factory.mktemp("emr-share-revoke")) as running:
        make_users(running, ("bacsi", "physician"), ("bschan", "radiologist"), ("ktv", "technician"),
                   ("luutru", "records_clerk"))
        yield running


@pytest.fixture(scope="module")
def record(emr: RunningEmr) -> Record:
    # The CT is scheduled today: the patient is in the technician's care (they open the study page).
    return make_record(emr, "bacsi", "bschan", signed=True)




def _printed_link(emr: RunningEmr, record: Record) -> tuple[int, str, str]:
    """A slip printed by the radiologist: (link id, code, PIN)."""
    def make(session: Any) -> tuple[int, str, str]:
        link, code, pin = sharing.create_share_link(session, actor_for(session, "bschan"), record.study_id)
        return link.id, code, pin

    result: tuple[int, str, str] = in_session(emr, make)
    return result


def _revoked(emr: RunningEmr, link_id: int) -> bool:
    return bool(in_session(emr, lambda s: s.get(ShareLink, link_id).revoked_at is not None))


def _patient_opens(emr: RunningEmr, code: str, pin: str) -> requests.Session:
    """The patient types the PIN of their slip and sees their study (from another address)."""
    patient = client("127.0.0.30")
    page = patient.get(emr.url(f"/s/{code}"), timeout=30)
    assert page.status_code == 200
    r = patient.post(emr.url(f"/s/{code}"), data={"pin": pin, "csrf_token": csrf(page.text)}, timeout=30)
    assert r.status_code == 200 and "Trần Văn Đức" in r.text
    return patient


def _denials(emr: RunningEmr, username: str) -> list[tuple[str, str | None]]:
    def rows(session: Any) -> list[tuple[str, str | None]]:
        found = session.execute(
            select(AuditEntry.action, AuditEntry.object_id).where(
                AuditEntry.username == username, AuditEntry.outcome == "denied"
            )
        ).all()
        return [(a, o) for a, o in found]

    result: list[tuple[str, str | None]] = in_session(emr, rows)
    return result


def test_a_technician_cannot_revoke_the_patients_share_link(emr: RunningEmr, record: Record) -> None:
    link_id, code, pin = _printed_link(emr, record)
    patient = _patient_opens(emr, code, pin)
    revoke_path = f"/reading/shares/{link_id}/revoke"

    ktv, _ = emr.login("ktv")
    page = ktv.get(emr.url(f"/reading/studies/{record.study_id}"), timeout=30)
    assert page.status_code == 200  # the technician still reads the images ...
    assert revoke_path not in page.text and 'class="revoke"' not in page.text  # ... but is offered no Thu hồi
    assert ktv.get(emr.url(f"/reading/studies/{record.study_id}/share"), timeout=30).status_code == 403

    # Replaying the form's POST (a CSRF token of the technician's own session) is refused and audited.
    r = ktv.post(emr.url(revoke_path), data={"csrf_token": csrf(page.text)}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert not _revoked(emr, link_id)
    assert ("share.manage", revoke_path) in _denials(emr, "ktv")

    # The JSON API has no door to share links at all (so none to revoke through with a token).
    spec = requests.get(emr.url("/api/openapi.json"), timeout=30).json()
    assert not [p for p in spec["paths"] if "shar" in p.lower()]
    token = in_session(emr, lambda s: _make_token(s, "ktv"))
    for method in ("POST", "DELETE"):
        for path in (f"/api/shares/{link_id}/revoke", f"/api/shares/{link_id}"):
            api = requests.request(method, emr.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert api.status_code in (403, 404, 405), (method, path, api.status_code)
    assert not _revoked(emr, link_id)

    # The service refuses on its own too (a future view or API route cannot forget the check) and audits it.
    def by_service(session: Any) -> None:
        with pytest.raises(PermissionDenied):
            sharing.revoke_share_link(session, actor_for(session, "ktv"), link_id)

    in_session(emr, by_service)
    assert ("share.revoke", str(link_id)) in _denials(emr, "ktv")
    assert not _revoked(emr, link_id)

    # The patient's link still works: the session that typed the PIN, and a fresh visit with the slip.
    again = patient.get(emr.url(f"/s/{code}"), timeout=30)
    assert again.status_code == 200 and "Trần Văn Đức" in again.text
    _patient_opens(emr, code, pin)


def _make_token(session: Any, username: str) -> str:
    from emr.access.users import create_token

    user = session.scalar(select(User).where(User.username == username))
    return create_token(session, SETUP, user.id, "test")


@pytest.mark.parametrize("username", ["bschan", "luutru"])
def test_the_reader_and_the_records_clerk_still_revoke(emr: RunningEmr, record: Record, username: str) -> None:
    link_id, code, pin = _printed_link(emr, record)
    patient = _patient_opens(emr, code, pin)
    http, _ = emr.login(username)
    page = http.get(emr.url(f"/reading/studies/{record.study_id}/share"), timeout=30)
    assert page.status_code == 200 and f"/reading/shares/{link_id}/revoke" in page.text  # Thu hồi is offered
    r = http.post(emr.url(f"/reading/shares/{link_id}/revoke"), data={"csrf_token": csrf(page.text)},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/reading/studies/{record.study_id}/share")
    assert _revoked(emr, link_id)
    assert patient.get(emr.url(f"/s/{code}"), timeout=30).status_code == 410  # the slip no longer opens
    revoked = in_session(emr, lambda s: s.scalars(select(AuditEntry).where(
        AuditEntry.action == "share.revoke", AuditEntry.object_id == str(link_id))).all())
    assert [(e.username, e.outcome) for e in revoked] == [(username, "success")]
