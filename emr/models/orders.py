"""Imaging orders and the studies that arrive for them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from emr.core.states import OrderStatus, StudyState

from .base import Base, utcnow
from .prices import Money

__all__ = ["MODALITIES", "OPEN_ORDER_SQL", "URGENCIES", "ORDER_STATUSES", "ImagingOrder", "Study", "LinkerState"]

MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "XA", "NM", "PT", "RF")
URGENCIES = ("routine", "urgent", "stat")
# The states and their moves: emr.core.states.
ORDER_STATUSES = tuple(OrderStatus)

# An order not read yet (neither reported nor cancelled, emr.core.states.READ), as SQL text: the
# condition of the partial index ix_imaging_orders_unread and of the queries meant to use it.
OPEN_ORDER_SQL = "imaging_orders.status NOT IN ('reported', 'cancelled')"


class ImagingOrder(Base):
    __tablename__ = "imaging_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    encounter_id: Mapped[int | None] = mapped_column(ForeignKey("encounters.id"), index=True)
    accession_number: Mapped[str] = mapped_column(String(16), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(4))
    procedure_code: Mapped[str | None] = mapped_column(String(30))  # MA_DICH_VU
    procedure_name: Mapped[str] = mapped_column(String(200))  # TEN_DICH_VU
    body_part: Mapped[str | None] = mapped_column(String(64))
    urgency: Mapped[str] = mapped_column(String(8), default="routine")
    clinical_info: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=OrderStatus.SCHEDULED.value)
    station_ae_title: Mapped[str | None] = mapped_column(String(16))
    device_code: Mapped[str | None] = mapped_column(String(50))  # MA_MAY
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))  # MA_KHOA
    ordered_by: Mapped[int] = mapped_column(ForeignKey("users.id"))  # MA_BAC_SI via certificate
    performed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # NGUOI_THUC_HIEN
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)  # NGAY_YL
    scheduled_at: Mapped[datetime] = mapped_column(default=utcnow)
    performed_at: Mapped[datetime | None]  # NGAY_TH_YL
    result_at: Mapped[datetime | None]  # NGAY_KQ
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # The catalogue price valid when the order was placed (snapshot: a later price
    # change does not alter what this order is billed at). All None: no catalogue entry.
    # price_id names the service_prices row it was copied from; no foreign key, so that
    # adding and removing the column never rebuilds this much-referenced table on SQLite
    # (catalogue rows are never deleted).
    price_id: Mapped[int | None]
    price_hospital: Mapped[Decimal | None] = mapped_column(Money)  # DON_GIA_BV
    price_insurance: Mapped[Decimal | None] = mapped_column(Money)  # DON_GIA_BH; None = not covered by BHYT
    price_unit: Mapped[str | None] = mapped_column(String(50))  # DON_VI_TINH

    __table_args__ = (
        Index("ix_imaging_orders_worklist", "status", "scheduled_at"),
        Index("ix_imaging_orders_ordered_at", "ordered_at"),  # operations page window (migration 0015)
        # The few orders still waiting to be read (migration 0017): the unread queue starts here instead of
        # checking every study of the year against its report. Same text as OPEN_ORDER_SQL, so that the
        # planners (PostgreSQL, SQLite) see that a query with that condition may use it.
        Index("ix_imaging_orders_unread", "id", postgresql_where=text(OPEN_ORDER_SQL),
              sqlite_where=text(OPEN_ORDER_SQL)),
    )


class Study(Base):
    """A study seen in Orthanc: linked to an order, or waiting in the reconciliation queue."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    orthanc_id: Mapped[str] = mapped_column(String(64), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16))
    dicom_patient_id: Mapped[str | None] = mapped_column(String(64))
    dicom_patient_name: Mapped[str | None] = mapped_column(String(200))
    study_date: Mapped[str | None] = mapped_column(String(8))
    modalities: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_orders.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default=StudyState.UNMATCHED.value)  # StudyState
    link_method: Mapped[str | None] = mapped_column(String(20))  # accession | study_uid | manual
    linked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    linked_at: Mapped[datetime | None]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_studies_state", "state"),
        Index("ix_studies_first_seen_at", "first_seen_at"),  # operations page window (migration 0015)
        # The unread queue's studies of the orders not reported yet, read from the index alone (migration 0017).
        Index("ix_studies_order_state_seen", "order_id", "state", "first_seen_at"),
    )


class LinkerState(Base):
    """Where the study linker stopped in Orthanc's changes feed (one row)."""

    __tablename__ = "linker_state"
    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
