"""While a break-the-glass (emergency) access lasts, every page its user sees says so.

Nothing reminded a clinician that they were inside a record by emergency access: the banner names each
patient the access covers, when it ends (facility time, emr.core.clock), and that every access is logged
and reviewed. It costs one query a page, only for roles that may break the glass, and disappears when
the access ends.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from emr.access import break_glass
from emr.core.clock import to_local
from emr.i18n import t
from emr.models import BreakGlassAccess, utcnow
from emr.patients import service as patients

from .conftest import World, login, outpatient_visit, patient_data

BANNER = 'id="break-glass-banner"'


def _banner(page: str) -> str:
    """The banner's text (tags dropped, entities decoded), or "" when the page has none."""
    m = re.search(r'<aside class="break-glass-banner"[^>]*>(.*?)</aside>', page, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split()) if m else ""


@contextmanager
def _banner_queries(engine: Any) -> Iterator[list[str]]:
    """The statements that look up the user's emergency accesses for the banner."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "max(break_glass_access.expires_at)" in statement.lower():
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_the_banner_names_the_patient_and_the_local_end_on_every_page_until_it_ends(
    client: FlaskClient, session: Session, world: World, engine: Any
) -> None:
    mine, _visit = outpatient_visit(session, world)  # a patient in the physician's care
    other = patients.create_patient(session, world.actor("records_clerk"),
                                    patient_data(full_name="Lý Thị Khẩn", cccd="079190000020", bhyt_number=None))
    grant = break_glass.open_break_glass(session, world.actor("physician"), other.id,
                                         "Cấp cứu ngoài giờ, bác sĩ điều trị vắng mặt", hours=4)
    until = to_local(grant.expires_at).strftime("%d/%m/%Y %H:%M")
    assert until != grant.expires_at.strftime("%d/%m/%Y %H:%M")  # shown in facility time, not UTC
    assert login(client, "physician1").status_code == 302

    for path in ("/", f"/patients/{mine.id}", f"/patients/{other.id}"):
        with _banner_queries(engine) as queries:
            r = client.get(path, follow_redirects=True)
        assert r.status_code == 200, path
        text = _banner(r.get_data(as_text=True))
        assert t("care.banner.title") in text, path
        assert "Lý Thị Khẩn" in text and t("care.banner.code", code=other.code) in text, path
        assert t("care.banner.until", at=until) in text, path
        assert t("care.banner.logged") in text, path
        assert mine.full_name not in text  # the patient of one's own care is not an emergency access
        assert len(queries) == 1, (path, queries)  # one lookup a page
    banner = client.get(f"/patients/{mine.id}").get_data(as_text=True).partition(BANNER)[2].partition("</aside>")[0]
    assert f'href="/patients/{other.id}"' in banner  # the name opens the chart it covers

    # The access ended: no banner anywhere, and the pages still answer.
    session.execute(update(BreakGlassAccess).where(BreakGlassAccess.id == grant.id)
                    .values(expires_at=utcnow() - timedelta(minutes=1)))
    session.commit()
    for path in ("/", f"/patients/{mine.id}"):
        r = client.get(path, follow_redirects=True)
        assert r.status_code == 200 and BANNER not in r.get_data(as_text=True), path


def test_users_without_a_grant_see_no_banner_and_pay_no_query(
    client: FlaskClient, session: Session, world: World, engine: Any, app: Any
) -> None:
    other = patients.create_patient(session, world.actor("records_clerk"),
                                    patient_data(full_name="Lý Thị Khẩn", cccd="079190000020", bhyt_number=None))
    break_glass.open_break_glass(session, world.actor("technician"), other.id, "Máy CT khoa cấp cứu hỏng")
    for username, path in (("physician1", "/patients/"), ("nurse1", f"/patients/{other.id}"),
                           ("admin1", "/admin/audit"), ("records_clerk1", "/patients/")):
        c = app.test_client()
        assert login(c, username).status_code == 302
        with _banner_queries(engine) as queries:
            r = c.get(path, follow_redirects=True)
        assert r.status_code == 200 and BANNER not in r.get_data(as_text=True), (username, path)
        # Roles that cannot break the glass are not asked; a physician without a grant is asked once.
        assert len(queries) == (1 if username == "physician1" else 0), (username, queries)
    # The technician who holds it sees it (another user's grant is not the physician's).
    assert login(client, "technician1").status_code == 302
    assert "Lý Thị Khẩn" in _banner(client.get("/reading/", follow_redirects=True).get_data(as_text=True))
