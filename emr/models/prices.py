"""The service price catalogue (danh mục dịch vụ kỹ thuật, giá dịch vụ).

One row per price of a service from a date: a price change adds a row and
never replaces one, so the price a past order was billed at can always be
explained. The price valid on a date is the newest row with
``valid_from <= date``. Money is VND as ``Numeric(15, 2)`` (QĐ 130 money
fields are at most 15 characters with two decimals).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

__all__ = ["ServicePrice", "Money"]

Money = Numeric(15, 2, asdecimal=True)


class ServicePrice(Base):
    __tablename__ = "service_prices"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), index=True)  # MA_DICH_VU
    name: Mapped[str] = mapped_column(String(500))  # TEN_DICH_VU in the catalogue
    unit: Mapped[str] = mapped_column(String(50))  # DON_VI_TINH, e.g. "Lần"
    price_hospital: Mapped[Decimal] = mapped_column(Money)  # DON_GIA_BV
    price_insurance: Mapped[Decimal | None] = mapped_column(Money)  # DON_GIA_BH; None = not covered by BHYT
    valid_from: Mapped[date]
    source: Mapped[str | None] = mapped_column(String(255))  # the file the row was loaded from
    loaded_by: Mapped[str | None] = mapped_column(String(64))  # username (the CLI has no user id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("code", "valid_from", name="uq_service_prices_code_valid_from"),)
