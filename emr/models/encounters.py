"""Encounters (visits), their ICD-10 diagnoses and the ICD-10 catalogue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

__all__ = ["BENEFIT_LEVELS", "ENCOUNTER_KINDS", "Encounter", "EncounterDiagnosis", "Icd10Code"]

ENCOUNTER_KINDS = ("outpatient", "inpatient", "emergency")
# The benefit levels of a BHYT card (Law on Health Insurance, art. 22): MUC_HUONG in %.
BENEFIT_LEVELS = (100, 95, 80)


class Icd10Code(Base):
    """ICD-10 catalogue, loaded by an admin from a file (Ministry of Health list)."""

    __tablename__ = "icd10_codes"
    code: Mapped[str] = mapped_column(String(10), primary_key=True)
    title: Mapped[str] = mapped_column(String(500))


class Encounter(Base):
    __tablename__ = "encounters"
    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    visit_code: Mapped[str] = mapped_column(String(100), unique=True)  # MA_LK
    record_no: Mapped[str | None] = mapped_column(String(100))  # MA_HSBA
    kind: Mapped[str] = mapped_column(String(12))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))  # → MA_KHOA
    attending_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(12), default="open")  # open | closed | cancelled
    admitted_at: Mapped[datetime] = mapped_column(default=utcnow)  # NGAY_VAO
    inpatient_at: Mapped[datetime | None]  # NGAY_VAO_NOI_TRU
    discharged_at: Mapped[datetime | None]  # NGAY_RA
    reason: Mapped[str | None] = mapped_column(Text)  # LY_DO_VV
    admission_diagnosis: Mapped[str | None] = mapped_column(Text)  # CHAN_DOAN_VAO
    discharge_diagnosis: Mapped[str | None] = mapped_column(Text)  # CHAN_DOAN_RV
    treatment_result: Mapped[str | None] = mapped_column(String(2))  # KET_QUA_DTRI
    discharge_type: Mapped[str | None] = mapped_column(String(2))  # MA_LOAI_RV
    insurance_object: Mapped[str | None] = mapped_column(String(4))  # MA_DOITUONG_KCB
    referral_from: Mapped[str | None] = mapped_column(String(10))  # MA_NOI_DI
    referral_to: Mapped[str | None] = mapped_column(String(10))  # MA_NOI_DEN
    accident_code: Mapped[str | None] = mapped_column(String(2))  # MA_TAI_NAN
    weight_kg: Mapped[str | None] = mapped_column(String(10))  # CAN_NANG (decimal string)
    # MUC_HUONG (%) checked on the card at registration: 100, 95 or 80; another value
    # (an out-of-route visit pays a share of the card's level) only with a note saying why.
    benefit_level: Mapped[int | None]
    benefit_level_note: Mapped[str | None] = mapped_column(String(200))
    # Record type decides the retention class (Circular 33/2025): ordinary,
    # psychiatric, occupational, traffic_accident, death, incident.
    record_type: Mapped[str] = mapped_column(String(20), default="ordinary")
    closed_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    diagnoses: Mapped[list[EncounterDiagnosis]] = relationship(
        order_by="EncounterDiagnosis.position", cascade="save-update, merge"
    )

    __table_args__ = (
        Index("ix_encounters_admitted_at", "admitted_at"),
        # A department's and a physician's open visits (their patient list, the care rule; migration 0018).
        Index("ix_encounters_department_status", "department_id", "status"),
        Index("ix_encounters_attending_status", "attending_id", "status"),
    )


class EncounterDiagnosis(Base):
    """Position 0 is the main diagnosis (MA_BENH_CHINH), the rest MA_BENH_KT."""

    __tablename__ = "encounter_diagnoses"
    id: Mapped[int] = mapped_column(primary_key=True)
    encounter_id: Mapped[int] = mapped_column(ForeignKey("encounters.id"), index=True)
    icd10_code: Mapped[str] = mapped_column(ForeignKey("icd10_codes.code"))
    position: Mapped[int] = mapped_column(default=0)
