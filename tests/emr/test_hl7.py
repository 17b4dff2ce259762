"""HL7 v2 with the HIS (issue 15 §5): a real MLLP client against the real listener, on SQLite and PostgreSQL.

One listener per database for the module (a thread with its own asyncio loop, as
`filmless hl7 serve` runs it); messages go over TCP with MLLP framing written by
the test itself, and one through python-hl7's client.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from emr import worklist_provider
from emr.access.audit import Actor
from emr.core.clock import local_today, to_local, to_utc
from emr.hl7.messages import MessageFilter, list_messages, replay
from emr.hl7.mllp import send_mllp
from emr.models import AuditEntry, Hl7Message, Hl7OrderLink, ImagingOrder, Patient

from .conftest import _truncate_pg
from .hl7_support import (
    Site,
    adt,
    cp1258,
    err,
    mllp,
    msa,
    msh,
    omi,
    orm,
    read_frame,
    site,
    sqlite_database,
)

ADMIN = Actor(None, "admin-test", "admin", "127.0.0.1")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hl7_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"hl7-{request.param}")
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_database")  # the run's database (skips when PostgreSQL is not running)
        _truncate_pg(url)
    else:
        url = sqlite_database(tmp, request.getfixturevalue("sqlite_template"))
    yield from site(url, tmp, default_charset="cp1258")


def _patient(s: Site, his_id: str) -> Patient:
    from emr.hl7.patients import find_patient

    with s.session() as session:
        p = find_patient(session, [("BV01", his_id)], None)
        assert p is not None, his_id
        session.expunge(p)
        return p


def _row(s: Site, control: str, facility: str = "BV01") -> Hl7Message:
    with s.session() as session:
        row = session.scalars(select(Hl7Message).where(Hl7Message.control_id == control,
                                                       Hl7Message.sending_facility == facility)
                              .order_by(Hl7Message.id.desc())).first()
        assert row is not None, control
        session.expunge(row)
        return row


def test_adt_registers_updates_and_merges(hl7_site: Site) -> None:
    ack = mllp(hl7_site.port, adt("A-1", "A04", "HIS100", "Nguyễn^Minh^Thị Hồng", born="19900517", sex="F",
                                  cccd="079190001234"))
    assert msa(ack)[1:3] == ["AA", "A-1"]
    p = _patient(hl7_site, "HIS100")
    assert (p.full_name, p.sex, p.cccd, str(p.birth_date)) == ("Nguyễn Thị Hồng Minh", "F", "079190001234",
                                                                "1990-05-17")
    assert "Lê Lợi" in (p.address or "") and p.phone == "0901234567"
    # A08 changes the name; the address it does not send is kept.
    address = "|12 Lê Lợi^^Phường Bến Thành^Thành phố Hồ Chí Minh|".encode()
    update = adt("A-2", "A08", "HIS100", "Nguyễn^Minh Anh^Thị", born="19900517", sex="F").replace(address, b"||")
    assert msa(mllp(hl7_site.port, update))[1] == "AA"
    p2 = _patient(hl7_site, "HIS100")
    assert p2.id == p.id and p2.full_name == "Nguyễn Thị Minh Anh" and "Lê Lợi" in (p2.address or "")
    # A01 for a duplicate record of the same person, then A40 merges it into HIS100.
    assert msa(mllp(hl7_site.port, adt("A-3", "A01", "HIS101", "Nguyen^Minh Anh^Thi", born="19900517", sex="F")))[1] \
        == "AA"
    dup = _patient(hl7_site, "HIS101")
    assert msa(mllp(hl7_site.port, orm("A-3b", "PL-DUP", "HIS101")))[1] == "AA"
    merge = adt("A-4", "A40", "HIS100", "Nguyễn^Minh Anh^Thị", born="19900517", sex="F",
                extra="MRG|HIS101^^^BV01^PI")
    ack = mllp(hl7_site.port, merge)
    assert msa(ack)[1] == "AA", ack
    with hl7_site.session() as session:
        merged = session.get(Patient, dup.id)
        assert merged.status == "merged" and merged.merged_into_id == p.id
        order = session.scalar(select(ImagingOrder).join(Hl7OrderLink).where(Hl7OrderLink.placer_number == "PL-DUP"))
        assert order.patient_id == p.id  # the merged record's order moved to the survivor
        actions = set(session.scalars(select(AuditEntry.action).where(AuditEntry.patient_id == p.id)))
        assert {"patient.create", "patient.update", "patient.merge", "hl7.receive"} <= actions
    # The old HIS number now finds the surviving patient.
    assert _patient(hl7_site, "HIS101").id == p.id
    row = _row(hl7_site, "A-4")
    assert (row.direction, row.status, row.ack_code, row.message_type, row.patient_id) == \
        ("in", "processed", "AA", "ADT^A40", p.id)


def test_order_feeds_the_worklist_and_cancel_removes_it(hl7_site: Site) -> None:
    ack = mllp(hl7_site.port, orm("O-1", "PL-1", "HIS200", name="Phạm^Dũng^Quốc"))
    assert msa(ack)[1] == "AA", ack
    # a new patient registered from the order's PID (the A04 was missed), linked by HIS number
    assert _patient(hl7_site, "HIS200").full_name == "Phạm Quốc Dũng"
    row = _row(hl7_site, "O-1")
    provide = worklist_provider(hl7_site.settings)
    with hl7_site.session() as session:
        order = session.get(ImagingOrder, row.order_id)
        assert order is not None
        assert (order.modality, order.procedure_code, order.urgency) == ("CT", "CT.SN", "stat")
        assert order.procedure_name == "Chụp CT sọ não không tiêm thuốc cản quang"
        assert order.clinical_info == "Đau đầu, chóng mặt sau ngã"
        accession = order.accession_number
    items = provide({"AccessionNumber": accession, "Modality": "CT"})
    assert len(items) == 1 and "Phạm" in str(items[0]["PatientName"])
    # The HIS sends the same new order again: no second order.
    assert msa(mllp(hl7_site.port, orm("O-1-again", "PL-1", "HIS200")))[1] == "AA"
    with hl7_site.session() as session:
        n = session.scalar(select(func.count()).select_from(Hl7OrderLink).where(Hl7OrderLink.placer_number == "PL-1"))
        assert n == 1
    # OMI^O23 (v2.5) through python-hl7's own MLLP client.
    ack = send_mllp(f"127.0.0.1:{hl7_site.port}", omi("O-2", "PL-2", "HIS201"))
    assert msa(ack)[1] == "AA", ack
    omi_row = _row(hl7_site, "O-2")
    with hl7_site.session() as session:
        us = session.get(ImagingOrder, omi_row.order_id)
        assert us.modality == "US" and us.urgency == "routine"
    assert provide({"AccessionNumber": us.accession_number})
    # ORC-1 CA cancels: off the worklist.
    assert msa(mllp(hl7_site.port, orm("O-3", "PL-1", "HIS200", control_code="CA")))[1] == "AA"
    assert provide({"AccessionNumber": accession}) == []


def test_bad_messages_get_a_nak_with_err_detail(hl7_site: Site) -> None:
    cases = [
        # (message, MSA-1, ERR-3 code, ERR-2 location)
        (adt("N-1", "A08", "HIS-UNKNOWN"), "AE", "204", "PID^1^3"),
        ("\r".join([msh("N-2", "ADT^A04"), "PID|1||||Lê^Văn^||19800101|M"]).encode(), "AE", "101", "PID^1^3"),
        (adt("N-3", "A04", "HIS300", born="19801399"), "AE", "102", "PID^1^7"),
        (adt("N-4", "A04", "HIS301", sex="X"), "AE", "103", "PID^1^8"),
        ("\r".join([msh("N-5", "SIU^S12"), "SCH|1"]).encode(), "AR", "200", "MSH^1^9"),
        (adt("N-6", "A99", "HIS302"), "AR", "201", "MSH^1^9^1^2"),
        (orm("N-7", "PL-7", "HIS303", modality="ECG"), "AE", "103", "OBR^1^24"),
        (orm("N-8", "PL-UNKNOWN", "HIS303", control_code="CA"), "AE", "204", "ORC^1^2"),
    ]
    for message, code, err_code, location in cases:
        ack = mllp(hl7_site.port, message)
        assert msa(ack)[1] == code, (message[:60], ack)
        e = err(ack)
        assert e[2] == location and e[3].split("^")[0] == err_code and e[3].endswith("HL70357"), ack
        assert e[4] == "E" and e[8], ack  # severity and a readable message
    # Not HL7 at all: AR, still answered (with an MSH of our own), logged as rejected.
    ack = mllp(hl7_site.port, b"hello, this is not HL7")
    assert msa(ack)[1] == "AR" and err(ack)[3].startswith("100^")
    row = _row(hl7_site, "N-1")
    assert row.status == "error" and row.ack_code == "AE" and row.error.startswith("204 PID^1^3")
    assert _row(hl7_site, "N-5").status == "rejected"
    with hl7_site.session() as session:
        assert session.scalar(select(func.count()).select_from(Patient).where(Patient.full_name.like("Lê%"))) == 0


def _placed(s: Site, placer: str) -> ImagingOrder | None:
    with s.session() as session:
        order = session.scalar(select(ImagingOrder).join(Hl7OrderLink).where(Hl7OrderLink.placer_number == placer))
        if order is not None:
            session.expunge(order)
        return order


def _registered(s: Site, his_id: str) -> bool:
    from emr.hl7.patients import find_patient

    with s.session() as session:
        return find_patient(session, [("BV01", his_id)], None) is not None


def test_orders_outside_the_scheduling_window_are_refused_logged_and_audited(hl7_site: Site) -> None:
    """The order form's window (today to the same day next year, facility time) holds for the HIS too: an
    ORM/OMI starting yesterday or in 9999 went to the worklist, where no technician's day ever showed it."""
    today = local_today()
    last = today.replace(year=today.year + 1)
    limits = f"00:00 {today:%d/%m/%Y} to 23:59 {last:%d/%m/%Y}"
    half_hour_early = to_utc(datetime.combine(today, time.min)) - timedelta(minutes=30)
    cases = [  # (control ID, message, ERR-2: the field the start came from)
        ("W-1", orm("W-1", "PL-W1", "HIS910", start=f"{today - timedelta(days=1):%Y%m%d}2300"), "ORC^1^7^1^4"),
        ("W-2", orm("W-2", "PL-W2", "HIS911", start="19000101"), "ORC^1^7^1^4"),
        ("W-3", orm("W-3", "PL-W3", "HIS912", start=f"{last + timedelta(days=1):%Y%m%d}0800"), "ORC^1^7^1^4"),
        # An offset counts: half an hour before the facility's midnight, written in UTC.
        ("W-4", orm("W-4", "PL-W4", "HIS913", start=f"{half_hour_early:%Y%m%d%H%M%S}+0000"), "ORC^1^7^1^4"),
        ("W-5", omi("W-5", "PL-W5", "HIS914", start="99991231"), "TQ1^1^7"),
    ]
    for control, message, location in cases:
        ack = mllp(hl7_site.port, message)
        assert msa(ack)[1:3] == ["AE", control], ack
        e = err(ack)
        assert e[2] == location and e[3].startswith("207^") and e[4] == "E", ack
        assert "outside the scheduling window" in e[8] and limits in e[8], ack  # the limits, for the HIS's staff
        # Logged with its bytes and reason, audited as a failure, like every refused message...
        row = _row(hl7_site, control)
        assert (row.status, row.ack_code, row.order_id) == ("error", "AE", None)
        assert row.error.startswith(f"207 {location}: scheduled start") and limits in row.error
        assert bytes(row.raw) == message and bytes(row.ack) == ack
        with hl7_site.session() as session:
            audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "hl7.receive",
                                                            AuditEntry.object_id == str(row.id)))
            assert audit is not None and audit.outcome == "failure"
            assert json.loads(audit.details or "{}")["error"] == "207"
        # ...and nothing placed: no order, no link, not even the PID's patient.
        placer = message.split(b"ORC|NW|")[1].split(b"^")[0].decode()
        assert _placed(hl7_site, placer) is None
        assert not _registered(hl7_site, {"W-1": "HIS910", "W-2": "HIS911", "W-3": "HIS912", "W-4": "HIS913",
                                          "W-5": "HIS914"}[control])
    # The window's own ends are accepted: the start of today (an exam this morning) and the last day next year.
    for control, start in (("W-6", f"{today:%Y%m%d}0000"), ("W-7", f"{last:%Y%m%d}2359")):
        assert msa(mllp(hl7_site.port, orm(control, f"PL-{control}", "HIS915", start=start)))[1] == "AA"
        order = _placed(hl7_site, f"PL-{control}")
        assert order is not None and f"{to_local(order.scheduled_at):%Y%m%d%H%M}" == start
    # A start not sent is "now": inside the window.
    segments = orm("W-8", "PL-W8", "HIS915").split(b"\r")
    no_start = b"\r".join(b"ORC|NW|PL-W8^HIS" if seg.startswith(b"ORC|") else seg for seg in segments)
    assert msa(mllp(hl7_site.port, no_start))[1] == "AA"


