"""Issue 15 §3 end to end: a real `filmless emr serve` with its outbox worker, the national
population database stand-in down at registration, then back with a mismatch.

Registration answers at once; the server's own worker retries the queued check
until the gateway answers, asks it exactly once, and the records clerk settles
the mismatch on the reconciliation page over real HTTP.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from emr.models import IdentityCheck, OutboxMessage, Patient
from tests.helpers import wait_for
from tests.security.auth_support import make_users, running_emr
from tests.standins.population import PopulationStandIn

CCCD = "001085004321"


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
def test_gateway_down_at_registration_then_back(tmp_path: Path) -> None:
    standin = PopulationStandIn()  # its port reserved, nothing listening yet: the gateway is down
    standin.add(CCCD, "Trần Văn Bình", "1985-03-02", "M")
    cred = tmp_path / "identity-credential"
    fd = os.open(cred, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(standin.token)
    env = {
        "FILMLESS_IDENTITY_URL": standin.url,
        "FILMLESS_IDENTITY_CREDENTIAL_FILE": str(cred),
        "FILMLESS_IDENTITY_TIMEOUT": "5",
        "FILMLESS_OUTBOX_RETRY_SECONDS": "1",
        "FILMLESS_OUTBOX_RETRY_MAX_SECONDS": "2",
        "FILMLESS_OUTBOX_POLL_SECONDS": "1",
    }
    try:
        with running_emr(tmp_path, env) as emr:
            make_users(emr, ("thuy", "records_clerk"))
            http, r = emr.login("thuy")
            assert r.status_code == 302
            form = {"full_name": "Trần Văn Binh", "birth_date": "1985-03-02", "sex": "M", "cccd": CCCD}
            form["csrf_token"] = _token(http.get(emr.url("/patients/new"), timeout=30).text)
            r = http.post(emr.url("/patients/new"), data=form, allow_redirects=False, timeout=30)
            assert r.status_code == 302, emr.log_tail()  # registered while the gateway is down

            factory = emr.session_factory()

            def message() -> OutboxMessage | None:
                with factory() as s:
                    return s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "identity.check")).first()

            wait_for(lambda: (m := message()) is not None and m.attempts >= 1, timeout=60,
                     what="the worker to try the down gateway")
            with factory() as s:
                check = s.scalars(select(IdentityCheck)).one()
                assert (check.status, check.last_error) == ("queued", "unreachable")

            standin.up()

            def settled() -> bool:
                with factory() as s:
                    return s.scalars(select(IdentityCheck)).one().status != "queued"

            wait_for(settled, timeout=60, what="the queued check to run once the gateway is back")
            page = http.get(emr.url("/identity/"), timeout=30).text
            assert "Trần Văn Binh" in page and "Trần Văn Bình" in page
            with factory() as s:
                check_id = s.scalars(select(IdentityCheck.id)).one()
            r = http.post(
                emr.url(f"/identity/{check_id}/decide"),
                data={"decision": "accept_national", "reason": "Theo CCCD gốc", "csrf_token": _token(page)},
                allow_redirects=False,
                timeout=30,
            )
            assert r.status_code == 302
            with factory() as s:
                assert s.scalars(select(Patient.full_name)).one() == "Trần Văn Bình"
                assert s.scalars(select(OutboxMessage.status)).one() == "sent"
            assert standin.asked[CCCD] == 1  # asked once, however many attempts came before
            factory.kw["bind"].dispose()
    finally:
        standin.down()
