"""Modality Worklist end to end: EMR orders → gateway → DCMTK findscu -W (issue 12 §4).

Requested Procedure ID matches, Scheduled Station AE Title is never empty,
Requested Procedure Priority follows the order's urgency, the step status
and performing physician are filled, and the start time is matched.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.orm import Session

from emr import EmrSettings, worklist_provider
from emr.imaging import orders
from emr.patients import service as patients
from pacs_gateway import Gateway, GatewaySettings
from storage import OrthancStore
from tests.helpers import free_port

from .conftest import World, patient_data


@pytest.fixture
def gateway(orthanc: OrthancStore, settings: EmrSettings, tmp_path: Path) -> Iterator[Gateway]:
    gw_settings = replace(GatewaySettings(), port=free_port(), spool_dir=tmp_path / "spool", min_free_bytes=0,
                          network_timeout=15.0)
    gw = Gateway(gw_settings, orthanc, worklist=worklist_provider(settings))
    gw.start()
    yield gw
    gw.stop()


def _findscu(port: int, out: Path, *keys: str, aet: str = "CT01") -> list[pydicom.Dataset]:
    out.mkdir()
    args = ["findscu", "-W", "-aet", aet, "-aec", "FILMLESS", "-X", "-od", str(out)]
    for key in ("AccessionNumber", "PatientName", "RequestedProcedureID", "RequestedProcedurePriority",
                "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
                "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus",
                "ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName",
                "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime", *keys):
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TCP_NODELAY": "1"})
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*"))]


def test_worklist_keys_from_the_orders(
    session: Session, world: World, settings: EmrSettings, gateway: Gateway, tmp_path: Path
) -> None:
    doctor = world.actor("physician")
    p = patients.create_patient(session, doctor, patient_data(full_name="Phạm Văn Bình"))
    stat = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT", "procedure_name": "CT sọ não",
                                                 "urgency": "stat", "scheduled_at": "2026-11-23T09:30:00"})
    routine = orders.create_order(session, doctor, {"patient_id": p.id, "modality": "CT",
                                                    "procedure_name": "CT ngực", "station_ae_title": "CT01",
                                                    "scheduled_at": "2026-11-23T14:00:00"})
    routine.status = "in_progress"
    routine.performed_by = world.users["technician"].id
    session.commit()
    port = gateway.settings.port

    assert _findscu(port, tmp_path / "nope", "RequestedProcedureID=NOPE-123") == []
    (one,) = _findscu(port, tmp_path / "rp", f"RequestedProcedureID={stat.accession_number}")
    assert one.AccessionNumber == stat.accession_number
    assert one.RequestedProcedurePriority == "STAT"
    step = one.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "CT01"  # a step for any station, answered as the asker's
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledProcedureStepStartTime == "093000"  # Vietnam time

    morning = _findscu(port, tmp_path / "am",
                       "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=0800-1200")
    assert [d.AccessionNumber for d in morning] == [stat.accession_number]
    (afternoon,) = _findscu(port, tmp_path / "pm",
                            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=1300-")
    assert afternoon.AccessionNumber == routine.accession_number
    assert afternoon.RequestedProcedurePriority == "ROUTINE"
    step = afternoon.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStatus == "STARTED"
    assert str(step.ScheduledPerformingPhysicianName) == "Nguyễn^Văn Technician"

    # Another station asking for every station's steps still sees a non-empty station.
    for ds in _findscu(port, tmp_path / "mr", aet="MR01"):
        assert ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle in ("MR01", "CT01")