def test_an_order_names_a_station_the_gateway_admits(tmp_path: Path, sqlite_template: Path) -> None:
    """IPC-9 (scheduled AE title) is held to the order form's rule: when the gateway admits its modalities
    by name, one of them (an unknown one was a worklist entry no modality would ever ask for)."""
    running = site(sqlite_database(tmp_path, sqlite_template), tmp_path, stations=("US01", "CT01"))
    s = next(running)
    try:
        ack = mllp(s.port, omi("ST-1", "PL-ST1", "HIS920", station="US02"))
        assert msa(ack)[1] == "AE", ack
        e = err(ack)
        assert e[2] == "IPC^1^9" and e[3].startswith("103^") and "'US02'" in e[8] and "US01, CT01" in e[8], ack
        row = _row(s, "ST-1")
        assert row.status == "error" and row.error.startswith("103 IPC^1^9")
        assert _placed(s, "PL-ST1") is None and not _registered(s, "HIS920")
        assert msa(mllp(s.port, omi("ST-2", "PL-ST2", "HIS920", station="US01")))[1] == "AA"
        order = _placed(s, "PL-ST2")
        assert order is not None and order.station_ae_title == "US01"
        assert msa(mllp(s.port, omi("ST-3", "PL-ST3", "HIS920")))[1] == "AA"  # none named: any US may do it
        order = _placed(s, "PL-ST3")
        assert order is not None and order.station_ae_title is None
    finally:
        running.close()  # the listener stops


