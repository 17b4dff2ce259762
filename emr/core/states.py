"""The life of an imaging order and of a received study: the states and every allowed move, in one place.

States are ``str`` enums: they are stored as the same strings as before (no
migration) and compare equal to them. Services ask the functions here
whether a move is allowed instead of listing states themselves.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AWAITING_IMAGES",
    "CANCELLABLE",
    "EXAM_PROGRESS",
    "ON_WORKLIST",
    "OrderStatus",
    "StudyState",
    "READ",
    "after_images_linked",
    "after_mpps",
    "after_report_signed",
    "after_report_withdrawn",
    "exam_progress",
]


class OrderStatus(StrEnum):
    """An imaging order, from the doctor's request to the signed report (IHE SWF order/procedure status)."""

    SCHEDULED = "scheduled"  # ordered, on the modality worklist
    IN_PROGRESS = "in_progress"  # the modality started the exam (MPPS IN PROGRESS)
    COMPLETED = "completed"  # the modality ended the exam (MPPS); no images linked yet
    DISCONTINUED = "discontinued"  # the modality stopped the exam (MPPS); images may still come
    IMAGES_AVAILABLE = "images_available"  # a study is linked
    REPORTED = "reported"
    CANCELLED = "cancelled"


class StudyState(StrEnum):
    """A study received by the PACS: linked to an order (and so to a patient) or waiting for reconciliation."""

    UNMATCHED = "unmatched"
    LINKED = "linked"


# Offered to modalities on the worklist.
ON_WORKLIST = frozenset({OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS})
# Still expecting images: candidates when a study is reconciled by date ("completed": images may still come).
AWAITING_IMAGES = frozenset(
    {OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS, OrderStatus.COMPLETED, OrderStatus.DISCONTINUED}
)
# No longer waiting for a radiologist: the unread queue (operations page, /metrics) and the reading
# worklist leave these orders out (a partial index, migration 0017, holds the others).
READ = frozenset({OrderStatus.REPORTED, OrderStatus.CANCELLED})
# A clerk may cancel an order only before the modality has finished with it.
CANCELLABLE = frozenset({OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS})

# MPPS status → (order statuses it may move from, the status it moves to).
# Orders already further on (images linked, reported, cancelled) keep their
# status: images and reports are stronger evidence than the modality's word.
_MPPS_MOVES: dict[str, tuple[frozenset[OrderStatus], OrderStatus]] = {
    "IN PROGRESS": (frozenset({OrderStatus.SCHEDULED, OrderStatus.DISCONTINUED}), OrderStatus.IN_PROGRESS),
    "COMPLETED": (
        frozenset({OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS, OrderStatus.DISCONTINUED}),
        OrderStatus.COMPLETED,
    ),
    "DISCONTINUED": (frozenset({OrderStatus.SCHEDULED, OrderStatus.IN_PROGRESS}), OrderStatus.DISCONTINUED),
}
MPPS_STATUSES = frozenset(_MPPS_MOVES)


def after_mpps(current: str, mpps_status: str) -> str:
    """The order's status after a performed procedure step reporting ``mpps_status`` (unknown: unchanged)."""
    move = _MPPS_MOVES.get(mpps_status)
    if move is None:
        return current
    sources, target = move
    return target if current in sources else current


def after_images_linked(current: str) -> str:
    """Images linked to an order: it has images now, even if it was cancelled (the images are real)."""
    if current in AWAITING_IMAGES or current == OrderStatus.CANCELLED:
        return OrderStatus.IMAGES_AVAILABLE
    return current


def after_report_signed(current: str) -> str:
    """A radiology report of the order is signed: the order is reported, wherever it was (a report may
    be signed before the modality's MPPS or the images reached the EMR); a cancelled order stays cancelled."""
    if current == OrderStatus.CANCELLED:
        return current
    return OrderStatus.REPORTED


def after_report_withdrawn(current: str, has_images: bool) -> str:
    """The order's last signed radiology report was cancelled: it waits for a reader again (back on the
    unread queue) if it was reported; otherwise unchanged."""
    if current != OrderStatus.REPORTED:
        return current
    return OrderStatus.IMAGES_AVAILABLE if has_images else OrderStatus.COMPLETED


# Where the exam itself stands for the technician's list of the day (not the report): the
# modality has not started it, is running it, stopped it part-way, or finished it (MPPS COMPLETED,
# images linked or already reported, whichever the EMR heard of first).
_EXAM_PROGRESS: dict[str, str] = {
    OrderStatus.SCHEDULED: "waiting",
    OrderStatus.IN_PROGRESS: "in_progress",
    OrderStatus.DISCONTINUED: "stopped",
    OrderStatus.COMPLETED: "done",
    OrderStatus.IMAGES_AVAILABLE: "done",
    OrderStatus.REPORTED: "done",
    OrderStatus.CANCELLED: "cancelled",
}
EXAM_PROGRESS = ("waiting", "in_progress", "stopped", "done", "cancelled")


def exam_progress(status: str) -> str:
    """``waiting``, ``in_progress``, ``stopped``, ``done`` or ``cancelled`` for an order status."""
    return _EXAM_PROGRESS.get(status, "waiting")
