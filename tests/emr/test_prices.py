"""The service price catalogue: loading (all or nothing), price history, the snapshot on orders,
the encounter's benefit level, the CLI and migration 0004 (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.billing import prices
from emr.core import clock
from emr.core.exceptions import FileRejected, InvalidState, ValidationFailed
from emr.imaging import orders
from emr.models import AuditEntry, Encounter, ImagingOrder, ServicePrice
from emr.patients import encounters
from emr.patients import service as patients

from .conftest import ADMIN_ACTOR, World, patient_data

HEADER = "code,name,unit,price_hospital,price_insurance,valid_from\n"
GOOD = (
    HEADER
    + "18.0043.0002,Chụp CT ngực không tiêm thuốc cản quang,Lần,600000,522000,2024-01-01\n"
    + "18.0043.0002,Chụp CT ngực không tiêm thuốc cản quang,Lần,650000,536000,01/07/2025\n"
    + "18.0067.0001,Chụp X-quang ngực thẳng,Lần,80000.50,65400,2025-07-01\n"
    + "18.0001.0004,Siêu âm 4D thai,Lần,350000,,2025-07-01\n"
)


def write(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads_every_row_and_reloading_changes_nothing(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert prices.load_prices(session, ADMIN_ACTOR, path) == prices.PriceLoad(added=4, unchanged=0)
    rows = session.scalars(select(ServicePrice).order_by(ServicePrice.code, ServicePrice.valid_from)).all()
    assert [(r.code, r.valid_from, r.price_hospital, r.price_insurance) for r in rows] == [
        ("18.0001.0004", date(2025, 7, 1), Decimal("350000.00"), None),
        ("18.0043.0002", date(2024, 1, 1), Decimal("600000.00"), Decimal("522000.00")),
        ("18.0043.0002", date(2025, 7, 1), Decimal("650000.00"), Decimal("536000.00")),
        ("18.0067.0001", date(2025, 7, 1), Decimal("80000.50"), Decimal("65400.00")),
    ]
    assert rows[1].name == "Chụp CT ngực không tiêm thuốc cản quang" and rows[1].unit == "Lần"
    assert rows[1].source == "prices.csv" and rows[1].loaded_by == ADMIN_ACTOR.username
    # the same file again: nothing added, nothing changed (a catalogue can be reloaded safely)
    assert prices.load_prices(session, ADMIN_ACTOR, path) == prices.PriceLoad(added=0, unchanged=4)
    assert session.scalar(select(func.count()).select_from(ServicePrice)) == 4
    # tab-separated, header in another column order, BOM: the same rows
    tsv = (
        "\ufeffvalid_from\tcode\tname\tunit\tprice_hospital\tprice_insurance\n"
        "2026-01-01\tCT.01\tCT bụng\tLần\t900000\t700000\n"
    )
    assert prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, tsv, "p.tsv")).added == 1
    audits = session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.prices_load")).all()
    assert [json.loads(a.details)["added"] for a in audits] == [4, 0, 1]
    assert {a.outcome for a in audits} == {"success"}


def test_bad_lines_load_nothing_and_every_line_is_reported(session: Session, tmp_path: Path) -> None:
    bad = (
        HEADER
        + "18.0043.0002,Chụp CT ngực,Lần,650000,536000,2025-07-01\n"  # good, but not loaded
        + "18.0067.0001,Chụp X-quang ngực thẳng,Lần,1.250.000,65400,2025-07-01\n"  # thousands separators
        + "18.0067.0002,X-quang cột sống,Lần,80.000,65400,2025-07-01\n"  # 80.000 is not 80 đồng
        + "mã có dấu,Siêu âm,Lần,150000,43900,2025-07-01\n"
        + "18.0015.0001,,Lần,150000,200000,2025-31-12\n"
        + "18.0043.0002,Chụp CT ngực,Lần,650000,536000,2025-07-01\n"  # the same code and date twice
        + "18.0099.0001,Thiếu cột,Lần,1000\n"
        + "\n"
    )
    with pytest.raises(FileRejected) as info:
        prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, bad))
    assert [(line, key) for line, key, _ in info.value.problems] == [
        (3, "prices.error.amount"),
        (4, "prices.error.amount"),
        (5, "prices.error.code"),
        (6, "prices.error.name"),
        (6, "prices.error.insurance_above_hospital"),
        (6, "prices.error.date"),
        (7, "prices.error.duplicate"),
        (8, "prices.error.columns"),
    ]
    messages = info.value.messages()
    assert messages[0].startswith("Dòng 3: price_hospital «1.250.000» không phải số tiền hợp lệ")
    assert messages[6] == "Dòng 7: mã 18.0043.0002 từ ngày 01/07/2025 đã có ở dòng 2"
    assert session.scalar(select(func.count()).select_from(ServicePrice)) == 0  # not even line 2
    failure = session.scalars(select(AuditEntry).where(AuditEntry.action == "catalog.prices_load")).one()
    assert failure.outcome == "failure" and json.loads(failure.details)["lines"] == [3, 4, 5, 6, 6, 6, 7, 8]
    for text, key in (
        ("code,name\nX,Y\n", "prices.error.header"),
        ("", "prices.error.empty"),
        (HEADER, "prices.error.empty"),
    ):
        with pytest.raises(FileRejected) as other:
            prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, text))
        assert other.value.problems[0][1] == key
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((HEADER + "X.1,Siêu âm,Lần,1,1,2025-01-01\n").encode("latin-1", "replace").replace(b"?", b"\xea"))
    with pytest.raises(FileRejected) as enc:
        prices.load_prices(session, ADMIN_ACTOR, latin)
    assert enc.value.problems[0][1] == "prices.error.encoding"


def test_history_is_kept_and_a_loaded_price_is_never_rewritten(session: Session, tmp_path: Path) -> None:
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, GOOD))
    ct = "18.0043.0002"
    assert prices.price_on(session, ct, date(2023, 12, 31)) is None  # before the first price
    assert prices.price_on(session, ct, date(2024, 1, 1)).price_hospital == Decimal("600000")  # type: ignore[union-attr]
    assert prices.price_on(session, ct, date(2025, 6, 30)).price_insurance == Decimal("522000")  # type: ignore[union-attr]
    assert prices.price_on(session, ct, date(2025, 7, 1)).price_insurance == Decimal("536000")  # type: ignore[union-attr]
    assert prices.price_on(session, "NO.SUCH", date(2026, 1, 1)) is None
    # a price change is a new row with a new date, the old ones stay
    rise = HEADER + f"{ct},Chụp CT ngực không tiêm thuốc cản quang,Lần,700000,560000,2027-01-01\n"
    assert prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, rise)).added == 1
    assert prices.price_on(session, ct, date(2026, 12, 31)).price_hospital == Decimal("650000")  # type: ignore[union-attr]
    assert prices.price_on(session, ct, date(2027, 1, 1)).price_hospital == Decimal("700000")  # type: ignore[union-attr]
    current = {p.code: p.price_hospital for p in prices.current_prices(session, date(2026, 11, 23))}
    assert current == {ct: Decimal("650000"), "18.0067.0001": Decimal("80000.50"), "18.0001.0004": Decimal("350000")}
    # changing an already loaded (code, date) is refused: history is not rewritten
    edit = HEADER + f"{ct},Chụp CT ngực không tiêm thuốc cản quang,Lần,640000,536000,2025-07-01\n"
    with pytest.raises(FileRejected) as info:
        prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, edit))
    assert info.value.problems == [(2, "prices.error.changed", {"code": ct, "date": "01/07/2025"})]
    assert prices.price_on(session, ct, date(2025, 7, 1)).price_hospital == Decimal("650000")  # type: ignore[union-attr]
    assert session.scalar(select(func.count()).select_from(ServicePrice)) == 5


def test_order_snapshots_the_price_valid_when_placed(session: Session, world: World, tmp_path: Path) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, GOOD))
    base = {"patient_id": p.id, "modality": "CT", "procedure_name": "CT ngực không tiêm"}
    ct = orders.create_order(session, doctor, {**base, "procedure_code": "18.0043.0002"})
    assert (ct.price_hospital, ct.price_insurance, ct.price_unit) == (Decimal("650000"), Decimal("536000"), "Lần")
    row = session.get(ServicePrice, ct.price_id)
    assert row is not None and row.valid_from == date(2025, 7, 1)
    not_covered = orders.create_order(session, doctor, {**base, "modality": "US", "procedure_code": "18.0001.0004"})
    assert (not_covered.price_hospital, not_covered.price_insurance) == (Decimal("350000"), None)
    # no code, or a code the catalogue does not know: the order is placed without a price
    for extra in ({}, {"procedure_code": "99.9999.9999"}):
        o = orders.create_order(session, doctor, {**base, **extra})
        assert (o.price_id, o.price_hospital, o.price_insurance, o.price_unit) == (None, None, None, None)
    # a later price change does not touch the order already placed
    today = clock.local_today()
    rise = HEADER + f"18.0043.0002,Chụp CT ngực,Lần,999000,888000,{today:%Y-%m-%d}\n"
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, rise))
    session.expire_all()
    assert session.get(ImagingOrder, ct.id).price_hospital == Decimal("650000")  # type: ignore[union-attr]
    newer = orders.create_order(session, doctor, {**base, "procedure_code": "18.0043.0002"})
    assert newer.price_hospital == Decimal("999000")
    created = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "order.create", AuditEntry.object_id == str(ct.id))
    ).one()
    assert json.loads(created.details)["price"] == {
        "id": ct.price_id,
        "hospital": "650000.00",
        "insurance": "536000.00",
    }
    shown = orders.order_dict(session, ct)
    assert (shown["price_hospital"], shown["price_insurance"], shown["price_unit"]) == (
        Decimal("650000"),
        Decimal("536000"),
        "Lần",
    )


def _encounter(session: Session, world: World, **extra: Any) -> Encounter:
    p = patients.create_patient(
        session, world.actor("records_clerk"),
        patient_data(cccd=None, bhyt_number=None, full_name="Lê Văn Tám", confirm_new_person=True),
    )
    data = {"patient_id": p.id, "kind": "outpatient", "department_code": world.department_code, **extra}
    return encounters.create_encounter(session, world.actor("physician"), data)


def test_benefit_level_at_registration_is_validated(session: Session, world: World) -> None:
    for level in (100, 95, 80):
        assert _encounter(session, world, benefit_level=level).benefit_level == level
    assert _encounter(session, world).benefit_level is None  # entered later, or not insured
    for bad in (50, 32):
        with pytest.raises(ValidationFailed) as info:
            _encounter(session, world, benefit_level=bad)
        assert info.value.fields == {"benefit_level": "encounters.error.benefit_level"}
        session.rollback()
    for bad in (0, 101, "tám mươi"):
        with pytest.raises(ValidationFailed) as info:
            _encounter(session, world, benefit_level=bad)
        assert set(info.value.fields) == {"benefit_level"}
        session.rollback()
    # a special level with the reason: out-of-route inpatient at a central hospital, 80 % × 40 %
    special = _encounter(session, world, benefit_level=32, benefit_level_note="KCB trái tuyến tuyến TW: 80% × 40%")
    assert (special.benefit_level, special.benefit_level_note) == (32, "KCB trái tuyến tuyến TW: 80% × 40%")


def test_benefit_level_can_be_entered_later_and_is_audited(session: Session, world: World) -> None:
    enc = _encounter(session, world)
    clerk = world.actor("records_clerk")
    encounters.set_benefit_level(session, clerk, enc.id, {"benefit_level": "95"})
    assert session.get(Encounter, enc.id).benefit_level == 95  # type: ignore[union-attr]
    with pytest.raises(ValidationFailed):
        encounters.set_benefit_level(session, clerk, enc.id, {"benefit_level": 60})
    session.rollback()
    assert session.get(Encounter, enc.id).benefit_level == 95  # type: ignore[union-attr]
    encounters.set_benefit_level(session, clerk, enc.id, {"benefit_level": None, "benefit_level_note": "x"})
    assert session.get(Encounter, enc.id).benefit_level_note is None  # type: ignore[union-attr]
    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "encounter.benefit_level")).all()
    assert [json.loads(r.details)["after"]["benefit_level"] for r in rows] == [95, None]
    assert json.loads(rows[1].details)["before"]["benefit_level"] == 95
    enc.status = "cancelled"
    session.commit()
    with pytest.raises(InvalidState):
        encounters.set_benefit_level(session, clerk, enc.id, {"benefit_level": 80})


# -- the CLI ------------------------------------------------------------------
def test_load_prices_command(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emr import open_session
    from filmless.cli import main

    for k in list(__import__("os").environ):
        if k.startswith("FILMLESS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FILMLESS_DATABASE_URL", settings.database_url)
    good = write(tmp_path, GOOD)
    assert main(["emr", "load-prices", str(good)]) == 0
    assert "Đã nạp 4 giá dịch vụ mới (0 dòng đã có sẵn, bỏ qua)." in capsys.readouterr().out
    assert main(["emr", "load-prices", str(good)]) == 0
    assert "Đã nạp 0 giá dịch vụ mới (4 dòng đã có sẵn, bỏ qua)." in capsys.readouterr().out
    bad = write(
        tmp_path, HEADER + "X.1,Siêu âm,Lần,100000,,2026-01-01\nX.2,Siêu âm,Lần,100000,,32/01/2026\n", "bad.csv"
    )
    assert main(["emr", "load-prices", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Tệp bad.csv có 1 dòng lỗi; không nạp dòng nào:" in err
    assert "Dòng 3: ngày áp dụng «32/01/2026» không hợp lệ" in err
    assert main(["emr", "load-prices", str(tmp_path / "missing.csv")]) == 2
    assert "Không tìm thấy tệp" in capsys.readouterr().err
    with open_session(settings) as s:
        assert s.scalar(select(func.count()).select_from(ServicePrice)) == 4  # X.1 was not loaded
        who = s.scalars(select(AuditEntry.username).where(AuditEntry.action == "catalog.prices_load")).all()
        assert len(who) == 3 and all(u.startswith("cli:") for u in who)


# -- migration 0004 -------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A database with no schema at all, to migrate step by step."""
    import uuid

    from sqlalchemy import create_engine, text

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/steps.sqlite3"
        return
    from .conftest import PG_ADMIN_URL, _pg_available

    if not _pg_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"filmless_mig_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migration_0004_keeps_existing_rows_and_matches_the_models(empty_url: str) -> None:
    from datetime import datetime

    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import MIGRATIONS_DIR, upgrade
    from emr.models import Base

    engine, t = at_revision(empty_url, "0003")
    try:
        now = datetime(2026, 11, 1, 8, 0)
        with engine.begin() as c:
            seed_people(c, t, now)
            c.execute(
                t["imaging_orders"]
                .insert()
                .values(id=1, patient_id=1, encounter_id=1, accession_number="A1", study_instance_uid="1.2.3")
                .values(modality="CT", procedure_code="18.0043.0002", procedure_name="CT ngực", urgency="routine")
                .values(status="scheduled", ordered_by=1, ordered_at=now, scheduled_at=now)
            )
            # a study referencing the order: rebuilding imaging_orders on SQLite would now fail
            c.execute(
                t["studies"]
                .insert()
                .values(id=1, orthanc_id="o1", study_instance_uid="1.2.3", order_id=1, patient_id=1)
                .values(state="linked", first_seen_at=now)
            )
        upgrade(engine)
        insp = inspect(engine)
        assert {"price_id", "price_hospital", "price_insurance", "price_unit"} <= {
            c["name"] for c in insp.get_columns("imaging_orders")
        }
        with engine.connect() as c:
            # orders placed before the catalogue existed keep working, without a price
            assert c.execute(
                select(ImagingOrder.price_hospital, ImagingOrder.procedure_code).where(ImagingOrder.id == 1)
            ).one() == (None, "18.0043.0002")
            assert c.execute(select(Encounter.benefit_level).where(Encounter.id == 1)).scalar_one() is None
            ours = {"service_prices", "imaging_orders", "encounters"}
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata) if _touches(d, ours)]
            assert diffs == []
        # the money column keeps every digit and both decimals
        with engine.begin() as c:
            c.execute(
                ServicePrice.__table__.insert().values(
                    code="X",
                    name="X",
                    unit="Lần",
                    price_hospital=Decimal("999999999999.99"),
                    price_insurance=None,
                    valid_from=date(2026, 1, 1),
                    created_at=now,
                )
            )
            assert c.execute(select(ServicePrice.price_hospital)).scalar_one() == Decimal("999999999999.99")
        # and back down to 0003 (and up again): the tables and columns go, the order stays
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as c:
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0003")
        insp = inspect(engine)
        assert "service_prices" not in insp.get_table_names()
        assert "price_hospital" not in {c["name"] for c in insp.get_columns("imaging_orders")}
        assert "benefit_level" not in {c["name"] for c in insp.get_columns("encounters")}
        upgrade(engine)
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(ImagingOrder)).scalar_one() == 1
    finally:
        engine.dispose()