def test_charsets(hl7_site: Site) -> None:
    # MSH-18 empty: the site's declared default (here Windows-1258, tone marks as combining characters).
    raw = "\r".join([msh("C-1", "ADT^A04", charset=""),
                     "PID|1||HIS400^^^BV01^PI||Đặng^Tuấn^Quốc||19850303|M|||Số 5 Ngõ Huế^^Phường Hai Bà Trưng"])
    ack = mllp(hl7_site.port, cp1258(raw))
    assert msa(ack, "cp1258")[1] == "AA", ack
    p = _patient(hl7_site, "HIS400")
    assert p.full_name == "Đặng Quốc Tuấn"  # stored precomposed (NFC), as typed in the EMR
    assert p.address == "Số 5 Ngõ Huế, Phường Hai Bà Trưng"
    # MSH-18 8859/1: decoded as Latin-1, the ACK answers in it.
    raw = "\r".join([msh("C-2", "ADT^A04", charset="8859/1"), "PID|1||HIS401^^^BV01^PI||Müller^José||19700101|M"])
    ack = mllp(hl7_site.port, raw.encode("latin-1"))
    assert msa(ack, "latin-1")[1] == "AA" and "8859/1" in ack.decode("latin-1").split("\r")[0]
    assert _patient(hl7_site, "HIS401").full_name == "Müller José"
    # UTF-8 declared but the bytes are not UTF-8: AR 102 at MSH-18, nothing registered.
    raw = "\r".join([msh("C-3", "ADT^A04"), "PID|1||HIS402^^^BV01^PI||Đỗ^An||19700101|M"])
    ack = mllp(hl7_site.port, cp1258(raw))
    assert msa(ack)[1] == "AR" and err(ack)[2] == "MSH^1^18" and err(ack)[3].startswith("102^")
    assert msa(ack)[2] == "C-3"  # answered for its control ID, read from the ASCII header
    assert (_row(hl7_site, "C-3").message_type, _row(hl7_site, "C-3").status) == ("ADT^A04", "rejected")
    # A character set HL7 table 0211 does not have.
    ack = mllp(hl7_site.port, "\r".join([msh("C-4", "ADT^A04", charset="KLINGON"), "PID|1||X^^^BV01^PI"]).encode())
    assert msa(ack)[1] == "AR" and err(ack)[3].startswith("103^")
    with hl7_site.session() as session:
        assert session.scalar(select(Patient).where(Patient.full_name.like("Đỗ%"))) is None


