"""Money in the QĐ 130 tables: the price snapshot and the benefit level feed XML3 and XML1,
and the pre-submission check names a missing price or benefit level (figures checked by hand)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from emr.exports.config import ExportConfig
from emr.exports.exceptions import ExportCheckFailed
from emr.exports.facility_key import FacilityKey
from emr.exports.service import check_visit, export_xml130
from emr.i18n import t
from emr.imaging import orders as ords
from emr.patients import encounters as encs

from .conftest import make_visit

MONEY3 = ("DON_GIA_BV", "DON_GIA_BH", "THANH_TIEN_BV", "THANH_TIEN_BH", "MUC_HUONG", "T_BNTT", "T_BNCCT", "T_BHTT")
MONEY1 = ("T_TONGCHI_BV", "T_TONGCHI_BH", "T_BNTT", "T_BNCCT", "T_BHTT", "T_BHTT_GDV")


def pick(row: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {n: row[n] for n in names}


def test_service_without_price_is_reported_once_and_gets_no_file(
    session: Session, world: Any, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    v = make_visit(session, world)
    # as if the order had been placed before its code was in the price list
    v.order.price_id = v.order.price_hospital = v.order.price_insurance = v.order.price_unit = None
    session.commit()
    with pytest.raises(ExportCheckFailed) as info:
        export_xml130(session, world.actor("records_clerk"), v.encounter.id, export_config, facility_key)
    problems = info.value.problems
    assert [(p.table, p.row, p.field, p.key) for p in problems] == [
        ("XML3", 1, "DON_GIA_BV", "exports.check.no_price")
    ]  # the empty money fields are not listed one by one
    assert problems[0].message == t(
        "exports.check.no_price", table="XML3", row=1, service="CT ngực không tiêm thuốc cản quang", code="18.0043.0002"
    )
    assert "chưa có giá" in problems[0].message
    rows, _ = check_visit(session, v.encounter.id, export_config)
    assert set(pick(rows["XML3"][0], MONEY3).values()) == {"", "80"}
    assert set(pick(rows["XML1"][0], MONEY1).values()) == {""}


def test_new_card_needs_the_benefit_level_entered(
    session: Session, world: Any, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    v = make_visit(session, world, bhyt_number="7912345678")  # 10 digits: the card does not say the level
    clerk = world.actor("records_clerk")
    with pytest.raises(ExportCheckFailed) as info:
        export_xml130(session, clerk, v.encounter.id, export_config, facility_key)
    assert [(p.table, p.field, p.key) for p in info.value.problems] == [
        ("XML1", "MUC_HUONG", "exports.check.benefit_unknown")
    ]
    assert "mức hưởng" in info.value.problems[0].message.lower()
    rows, _ = check_visit(session, v.encounter.id, export_config)
    # what does not depend on the level is known; the fund's share is not
    assert pick(rows["XML3"][0], MONEY3) == {
        "DON_GIA_BV": "650000.00",
        "DON_GIA_BH": "536000.00",
        "THANH_TIEN_BV": "650000.00",
        "THANH_TIEN_BH": "536000.00",
        "MUC_HUONG": "",
        "T_BNTT": "114000.00",
        "T_BNCCT": "",
        "T_BHTT": "",
    }
    # entered after checking the card on the portal: 95 %
    encs.set_benefit_level(session, clerk, v.encounter.id, {"benefit_level": 95})
    exp = export_xml130(session, clerk, v.encounter.id, export_config, facility_key)
    # T_BHTT = 536 000 × 95 % = 509 200; T_BNCCT = 536 000 − 509 200 = 26 800; T_BNTT = 650 000 − 536 000
    assert pick(exp.rows["XML3"][0], ("MUC_HUONG", "T_BNTT", "T_BNCCT", "T_BHTT")) == {
        "MUC_HUONG": "95",
        "T_BNTT": "114000.00",
        "T_BNCCT": "26800.00",
        "T_BHTT": "509200.00",
    }
    assert pick(exp.rows["XML1"][0], MONEY1) == {
        "T_TONGCHI_BV": "650000.00",
        "T_TONGCHI_BH": "536000.00",
        "T_BNTT": "114000.00",
        "T_BNCCT": "26800.00",
        "T_BHTT": "509200.00",
        "T_BHTT_GDV": "509200.00",
    }
    assert b"<T_BHTT>509200.00</T_BHTT>" in exp.tables["XML1"]


def test_entered_level_wins_over_the_legacy_card_digit(
    session: Session, world: Any, export_config: ExportConfig, facility_key: FacilityKey
) -> None:
    v = make_visit(session, world, benefit_level=100)  # card DN4…: 80 %, but checked on the portal: 100 %
    exp = export_xml130(session, world.actor("records_clerk"), v.encounter.id, export_config, facility_key)
    assert pick(exp.rows["XML3"][0], ("MUC_HUONG", "T_BNCCT", "T_BHTT")) == {
        "MUC_HUONG": "100",
        "T_BNCCT": "0.00",
        "T_BHTT": "536000.00",
    }


def test_patient_without_card_pays_the_hospital_price(
    session: Session, world: Any, export_config: ExportConfig
) -> None:
    v = make_visit(session, world, bhyt_number=None, bhyt_valid_from=None, bhyt_valid_to=None)
    rows, problems = check_visit(session, v.encounter.id, export_config)
    assert pick(rows["XML3"][0], MONEY3) == {
        "DON_GIA_BV": "650000.00",
        "DON_GIA_BH": "536000.00",
        "THANH_TIEN_BV": "650000.00",
        "THANH_TIEN_BH": "0.00",
        "MUC_HUONG": "0",
        "T_BNTT": "650000.00",
        "T_BNCCT": "0.00",
        "T_BHTT": "0.00",
    }
    assert rows["XML1"][0]["T_TONGCHI_BH"] == "0.00" and rows["XML1"][0]["T_BNTT"] == "650000.00"
    assert not {p.key for p in problems} & {"exports.check.no_price", "exports.check.benefit_unknown"}


def test_service_not_covered_by_bhyt_and_visit_totals(
    session: Session, world: Any, export_config: ExportConfig
) -> None:
    v = make_visit(session, world, close=False)
    ords.create_order(
        session,
        world.actor("physician"),
        {
            "patient_id": v.patient.id,
            "encounter_id": v.encounter.id,
            "modality": "US",
            "procedure_name": "Siêu âm 4D thai",
            "procedure_code": "18.0001.0004",
        },
    )
    rows, problems = check_visit(session, v.encounter.id, export_config)
    second = rows["XML3"][1]
    assert second["PHAM_VI"] == "2" and rows["XML3"][0]["PHAM_VI"] == "1"
    assert pick(second, MONEY3) == {
        "DON_GIA_BV": "350000.00",
        "DON_GIA_BH": "0.00",
        "THANH_TIEN_BV": "350000.00",
        "THANH_TIEN_BH": "0.00",
        "MUC_HUONG": "80",
        "T_BNTT": "350000.00",
        "T_BNCCT": "0.00",
        "T_BHTT": "0.00",
    }
    # CT 650 000 (BHYT 536 000 at 80 %) + 4D ultrasound 350 000 (not covered)
    assert pick(rows["XML1"][0], MONEY1) == {
        "T_TONGCHI_BV": "1000000.00",
        "T_TONGCHI_BH": "536000.00",
        "T_BNTT": "464000.00",  # 114 000 + 350 000
        "T_BNCCT": "107200.00",
        "T_BHTT": "428800.00",
        "T_BHTT_GDV": "428800.00",
    }
    assert rows["XML1"][0]["T_THUOC"] == rows["XML1"][0]["T_VTYT"] == "0.00"
    assert not {p.key for p in problems} & {"exports.check.no_price", "exports.check.benefit_unknown"}
