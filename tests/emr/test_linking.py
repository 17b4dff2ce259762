"""Studies arriving in a real Orthanc are linked to their orders, or queued for reconciliation."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr import link_new_studies
from emr.core.exceptions import ValidationFailed
from emr.demo.seed import make_ct_series
from emr.imaging import linking, orders
from emr.models import AuditEntry, ImagingOrder, Study
from emr.patients import service as patients
from storage import OrthancStore

from .conftest import World, patient_data


def _skip_existing(session: Session, store: OrthancStore) -> None:
    """The session-wide Orthanc already holds other tests' studies: start this test's feed at its end."""
    from emr.models import LinkerState

    last = store.changes(since=0, limit=1).last
    while True:
        page = store.changes(since=last, limit=1000)
        last = page.last
        if page.done or not page.changes:
            break
    session.merge(LinkerState(id=1, last_seq=last))
    session.commit()


def test_study_with_accession_is_linked_and_unknown_study_is_queued(
    session: Session, world: World, orthanc: OrthancStore
) -> None:
    _skip_existing(session, orthanc)
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    order = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT ngực"})
    for blob in make_ct_series(
        patient_id="MODALITY-123",
        patient_name="NGUYEN^THI HONG NHUNG",
        birth_date="19900517",
        sex="F",
        accession_number=order.accession_number,
        study_instance_uid=generate_uid(),
        slices=3,
    ):
        orthanc.upload(blob)
    stray_uid = generate_uid()
    for blob in make_ct_series(
        patient_id="X1",
        patient_name="Le^Van Lac",
        birth_date="19700101",
        sex="M",
        accession_number="NOPE123",
        study_instance_uid=stray_uid,
        slices=2,
    ):
        orthanc.upload(blob)

    result = link_new_studies(session, orthanc)
    assert result.error is None and result.linked == 1 and result.unmatched >= 1
    session.expire_all()
    assert session.get(ImagingOrder, order.id).status == "images_available"
    linked = session.scalars(select(Study).where(Study.order_id == order.id)).one()
    assert linked.patient_id == p.id and linked.link_method == "accession"
    assert orthanc.get_study_metadata(linked.orthanc_id, "FilmlessOrderId") == str(order.id)
    queued = linking.list_unmatched(session)
    assert [s.study_instance_uid for s in queued] == [stray_uid]

    again = link_new_studies(session, orthanc)  # idempotent: nothing new
    assert again.linked == 0 and session.scalar(select(Study).where(Study.order_id == order.id)) is not None

    clerk = world.actor("records_clerk")
    other = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "MR", "procedure_name": "MRI bụng"})
    # A CT study on an MR order: refused until the clerk confirms the mismatch.
    with pytest.raises(ValidationFailed) as refused:
        linking.link_study_manually(session, clerk, queued[0].id, other.id, "máy chụp nhập sai số phiếu", store=orthanc)
    assert refused.value.fields == {"acknowledge_mismatch": "reconcile.error.mismatch_unconfirmed"}
    session.rollback()
    old_orthanc_id = queued[0].orthanc_id
    linking.link_study_manually(
        session, clerk, queued[0].id, other.id, "máy chụp nhập sai số phiếu", store=orthanc, acknowledge_mismatch=True
    )
    assert linking.list_unmatched(session) == []
    # The PACS copy now carries the EMR identity and the order's accession number, same Study UID.
    session.expire_all()
    relinked = session.get(Study, queued[0].id)
    assert relinked is not None and relinked.orthanc_id != old_orthanc_id
    stored = orthanc.get_study(relinked.orthanc_id)
    assert (stored.patient_id, stored.accession_number, stored.study_instance_uid) == (
        p.code,
        other.accession_number,
        stray_uid,
    )
    assert "Nhung" in stored.patient_name
    from storage import NotFound

    with pytest.raises(NotFound):
        orthanc.get_study(old_orthanc_id)  # the modality's copy was replaced, not kept beside it
    assert link_new_studies(session, orthanc).linked == 0  # the corrected copy is the same study, not a new one
    assert session.scalar(select(func.count()).select_from(Study).where(Study.study_instance_uid == stray_uid)) == 1
    kinds = set(session.scalars(select(AuditEntry.action).where(AuditEntry.username == "records_clerk1")))
    assert {"study.link", "study.link_mismatch", "study.identity"} <= kinds
    row = session.scalars(
        select(AuditEntry).where(AuditEntry.action == "study.link", AuditEntry.username == "records_clerk1")
    ).one()
    assert '"manual"' in row.details


def test_linker_tolerates_orthanc_down(session: Session, world: World) -> None:
    class Down:
        def changes(self, since: int, limit: int) -> Any:
            from storage import StorageUnavailable

            raise StorageUnavailable("Orthanc is not reachable", "http://127.0.0.1:1/changes")

    result = link_new_studies(session, Down())
    assert result.error and result.linked == 0 and result.last_seq == 0