def test_slow_and_broken_clients_do_not_block_others(hl7_site: Site) -> None:
    slow = socket.create_connection(("127.0.0.1", hl7_site.port), timeout=20)
    broken = socket.create_connection(("127.0.0.1", hl7_site.port), timeout=20)
    try:
        slow.sendall(b"\x0bMSH|^~\\&|HIS|BV01|FILMLESS|00000|2026")  # half a message, then nothing
        broken.sendall(b"PID|no start block\x1c\r")  # framing error
        # Meanwhile another client is served normally.
        assert msa(mllp(hl7_site.port, adt("S-1", "A04", "HIS500")))[1] == "AA"
        assert read_frame(broken) == b""  # closed by the listener
        assert read_frame(slow) == b""  # closed after FILMLESS_HL7_TIMEOUT (3 s here)
    finally:
        slow.close()
        broken.close()
    with hl7_site.session() as session:
        errors = list(session.scalars(select(Hl7Message.error).where(Hl7Message.status == "rejected",
                                                                      Hl7Message.message_type.is_(None))))
    assert any("no complete message within" in (e or "") for e in errors)
    assert any("framing" in (e or "") for e in errors)


def test_retransmission_is_answered_without_applying_twice(hl7_site: Site) -> None:
    message = adt("R-1", "A04", "HIS600", "Võ^Hà^Thu")
    assert msa(mllp(hl7_site.port, message))[1] == "AA"
    assert msa(mllp(hl7_site.port, message))[1] == "AA"
    with hl7_site.session() as session:
        statuses = list(session.scalars(select(Hl7Message.status).where(Hl7Message.control_id == "R-1")
                                        .order_by(Hl7Message.id)))
        assert statuses == ["processed", "duplicate"]
        assert session.scalar(select(func.count()).select_from(Patient).where(Patient.full_name == "Võ Thu Hà")) == 1


