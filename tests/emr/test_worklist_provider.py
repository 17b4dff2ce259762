"""The worklist rule has one home (the EMR); the gateway answers what the EMR matched.

Reproduces issue 11: an order with no station was offered "to every station"
by the EMR and dropped again by the gateway's own re-check, so a CT01 query
never saw it. Here the real ``emr.worklist_provider`` answers the real
``pacs_gateway.worklist.build_responses``.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from emr import EmrSettings, worklist_provider
from emr.imaging import orders
from emr.patients import service as patients
from pacs_gateway.worklist import build_responses

from .conftest import World, patient_data


def _query(station: str, modality: str = "CT") -> Dataset:
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = ""
    ident = Dataset()
    ident.PatientName = ""
    ident.AccessionNumber = ""
    ident.ScheduledProcedureStepSequence = [step]
    return ident


def test_station_less_order_is_answered_to_every_station(session: Session, world: World, settings: EmrSettings) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data())
    base = {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ não"}
    anywhere = orders.create_order(session, doctor, base)
    ct01 = orders.create_order(session, doctor, {**base, "station_ae_title": "CT01"})
    ct02 = orders.create_order(session, doctor, {**base, "station_ae_title": "CT02"})
    session.commit()
    provider = worklist_provider(settings)

    def answered(station: str, modality: str = "CT") -> set[str]:
        return {str(ds.AccessionNumber) for ds in build_responses(_query(station, modality), provider, station)}

    assert answered("CT01") == {anywhere.accession_number, ct01.accession_number}
    assert answered("CT02") == {anywhere.accession_number, ct02.accession_number}
    assert answered("CT09") == {anywhere.accession_number}
    assert answered("MR01", "MR") == set()
    responses = list(build_responses(_query("CT01"), provider, "CT01"))
    stationless = next(ds for ds in responses if ds.AccessionNumber == anywhere.accession_number)
    assert stationless.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == ""
