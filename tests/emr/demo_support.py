"""What every seeded demo must hold, whatever store it was seeded with (a walk-through found each broken)."""

from __future__ import annotations

from datetime import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access.audit import Actor
from emr.core.clock import to_local
from emr.core.states import StudyState
from emr.demo.records import STAY_DAYS, STAY_TIMELINE
from emr.models import Document, Encounter, ImagingOrder, Study, User
from emr.reading import service as reading


def assert_demo_is_coherent(s: Session) -> dict[int, list[Study]]:
    """Every reported exam has its images (a linked study), the stay's papers follow its days in facility time and
    are signed in order, and the radiologist has a study waiting for them. Returns the linked studies by order."""
    studies: dict[int, list[Study]] = {}
    for study in s.scalars(select(Study).where(Study.state == StudyState.LINKED)):
        studies.setdefault(study.order_id or 0, []).append(study)
    reports = s.scalars(select(Document).where(Document.form_type == "radiology_report")).all()
    assert reports
    for order in s.scalars(select(ImagingOrder)):
        reported = [d for d in reports if d.order_id == order.id]
        if order.status == "reported" or reported:
            # a report is read from images: never "reported" with "Chưa có ảnh" on the technician's list
            assert studies.get(order.id), (order.modality, order.procedure_name, order.status)
            assert order.performed_at is not None
            for study in studies[order.id]:
                assert study.study_date == to_local(order.performed_at).strftime("%Y%m%d"), order.procedure_name
                assert order.ordered_at <= order.performed_at <= study.first_seen_at
            for doc in reported:
                assert doc.created_at >= order.performed_at, order.procedure_name  # read after imaging
        if order.status in ("scheduled", "in_progress"):
            assert not studies.get(order.id), order.procedure_name

    # The inpatient stay: admitted STAY_DAYS days ago at 08:30, facility time; each paper written on its day.
    stay = s.scalars(select(Encounter).where(Encounter.kind == "inpatient")).one()
    assert stay.status == "closed" and stay.discharged_at is not None
    admitted, discharged = to_local(stay.admitted_at), to_local(stay.discharged_at)
    assert admitted.time() == STAY_TIMELINE["admitted"][1] == time(8, 30)
    assert (discharged.date() - admitted.date()).days == STAY_DAYS
    papers = {
        (d.form_type, i): d
        for form in ("admission_note", "radiology_report", "progress_note", "diagnosis", "discharge_summary")
        for i, d in enumerate(
            s.scalars(
                select(Document)
                .where(Document.encounter_id == stay.id, Document.form_type == form)
                .order_by(Document.created_at)
            )
        )
    }
    assert list(papers) == [
        ("admission_note", 0),
        ("radiology_report", 0),
        ("progress_note", 0),
        ("progress_note", 1),
        ("diagnosis", 0),
        ("discharge_summary", 0),
    ]
    day = {key: (to_local(d.created_at).date() - admitted.date()).days for key, d in papers.items()}
    assert day[("admission_note", 0)] == 0 and day[("radiology_report", 0)] == 0  # on admission day
    assert 0 < day[("progress_note", 0)] < day[("progress_note", 1)] < STAY_DAYS  # during the stay
    assert day[("discharge_summary", 0)] == STAY_DAYS
    written = [d.created_at for d in papers.values()]
    assert written == sorted(written) and stay.admitted_at < written[0]
    assert papers[("discharge_summary", 0)].created_at >= stay.discharged_at  # written after the discharge
    signed = [at for d in papers.values() if (at := d.versions[-1].signed_at) is not None]
    assert len(signed) == len(papers) and signed == sorted(signed)  # signed in the order they were written
    assert all(at >= d.created_at for at, d in zip(signed, papers.values(), strict=True))
    assert signed[-1] >= stay.discharged_at  # the discharge paper: signed once the stay is closed

    # The radiologist (bschan) has images waiting for a report, in their care.
    bschan = s.scalars(select(User).where(User.username == "bschan")).one()
    unread = reading.reading_list(
        s, Actor(bschan.id, bschan.username, bschan.role, None), reading.WorklistFilter(status="unread")
    )
    assert unread and all(r.status == "unread" and studies.get(r.order.id) for r in unread)
    return studies
