"""Which order a study, an image or a performed step belongs to: accession number first, then Study UID.

The accession number is what the order gave the modality (through the
worklist) and is the reliable key; the Study Instance UID is the fallback
for modalities that drop the accession number (IHE SWF). One home for the
rule: identity coercion, MPPS and the study linker all ask here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.models import ImagingOrder

__all__ = ["find_order", "find_orders"]


def find_orders(
    session: Session, accession_numbers: Iterable[str], study_instance_uids: Iterable[str]
) -> tuple[list[ImagingOrder], str | None]:
    """The orders named by any of the accession numbers, else by any of the study UIDs, and how they were found.

    The method is ``"accession"`` or ``"study_uid"`` (None when nothing matched). Order of the
    result follows the given keys; an order named twice is listed once.
    """
    for method, column, keys in (
        ("accession", ImagingOrder.accession_number, accession_numbers),
        ("study_uid", ImagingOrder.study_instance_uid, study_instance_uids),
    ):
        found: dict[int, ImagingOrder] = {}
        for key in keys:
            if not key:
                continue
            order = session.scalar(select(ImagingOrder).where(column == str(key)))
            if order is not None:
                found.setdefault(order.id, order)
        if found:
            return list(found.values()), method
    return [], None


def find_order(
    session: Session, accession_number: str | None, study_instance_uid: str | None
) -> tuple[ImagingOrder | None, str | None]:
    """The one order of a study (see :func:`find_orders`)."""
    found, method = find_orders(session, [accession_number or ""], [study_instance_uid or ""])
    return (found[0], method) if found else (None, None)
