"""Whose study is it here? A study or request from another facility names the patient by CCCD,
name, birth date and sex; this site's patient is found by CCCD first (the national identifier,
unique in ``patients.cccd``), then by the folded full name and birth date when exactly one
patient has them. Two candidates or none: no match (a person decides; never a guess).
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.normalize import fold
from emr.models import Patient

__all__ = ["match_patient"]


def match_patient(
    session: Session, cccd: str | None, full_name: str | None, birth_date: date | None
) -> tuple[Patient | None, str | None]:
    """(patient, "cccd" | "name_birth") or (None, None)."""
    if cccd:
        found = session.scalar(select(Patient).where(Patient.cccd == cccd.strip(), Patient.status == "active"))
        if found is not None:
            return found, "cccd"
    if full_name and birth_date is not None:
        rows = list(
            session.scalars(
                select(Patient)
                .where(
                    Patient.search_name == fold(full_name),
                    Patient.birth_date == birth_date,
                    Patient.status == "active",
                )
                .limit(2)
            )
        )
        if len(rows) == 1 and not (cccd and rows[0].cccd and rows[0].cccd != cccd.strip()):
            return rows[0], "name_birth"
    return None, None