def test_replay_from_the_service_and_the_cli(hl7_site: Site, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # An update that came before the registration fails...
    assert msa(mllp(hl7_site.port, adt("P-1", "A08", "HIS700", "Hoàng^Lan^Thị", born="19920202", sex="F")))[1] \
        == "AE"
    failed = _row(hl7_site, "P-1")
    assert msa(mllp(hl7_site.port, adt("P-0", "A04", "HIS700", "Hoàng^Lan^Thị", born="19920202", sex="F")))[1] \
        == "AA"
    # ...and is applied once the cause is fixed, from the admin service.
    with hl7_site.session() as session:
        outcome = replay(session, ADMIN, failed.id, hl7_site.settings)
        assert outcome.ack_code == "AA"
        new = session.get(Hl7Message, outcome.message_id)
        assert new.replay_of_id == failed.id and new.replayed_by == "admin-test" and new.status == "processed"
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "hl7.replay",
                                                       AuditEntry.object_id == str(new.id))) is not None
        rows = list_messages(session, MessageFilter(status="error"))
        assert failed.id in [r.id for r in rows]
    # ...and from the command line (filmless hl7 replay / list).
    from filmless.cli import main

    monkeypatch.setenv("FILMLESS_DATA_DIR", str(hl7_site.settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", hl7_site.settings.database_url)
    assert main(["hl7", "replay", str(failed.id)]) == 0
    assert f"message {failed.id} applied again" in capsys.readouterr().out
    assert main(["hl7", "list", "--limit", "5"]) == 0
    listing = capsys.readouterr().out
    assert "ADT^A08" in listing and "processed" in listing


@pytest.mark.slow
def test_filmless_hl7_serve_process(tmp_path: Path) -> None:
    """The listener as `filmless up` runs it: its own process on the migrated database, stopped by SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from emr import EmrSettings, upgrade_database
    from tests.helpers import free_port, wait_for

    upgrade_database(EmrSettings(database_url=f"sqlite:///{tmp_path / 'emr.sqlite3'}"))  # the EMR's job
    port = free_port()
    env = {**os.environ, "FILMLESS_DATA_DIR": str(tmp_path), "FILMLESS_HL7_PORT": str(port),
           "FILMLESS_DATABASE_URL": f"sqlite:///{tmp_path / 'emr.sqlite3'}", "FILMLESS_HL7_ALLOWED": "BV01@127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "filmless", "hl7", "serve"], env=env,
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=60)
        assert msa(mllp(port, adt("P-PROC", "A04", "HIS800", "Bùi^Yến^Hải")))[1] == "AA"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert f"HL7 MLLP listener on 127.0.0.1:{port}" in out
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'emr.sqlite3'}")
    with engine.connect() as conn:
        assert conn.scalar(select(Patient.full_name).where(Patient.full_name == "Bùi Hải Yến")) == "Bùi Hải Yến"
    engine.dispose()
