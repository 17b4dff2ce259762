"""The EMR side of MPPS: ``emr.mpps_provider`` moves an order along and audits it."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr import EmrSettings, mpps_provider, verify_audit_chain
from emr.imaging import orders
from emr.imaging.worklist import query_worklist
from emr.models import AuditEntry, ImagingOrder
from emr.patients import service as patients

from .conftest import World, patient_data


def _event(order: ImagingOrder, status: str, **over: object) -> dict[str, object]:
    event: dict[str, object] = {
        "sop_instance_uid": "1.2.826.0.1.3680043.8.498.77",
        "status": status,
        "accession_numbers": [order.accession_number],
        "study_instance_uids": [order.study_instance_uid],
        "modality": "CT",
        "station_ae": "CT01",
        "start": "2026-11-23T09:30:00",
        "end": "",
        "performing_physician": "",
    }
    event.update(over)
    return event


def test_mpps_moves_order_scheduled_in_progress_completed_with_audit(
    session: Session, world: World, settings: EmrSettings
) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ não"})
    session.commit()
    assert order.status == "scheduled"
    provider = mpps_provider(settings)

    def mpps(event: dict[str, object]) -> None:
        session.rollback()  # end our read transaction: the provider writes from its own session
        provider(event)
        session.expire_all()  # and read what it wrote

    mpps(_event(order, "IN PROGRESS"))
    session.rollback()
    assert session.get(ImagingOrder, order.id).status == "in_progress"
    assert [i["AccessionNumber"] for i in query_worklist(session, {})] == [order.accession_number]

    # Matched by Study Instance UID when the modality did not send the accession number.
    mpps(_event(order, "COMPLETED", accession_numbers=[], end="2026-11-23T09:45:00",
                performing_physician="Trần^Văn Đức"))
    session.rollback()
    done = session.get(ImagingOrder, order.id)
    assert done.status == "completed"
    assert done.performed_at is not None and done.performed_at.hour == 2  # 09:30 in Vietnam is 02:30 UTC
    assert query_worklist(session, {}) == []  # off the modality's worklist

    rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "order.mpps").order_by(AuditEntry.id)).all()
    assert [(r.username, r.role, r.object_id, r.patient_id) for r in rows] == [
        ("CT01", "modality", str(order.id), p.id), ("CT01", "modality", str(order.id), p.id)
    ]
    details = [json.loads(r.details) for r in rows]
    assert [(d["from"], d["to"], d["mpps_status"]) for d in details] == [
        ("scheduled", "in_progress", "IN PROGRESS"), ("in_progress", "completed", "COMPLETED")
    ]
    assert details[1]["performing_physician"] == "Trần^Văn Đức"
    assert verify_audit_chain(session).ok

    # A late "IN PROGRESS" (a retried delivery) never moves a completed order back.
    mpps(_event(order, "IN PROGRESS"))
    session.rollback()
    assert session.get(ImagingOrder, order.id).status == "completed"
    # An event for no known order is ignored (retrying could not help), without an audit row.
    before = len(session.scalars(select(AuditEntry)).all())
    mpps(_event(order, "DISCONTINUED", accession_numbers=["NOPE"], study_instance_uids=["1.2.3"]))
    session.rollback()
    assert len(session.scalars(select(AuditEntry)).all()) == before


def test_order_states_and_moves_live_in_one_table() -> None:
    """emr.core.states: stored strings unchanged; MPPS and linking moves as the workflow expects."""
    from emr.core.states import ON_WORKLIST, OrderStatus, StudyState, after_images_linked, after_mpps

    assert [s.value for s in OrderStatus] == ["scheduled", "in_progress", "completed", "discontinued",
                                              "images_available", "reported", "cancelled"]
    assert OrderStatus.SCHEDULED == "scheduled" and StudyState.LINKED == "linked"
    assert after_mpps("scheduled", "IN PROGRESS") == "in_progress"
    assert after_mpps("discontinued", "IN PROGRESS") == "in_progress"  # restarted
    assert after_mpps("images_available", "COMPLETED") == "images_available"  # images are stronger evidence
    assert after_mpps("scheduled", "BOGUS") == "scheduled"
    assert after_images_linked("cancelled") == "images_available"
    assert after_images_linked("reported") == "reported"
    assert set(ON_WORKLIST) == {"scheduled", "in_progress"}
