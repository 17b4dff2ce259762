"""The money of one imaging visit in the QĐ 130/4750 tables: pure arithmetic, no database.

Per service row (XML3), every step rounded half-up to 2 decimals (VND)::

    THANH_TIEN_BV = SO_LUONG × DON_GIA_BV × TYLE_TT_DV/100
    THANH_TIEN_BH = SO_LUONG × DON_GIA_BH × TYLE_TT_DV/100 × TYLE_TT_BH/100
    T_BHTT        = THANH_TIEN_BH × MUC_HUONG/100          (the fund pays)
    T_BNCCT       = THANH_TIEN_BH − T_BHTT                 (co-payment)
    T_BNTT        = THANH_TIEN_BV − THANH_TIEN_BH          (the patient pays outside insurance)

TYLE_TT_DV is 100 for every imaging service the EMR sends, so THANH_TIEN_BV
is simply SO_LUONG × DON_GIA_BV; the factor is kept as the 4750 annex
writes it. A service the insurance does not cover (no DON_GIA_BH) and a
patient without a card have BH amounts 0: the patient pays THANH_TIEN_BV.
XML1's totals are the sums of the rounded rows, so they always add up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ..i18n import t

__all__ = [
    "ZERO",
    "ServiceAmounts",
    "VisitTotals",
    "service_amounts",
    "visit_totals",
    "fmt_money",
    "fmt_vnd",
    "round_money",
]

_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)
ZERO = Decimal("0.00")


def round_money(value: Decimal) -> Decimal:
    """Half-up to 2 decimals (0.005 → 0.01), the way the portal recomputes."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def fmt_money(value: Decimal) -> str:
    """'1234567.50': decimal point, always two decimals, no thousands separator, never '-0.00'."""
    v = round_money(value)
    if v == 0:
        v = ZERO
    return f"{v:.2f}"


def fmt_vnd(value: Decimal | None) -> str:
    """For people: '650.000 đ', '650.000,50 đ' (Vietnamese grouping); '' for None."""
    if value is None:
        return ""
    v = round_money(Decimal(value))
    whole, cents = divmod(abs(v), 1)
    text = f"{int(whole):,}".replace(",", ".")
    if cents:
        text += "," + f"{cents:.2f}"[2:]
    return t("money.vnd", amount=f"{'-' if v < 0 else ''}{text}")


@dataclass(frozen=True)
class ServiceAmounts:
    quantity: Decimal  # SO_LUONG
    price_hospital: Decimal  # DON_GIA_BV
    price_insurance: Decimal  # DON_GIA_BH (0 when the service is not covered)
    total_hospital: Decimal  # THANH_TIEN_BV
    total_insurance: Decimal  # THANH_TIEN_BH
    fund_pays: Decimal  # T_BHTT
    copayment: Decimal  # T_BNCCT
    patient_pays: Decimal  # T_BNTT


def service_amounts(
    *,
    quantity: Decimal | int,
    price_hospital: Decimal,
    price_insurance: Decimal | None,
    benefit_level: int | None,
    insured: bool,
    service_rate: int = 100,
    insurance_rate: int = 100,
) -> ServiceAmounts:
    """One XML3 row's amounts.

    ``price_insurance`` None: the service is not covered by BHYT. ``insured``
    False: the patient has no card, nothing is claimed. An insured patient
    whose benefit level is unknown raises :class:`ValueError` (the
    pre-submission check reports it before this is called).
    """
    qty = Decimal(quantity)
    if qty < 0 or price_hospital < 0 or (price_insurance is not None and price_insurance < 0):
        raise ValueError("quantities and prices cannot be negative")
    covered = insured and price_insurance is not None
    if covered and benefit_level is None:
        raise ValueError("an insured service needs the benefit level (MUC_HUONG)")
    if benefit_level is not None and not 0 <= benefit_level <= 100:
        raise ValueError(f"benefit level {benefit_level} is not a percentage")
    rate_dv = Decimal(service_rate) / _HUNDRED
    total_bv = round_money(qty * price_hospital * rate_dv)
    if covered:
        assert price_insurance is not None and benefit_level is not None
        total_bh = round_money(qty * price_insurance * rate_dv * Decimal(insurance_rate) / _HUNDRED)
        fund = round_money(total_bh * Decimal(benefit_level) / _HUNDRED)
    else:
        total_bh = fund = ZERO
    return ServiceAmounts(
        quantity=qty,
        price_hospital=round_money(price_hospital),
        price_insurance=round_money(price_insurance) if price_insurance is not None else ZERO,
        total_hospital=total_bv,
        total_insurance=total_bh,
        fund_pays=fund,
        copayment=total_bh - fund,
        patient_pays=total_bv - total_bh,
    )


@dataclass(frozen=True)
class VisitTotals:
    total_hospital: Decimal = ZERO  # T_TONGCHI_BV
    total_insurance: Decimal = ZERO  # T_TONGCHI_BH
    patient_pays: Decimal = ZERO  # T_BNTT
    copayment: Decimal = ZERO  # T_BNCCT
    fund_pays: Decimal = ZERO  # T_BHTT (= T_BHTT_GDV: no other source pays)


def visit_totals(rows: Iterable[ServiceAmounts]) -> VisitTotals:
    """XML1's totals: the sums of the (already rounded) service rows. Drugs and supplies are 0 in the EMR."""
    items = list(rows)
    return VisitTotals(
        total_hospital=sum((r.total_hospital for r in items), ZERO),
        total_insurance=sum((r.total_insurance for r in items), ZERO),
        patient_pays=sum((r.patient_pays for r in items), ZERO),
        copayment=sum((r.copayment for r in items), ZERO),
        fund_pays=sum((r.fund_pays for r in items), ZERO),
    )
