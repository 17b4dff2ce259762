"""Issue 15 §3: nothing leaves the hospital with a CCCD the national population database disputes.

The pre-export check asks the real HTTP stand-in; an open mismatch stops the
4750 envelope and the HoSoBenhAn export until a records clerk decides it.
"""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from emr.exports import ExportCheckFailed, ExportConfig, export_hsba, export_xml130
from emr.exports.facility_key import FacilityKey
from emr.identity import checks, reconcile
from tests.exports.conftest import (  # noqa: F401  (fixtures)
    World,
    database_url,
    engine,
    export_config,
    facility_key,
    make_visit,
    pg_database,
    pki,
    session,
    settings,
    sqlite_template,
    world,
)
from tests.standins.population import PopulationStandIn, gateway, standin  # noqa: F401  (fixtures)


def test_export_waits_for_a_decided_identity(
    session: Session,  # noqa: F811
    world: World,  # noqa: F811
    export_config: ExportConfig,  # noqa: F811
    facility_key: FacilityKey,  # noqa: F811
    gateway: PopulationStandIn,  # noqa: F811
) -> None:
    gateway.add("079190001234", "Nguyễn Thị Hồng Nhung", "1990-07-15", "F")  # national birth date differs
    visit = make_visit(session, world)
    clerk = world.actor("records_clerk")
    with pytest.raises(ExportCheckFailed) as first:  # checked live before the export: a mismatch
        export_xml130(session, clerk, visit.encounter.id, export_config, facility_key)
    assert [(p.field, p.key) for p in first.value.problems if p.key.startswith("identity.")] == [
        ("SO_CCCD", "identity.problem.mismatch")
    ]
    assert "dữ liệu dân cư" in first.value.problems[0].message
    with pytest.raises(ExportCheckFailed) as again:  # open item: no second call, still refused
        export_hsba(session, clerk, visit.encounter.id, export_config, None, "json")
    assert [p.key for p in again.value.problems] == ["identity.problem.open"]
    assert gateway.asked["079190001234"] == 1

    [item] = reconcile.queue(session, clerk)
    reconcile.decide(session, clerk, item.check.id, "accept_national", "Giấy khai sinh ghi 15/07/1990")
    session.refresh(visit.patient)
    assert visit.patient.birth_date.isoformat() == "1990-07-15"
    exp = export_xml130(session, clerk, visit.encounter.id, export_config, facility_key)
    assert exp.rows["XML1"][0]["NGAY_SINH"].startswith("19900715")
    assert gateway.asked["079190001234"] == 1  # a fresh decision counts as checked


def test_export_goes_on_when_the_gateway_is_down(
    session: Session,  # noqa: F811
    world: World,  # noqa: F811
    export_config: ExportConfig,  # noqa: F811
    facility_key: FacilityKey,  # noqa: F811
    gateway: PopulationStandIn,  # noqa: F811
) -> None:
    visit = make_visit(session, world)
    gateway.down()
    exp = export_xml130(session, world.actor("records_clerk"), visit.encounter.id, export_config, facility_key)
    assert exp.envelope  # not held up by the national service
    check = checks.latest_check(session, visit.patient.id)
    assert check is not None and (check.status, check.last_error) == ("queued", "unreachable")  # tried later