def at_revision(url: str, revision: str) -> tuple[Any, Any]:
    """An engine on ``url`` migrated to ``revision``, and that revision's tables (reflected)."""
    from sqlalchemy import MetaData

    from emr.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine, revision)
    old = MetaData()
    old.reflect(engine)
    return engine, old.tables


def seed_people(c: Any, t: Any, now: Any) -> None:
    """Department K19, physician 1, patient 1 and encounter 1 as raw rows (for migration tests at an old revision)."""
    c.execute(t["departments"].insert().values(id=1, code="K19", name="Khoa Nội"))
    c.execute(
        t["users"]
        .insert()
        .values(id=1, username="bs", full_name="Bác sĩ", role="physician", password_hash="x", active=True)
        .values(failed_logins=0, session_version=1, created_at=now, is_department_head=False)
    )
    c.execute(
        t["patients"]
        .insert()
        .values(id=1, code="BN000001", full_name="Lê Văn Tám", family_name="Lê", given_name="Văn Tám")
        .values(search_name="le van tam", search_given="van tam", birth_date=date(1980, 1, 1))
        .values(birth_year_only=False, sex="M", nationality_code="000", ethnicity_code="01", status="active")
        .values(created_at=now, updated_at=now)
    )
    c.execute(
        t["encounters"]
        .insert()
        .values(id=1, patient_id=1, visit_code="V1", kind="outpatient", department_id=1, attending_id=1)
        .values(status="open", admitted_at=now, record_type="ordinary", created_by=1, created_at=now)
    )


