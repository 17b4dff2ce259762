"""A real EMR for the account/session/signing red-team tests: ``filmless emr serve`` in a subprocess.

The tests talk HTTP to it from chosen loopback source addresses (127.0.0.x),
which is how one machine plays an attacker and a bystander at once: the
server sees different client IPs. Accounts and records are made in the test
process on the same SQLite file (the EMR's own service functions).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import select

from emr import Actor, EmrSettings, upgrade_database
from emr.db import make_engine, make_session_factory
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "correct horse battery"


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a given local address (e.g. 127.0.0.2) so the server sees another client."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def client(source: str = "127.0.0.1") -> requests.Session:
    s = requests.Session()
    adapter = SourceAddressAdapter(source)
    s.mount("http://", adapter)
    return s


def csrf(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, "no CSRF token on the page"
    return m.group(1)


def error_text(page: str) -> str:
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', page, re.S)
    return m.group(1).strip() if m else ""


@dataclass
class RunningEmr:
    base: str
    settings: EmrSettings
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path

    def session_factory(self) -> Any:
        return make_session_factory(make_engine(self.settings.database_url))

    def login(self, username: str, password: str = PASSWORD, source: str = "127.0.0.1",
              next_path: str | None = None) -> tuple[requests.Session, requests.Response]:
        s = client(source)
        token = csrf(s.get(self.url("/login"), timeout=30).text)
        url = self.url("/login") + (f"?next={next_path}" if next_path is not None else "")
        r = s.post(url, data={"username": username, "password": password, "csrf_token": token},
                   allow_redirects=False, timeout=60)
        return s, r

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextmanager
def running_emr(tmp_path: Path, extra_env: dict[str, str] | None = None, *, dev_pki: bool = False
                ) -> Iterator[RunningEmr]:
    """Migrate a fresh data dir, start ``filmless emr serve`` on a free port, wait for /healthz.

    ``dev_pki``: the data dir trusts the tests' development CA, which only ``--demo`` allows.
    """
    data = tmp_path / "var"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = EmrSettings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'emr.sqlite3'}",
        port=port,
        secret_key_file=data / "secret_key",
        public_url=f"http://127.0.0.1:{port}",
    )
    upgrade_database(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env.update({
        "FILMLESS_DATA_DIR": str(data),
        "FILMLESS_EMR_PORT": str(port),
        "FILMLESS_EMR_HOST": "127.0.0.1",
        # No image store is needed here: an address where nothing listens (the linker just waits).
        "FILMLESS_ORTHANC_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONPATH": str(REPO),
    })
    env.update(extra_env or {})
    log = tmp_path / "emr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "filmless", "emr", "serve", *(["--demo"] if dev_pki else [])],
                                env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
    emr = RunningEmr(f"http://127.0.0.1:{port}", settings, proc, log, env)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the EMR exited: {emr.log_tail()}")
        try:
            return requests.get(emr.url("/healthz"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(healthy, timeout=60, what="the EMR to answer /healthz")
        yield emr
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def user_id(emr: RunningEmr, username: str) -> int:
    """The id of an account in the running EMR's database."""
    from emr.models import User

    factory = emr.session_factory()
    with factory() as session:
        uid = session.scalar(select(User.id).where(User.username == username))
    factory.kw["bind"].dispose()
    assert uid is not None
    return int(uid)


def in_session(emr: RunningEmr, fn: Any) -> Any:
    """``fn(session)`` on the running EMR's database, in a session (and engine) of its own."""
    factory = emr.session_factory()
    try:
        with factory() as session:
            return fn(session)
    finally:
        factory.kw["bind"].dispose()


def actor_for(session: Any, username: str) -> Actor:
    """The service-level actor of an account, as a request from 127.0.0.1 would make it."""
    from emr.models import User

    user = session.scalar(select(User).where(User.username == username))
    assert user is not None, username
    return Actor(user.id, username, user.role, "127.0.0.1")


def make_users(emr: RunningEmr, *specs: tuple[str, str]) -> dict[str, int]:
    """Accounts (username, role) with PASSWORD; returns their ids."""
    from emr.access.users import create_user
    from emr.patients import encounters

    factory = emr.session_factory()
    ids = {}
    with factory() as session:
        dep = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
        session.commit()
        for username, role in specs:
            user = create_user(session, SETUP, username, PASSWORD, role, f"Người dùng {username}",
                               department_id=dep.id, practising_cert_no=f"{username}/HCM-CCHN")
            ids[username] = user.id
    factory.kw["bind"].dispose()
    return ids


@dataclass(frozen=True)
class Record:
    patient_id: int
    encounter_id: int
    order_id: int
    study_id: int
    report_id: int


def make_record(emr: RunningEmr, physician: str, radiologist: str, *, signed: bool) -> Record:
    """A patient with a visit, a CT order, its linked study and a radiology report draft by ``radiologist``
    (with ``signed``: locked as signed by the service, without cryptography)."""
    import uuid

    from emr.documents import service as documents
    from emr.imaging import orders
    from emr.models import Study, User
    from emr.patients import encounters
    from emr.patients import service as patients

    factory = emr.session_factory()
    with factory() as session:
        users = {u.username: u for u in session.scalars(select(User))}
        doctor = Actor(users[physician].id, physician, "physician", "127.0.0.1")
        reader = Actor(users[radiologist].id, radiologist, "radiologist", "127.0.0.1")
        patient = patients.create_patient(session, SETUP, {
            "full_name": "Trần Văn Đức", "birth_date": "1958-11-02", "sex": "M",
            "cccd": f"0010580{uuid.uuid4().int % 10**5:05d}", "address": "45 Phố Huế, Hà Nội",
            "province_code": "01", "phone": "0912345678",
        })
        enc = encounters.create_encounter(session, doctor, {
            "patient_id": patient.id, "kind": "outpatient", "department_code": "K19", "reason": "Đau đầu",
        })
        order = orders.create_order(session, doctor, {
            "patient_id": patient.id, "encounter_id": enc.id, "modality": "CT",
            "procedure_name": "CT sọ não không tiêm", "body_part": "HEAD",
        })
        study = Study(orthanc_id=uuid.uuid4().hex, study_instance_uid=order.study_instance_uid,
                      accession_number=order.accession_number, order_id=order.id, patient_id=patient.id,
                      state="linked", link_method="accession", modalities="CT", study_date="20261206")
        session.add(study)
        session.commit()
        report = documents.create_document(session, reader, {
            "encounter_id": enc.id, "form_type": "radiology_report", "order_id": order.id,
            "content": {"findings": "Không thấy tổn thương khu trú.", "conclusion": "Chưa thấy bất thường."},
        })
        if signed:
            documents.mark_signed(session, reader, report.id, 1)
        record = Record(patient.id, enc.id, order.id, study.id, report.id)
    factory.kw["bind"].dispose()
    return record
