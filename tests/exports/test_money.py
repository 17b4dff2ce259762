"""The claim arithmetic (emr.exports.money): pure functions, every figure worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emr.exports.money import ServiceAmounts, fmt_money, fmt_vnd, round_money, service_amounts, visit_totals

D = Decimal


def amounts(**kw: object) -> ServiceAmounts:
    base: dict[str, object] = {
        "quantity": 1,
        "price_hospital": D("650000"),
        "price_insurance": D("536000"),
        "benefit_level": 80,
        "insured": True,
    }
    base.update(kw)
    return service_amounts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "fund", "copay"),
    [
        # T_BHTT = 536 000 × level/100; T_BNCCT = 536 000 − T_BHTT
        (80, "428800.00", "107200.00"),
        (95, "509200.00", "26800.00"),
        (100, "536000.00", "0.00"),
    ],
)
def test_insured_patient_at_each_benefit_level(level: int, fund: str, copay: str) -> None:
    a = amounts(benefit_level=level)
    assert fmt_money(a.total_hospital) == "650000.00"  # 1 × 650 000
    assert fmt_money(a.total_insurance) == "536000.00"  # 1 × 536 000 × 100 % × 100 %
    assert fmt_money(a.fund_pays) == fund
    assert fmt_money(a.copayment) == copay
    assert fmt_money(a.patient_pays) == "114000.00"  # 650 000 − 536 000, whatever the level
    # every đồng of the hospital price is paid by someone
    assert a.fund_pays + a.copayment + a.patient_pays == a.total_hospital


def test_uninsured_patient_pays_the_hospital_price() -> None:
    a = amounts(insured=False, benefit_level=None, quantity=2)
    assert (a.total_hospital, a.total_insurance, a.fund_pays, a.copayment) == (D("1300000.00"), 0, 0, 0)
    assert a.patient_pays == D("1300000.00")  # 2 × 650 000
    assert fmt_money(a.fund_pays) == "0.00"


def test_service_not_covered_by_bhyt() -> None:
    a = amounts(price_insurance=None, price_hospital=D("350000"), benefit_level=95)
    assert (a.price_insurance, a.total_insurance, a.fund_pays, a.copayment) == (0, 0, 0, 0)
    assert a.patient_pays == a.total_hospital == D("350000.00")
    # the benefit level is not needed for a service the insurance does not pay
    assert amounts(price_insurance=None, benefit_level=None).patient_pays == D("650000.00")


def test_payment_rates_and_half_up_rounding() -> None:
    # THANH_TIEN_BH = 3 × 43 900.35 × 100/100 × 50/100 = 65 850.525 → 65 850.53 (half-up, not banker's)
    a = amounts(quantity=3, price_hospital=D("150000"), price_insurance=D("43900.35"), insurance_rate=50)
    assert a.total_insurance == D("65850.53")
    # T_BHTT = 65 850.53 × 80 % = 52 680.424 → 52 680.42; T_BNCCT is the exact rest
    assert a.fund_pays == D("52680.42") and a.copayment == D("13170.11")
    assert a.patient_pays == D("450000.00") - D("65850.53")
    # TYLE_TT_DV scales both totals: 1 × 650 000 × 50 % and 1 × 536 000 × 50 % × 100 %
    half = amounts(service_rate=50)
    assert (half.total_hospital, half.total_insurance, half.fund_pays) == (
        D("325000.00"),
        D("268000.00"),
        D("214400.00"),
    )
    assert round_money(D("0.005")) == D("0.01") and round_money(D("2.675")) == D("2.68")


def test_unknown_level_and_bad_input_are_refused() -> None:
    with pytest.raises(ValueError, match="benefit level"):
        amounts(benefit_level=None)
    with pytest.raises(ValueError):
        amounts(price_hospital=D("-1"))
    with pytest.raises(ValueError):
        amounts(benefit_level=120)


def test_visit_totals_are_sums_of_rounded_rows() -> None:
    rows = [
        amounts(),
        amounts(price_hospital=D("80000"), price_insurance=D("65400")),
        amounts(price_hospital=D("350000"), price_insurance=None),
    ]
    totals = visit_totals(rows)
    assert totals.total_hospital == D("1080000.00")  # 650 000 + 80 000 + 350 000
    assert totals.total_insurance == D("601400.00")  # 536 000 + 65 400 + 0
    assert totals.fund_pays == D("481120.00")  # 428 800 + 52 320 + 0
    assert totals.copayment == D("120280.00")  # 107 200 + 13 080 + 0
    assert totals.patient_pays == D("478600.00")  # 114 000 + 14 600 + 350 000
    assert totals.fund_pays + totals.copayment + totals.patient_pays == totals.total_hospital
    assert visit_totals([]).total_hospital == 0


def test_formats() -> None:
    assert fmt_money(D("1234567.5")) == "1234567.50"  # decimal point, no thousands separator
    assert fmt_money(D("-0.001")) == "0.00"
    assert fmt_money(D("536000")) == "536000.00"
    assert fmt_vnd(D("650000")) == "650.000 đ"
    assert fmt_vnd(D("1234567.5")) == "1.234.567,50 đ"
    assert fmt_vnd(None) == ""