def _touches(diff: Any, tables: set[str]) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        for part in item:
            table = getattr(part, "table", None)
            name = getattr(part, "name", None) if table is None else getattr(table, "name", None)
            if name in tables or part in tables:
                return True
    return False


def test_order_placed_before_its_price_gets_the_price_of_its_date(
    session: Session, world: World, tmp_path: Path
) -> None:
    from datetime import datetime

    doctor = world.actor("physician")
    clerk = world.actor("records_clerk")
    p = patients.create_patient(session, clerk, patient_data())
    base = {"patient_id": p.id, "modality": "CT", "procedure_name": "CT ngực không tiêm"}
    early = orders.create_order(session, doctor, {**base, "procedure_code": "18.0043.0002"})
    uncoded = orders.create_order(session, doctor, base)
    assert early.price_hospital is None  # the price list was not loaded yet
    with pytest.raises(InvalidState) as none_yet:
        orders.apply_catalogue_price(session, clerk, early.id)
    assert none_yet.value.key == "orders.error.no_catalogue_price"
    prices.load_prices(session, ADMIN_ACTOR, write(tmp_path, GOOD))
    early.ordered_at = datetime(2025, 3, 1, 2, 0)  # ordered in March 2025 (UTC; same date in Vietnam)
    session.commit()
    priced = orders.apply_catalogue_price(session, clerk, early.id)
    # the price of the order's date (from 2024-01-01), not today's
    assert (priced.price_hospital, priced.price_insurance) == (Decimal("600000"), Decimal("522000"))
    row = session.scalars(select(AuditEntry).where(AuditEntry.action == "order.price")).one()
    assert row.username == "records_clerk1" and json.loads(row.details)["price"]["hospital"] == "600000.00"
    with pytest.raises(InvalidState) as again:  # a price on an order is never replaced
        orders.apply_catalogue_price(session, clerk, early.id)
    assert again.value.key == "orders.error.already_priced"
    with pytest.raises(InvalidState):
        orders.apply_catalogue_price(session, clerk, uncoded.id)
    orders.cancel_order(session, doctor, uncoded.id, "nhầm")
    with pytest.raises(InvalidState) as cancelled:
        orders.apply_catalogue_price(session, clerk, uncoded.id)
    assert cancelled.value.key == "orders.error.cancelled"
