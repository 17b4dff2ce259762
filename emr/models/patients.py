"""Patients, with the fields that XML1 (TONG_HOP) and HoSoBenhAn exports need."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, utcnow

__all__ = ["Patient", "PatientNameKey", "Counter"]


class Counter(Base):
    """Named counters for human-facing numbers (patient code, accession number, MA_LK)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)  # MA_BN; DICOM PatientID
    full_name: Mapped[str] = mapped_column(String(200))  # HO_TEN
    family_name: Mapped[str] = mapped_column(String(100))
    given_name: Mapped[str] = mapped_column(String(150))
    # fold(full_name) and fold(given_name): diacritic-free, lower-case, prefix-indexed.
    search_name: Mapped[str] = mapped_column(String(200))
    search_given: Mapped[str] = mapped_column(String(150))
    birth_date: Mapped[date]  # NGAY_SINH
    birth_year_only: Mapped[bool] = mapped_column(default=False)
    sex: Mapped[str] = mapped_column(String(1))  # 'M', 'F', 'O' → GIOI_TINH 1/2/3
    cccd: Mapped[str | None] = mapped_column(String(12), unique=True)  # SO_CCCD
    bhyt_number: Mapped[str | None] = mapped_column(String(15))  # MA_THE_BHYT
    bhyt_ssn: Mapped[str | None] = mapped_column(String(10), unique=True)
    bhyt_valid_from: Mapped[date | None]  # GT_THE_TU
    bhyt_valid_to: Mapped[date | None]  # GT_THE_DEN
    bhyt_registered_facility: Mapped[str | None] = mapped_column(String(10))  # MA_DKBD
    bhyt_five_years_since: Mapped[date | None]  # NAM_NAM_LIEN_TUC
    nationality_code: Mapped[str] = mapped_column(String(3), default="000")  # MA_QUOCTICH
    ethnicity_code: Mapped[str] = mapped_column(String(2), default="01")  # MA_DANTOC (01 = Kinh)
    occupation_code: Mapped[str | None] = mapped_column(String(5))  # MA_NGHE_NGHIEP
    blood_type: Mapped[str | None] = mapped_column(String(10))  # NHOM_MAU
    address: Mapped[str | None] = mapped_column(String(500))  # DIA_CHI
    province_code: Mapped[str | None] = mapped_column(String(3))  # MATINH_CU_TRU
    district_code: Mapped[str | None] = mapped_column(String(3))  # MAHUYEN_CU_TRU
    ward_code: Mapped[str | None] = mapped_column(String(5))  # MAXA_CU_TRU
    phone: Mapped[str | None] = mapped_column(String(15))  # DIEN_THOAI
    # HoSoBenhAn / XML7-XML8 (migration 0009)
    religion_code: Mapped[str | None] = mapped_column(String(3))  # VN Core patient-religion
    health_id: Mapped[str | None] = mapped_column(String(10))  # mã định danh y tế (XML7 MA_YTE)
    father_name: Mapped[str | None] = mapped_column(String(255))  # HO_TEN_CHA
    mother_name: Mapped[str | None] = mapped_column(String(255))  # HO_TEN_ME
    guardian_name: Mapped[str | None] = mapped_column(String(255))  # NGUOI_GIAM_HO
    status: Mapped[str] = mapped_column(String(10), default="active")  # active | merged
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    name_keys: Mapped[list[PatientNameKey]] = relationship(cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_patients_search_name", "search_name"),  # COLLATE "C" on PostgreSQL (migration)
        Index("ix_patients_search_given", "search_given"),
        Index("ix_patients_bhyt_number", "bhyt_number"),
    )


class PatientNameKey(Base):
    """The folded name from its third word on, one row per word: 'hong nhung', 'nhung' for Nguyễn Thị Hồng Nhung.

    Vietnamese patients are called by the last word of their name; with
    ``search_name`` (from the family name) and ``search_given`` (from the
    second word) every word of a name starts an index range, so "Nhung" or
    "Hồng Nhung" finds the patient the way "Nguyễn Thị" does.
    """

    __tablename__ = "patient_name_keys"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # COLLATE "C" on PostgreSQL (migration)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)

    __table_args__ = (Index("ix_patient_name_keys_patient_id", "patient_id"),)

