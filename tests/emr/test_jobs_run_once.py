"""Background jobs run once across EMR processes (issue 16): two real processes, one database.

Both processes start the linker and the audit anchor scheduler at the same
instant with work waiting (studies to link, a day without an anchor). Without
:func:`emr.db.singleton_lock` both read the same Orthanc changes and both see
the day un-anchored: studies are linked and audited twice, the TSA is asked
twice. The effect is checked in the database, not in timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emr.core.settings import EmrSettings
from emr.db import make_engine, singleton_lock
from emr.demo.seed import make_ct_series
from emr.imaging import orders
from emr.models import AuditAnchor, AuditEntry, ImagingOrder
from emr.patients import service as patients
from storage import OrthancProcess, OrthancStore

from .conftest import World, patient_data

ROOT = Path(__file__).parents[2]


def test_the_lock_is_held_by_one_holder_at_a_time(settings: EmrSettings) -> None:
    first, second = make_engine(settings.database_url), make_engine(settings.database_url)
    try:
        with singleton_lock(first, "emr.test") as held:
            assert held
            with singleton_lock(second, "emr.test") as other:
                assert not other  # another engine (as another process would) is refused, not blocked
            with singleton_lock(second, "emr.other-job") as unrelated:
                assert unrelated  # one lock per job name
        with singleton_lock(second, "emr.test") as after:
            assert after  # released at the end of the block
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.slow
def test_two_emr_processes_link_and_anchor_once(
    session: Session, world: World, settings: EmrSettings, fresh_orthanc: Callable[..., OrthancProcess],
    pki, pki_server, tmp_path: Path,
) -> None:
    # An Orthanc of its own: accession numbers restart with every test database, so studies other
    # tests left in the session-wide Orthanc would match these orders too.
    orthanc_process = fresh_orthanc()
    orthanc: OrthancStore = orthanc_process.store()
    doctor = world.actor("physician")
    patient = patients.create_patient(session, doctor, patient_data())
    made = []
    for n in range(4):
        order = orders.create_order(session, doctor, {"patient_id": patient.id, "modality": "CT",
                                                      "procedure_name": f"CT ngực {n}"})
        made.append(order.id)
        for blob in make_ct_series(patient_id="RUN-ONCE", patient_name="NGUYEN^THI HONG NHUNG",
                                   birth_date="19900517", sex="F", accession_number=order.accession_number,
                                   study_instance_uid=generate_uid(), slices=2):
            orthanc.upload(blob)
    session.commit()

    config = tmp_path / "jobs.json"
    config.write_text(json.dumps({
        "data_dir": str(settings.data_dir), "database_url": settings.database_url,
        "tsa_url": pki_server.tsa_url, "orthanc_url": orthanc_process.settings.url,
        "orthanc_user": orthanc_process.credentials.username,
        "orthanc_password": orthanc_process.credentials.password,
    }))
    start_at = time.time() + 3.0  # both interpreters are up and importing by then
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.emr.run_jobs", str(config), str(start_at), "3"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    session.expire_all()
    assert all(r["linker_passes"] > 0 for r in reports)  # both processes ran the job, in turns
    for order_id in made:
        assert session.get(ImagingOrder, order_id).status == "images_available"
    links = session.execute(
        select(AuditEntry.object_id, func.count()).where(AuditEntry.action == "study.link")
        .group_by(AuditEntry.object_id)
    ).all()
    assert len(links) == len(made) and all(count == 1 for _, count in links), links
    assert sum(r["tsa_requests"] for r in reports) == 1, reports  # the TSA was asked once for the day
    assert session.scalar(select(func.count()).select_from(AuditAnchor)) == 1
