"""Scale-out proven (issue 16): two gateways, two Orthanc servers on one PostgreSQL index, two EMR processes.

Four modalities send at once, two to each gateway. Mid-send one gateway and
one Orthanc server are killed (SIGKILL). What a hospital expects then, and
what is checked:

* a modality whose association broke sends the study again to its second
  destination (the other gateway), as modalities are configured to; a study
  whose association completed is never resent (it was acknowledged, so the
  gateway's spool owns it);
* the surviving gateway, whose own Orthanc was killed, forwards to the
  other Orthanc server on the same index (``FILMLESS_ORTHANC_URL`` lists
  both): the images are available while one server is down;
* the killed gateway, restarted (systemd does it), forwards what it had
  acknowledged before it died; the killed Orthanc, restarted, serves
  everything stored while it was down (one index, one storage folder).

Afterwards every instance is in the index exactly once; both Orthanc servers
serve every study over DICOMweb, and so does the viewer's DICOMweb proxy in
each EMR process (each on its own Orthanc, one login valid on both, as behind
a load balancer); both gateways answer query/retrieve for every study; and
the two EMR processes linked each study to its order once (one
``study.link`` audit row per study, not one per process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from emr.access.audit import Actor
from emr.access.users import create_user
from emr.db import make_engine, make_session_factory
from emr.imaging import orders
from emr.patients import encounters
from emr.patients import service as patients
from tests.dicom_factory import ct_instance
from tests.helpers import http_login, wait_for
from tests.pacs_gateway.conftest import dcmtk
from tests.pg import pg_available, query, throwaway_database
from tests.scale_cluster import Cluster, send_study

pytestmark = [
    pytest.mark.slow,
    pytest.mark.pg,
    pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not running on 127.0.0.1:5432"),
]

MODALITIES = ("CT01", "CT02", "MR01", "CR01")
STUDIES_PER_MODALITY = 6
INSTANCES_PER_STUDY = 6
SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
PASSWORD = "scale out, one record"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("scale")
    with throwaway_database("filmless_scale_orthanc") as orthanc_db, throwaway_database("filmless_scale_emr") as emr_db:
        nodes = Cluster(root, orthanc_db, emr_db)
        try:
            nodes.add_orthanc()
            nodes.add_orthanc()  # after the first: it finds the index schema made
            nodes.migrate_emr()
            emrs = threading.Thread(target=lambda: [nodes.add_emr(prefer=i) for i in (0, 1)])
            emrs.start()  # the EMR processes start while the gateways do
            nodes.add_gateway(prefer=0)
            nodes.add_gateway(prefer=1)
            emrs.join()
            assert len(nodes.emrs) == 2 and all(e.running for e in nodes.emrs)
            yield nodes
        finally:
            nodes.close()


def _orders(cluster: Cluster) -> list[str]:
    """A radiologist, a patient and one ordered CT per study to come; the accession numbers."""
    engine = make_engine(cluster.emr_url or "")
    try:
        with make_session_factory(engine)() as session:
            create_user(session, SETUP, "cdha.scale", PASSWORD, "radiologist", "Lê Thị Chẩn Đoán",
                        practising_cert_no="001/HCM-CCHN")
            ward = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
            doctor = create_user(session, SETUP, "bs.scale", PASSWORD, "physician", "Trần Văn Chỉ Định",
                                 practising_cert_no="002/HCM-CCHN", department_id=ward.id)
            session.commit()
            actor = Actor(doctor.id, doctor.username, doctor.role, "127.0.0.1")
            patient = patients.create_patient(session, actor, {
                "full_name": "Nguyễn Thị Mở Rộng", "birth_date": "1980-02-03", "sex": "F", "cccd": "079180004321",
                "address": "1 Hùng Vương, TP. Huế", "province_code": "46", "phone": "0905123456",
            })
            accessions = [
                orders.create_order(session, actor, {"patient_id": patient.id, "modality": "CT",
                                                     "procedure_name": f"CT {n}"}).accession_number
                for n in range(len(MODALITIES) * STUDIES_PER_MODALITY)
            ]
            session.commit()
            return accessions
    finally:
        engine.dispose()


def _studies(root: Path, accessions: list[str]) -> dict[str, list[list[Path]]]:
    """Each modality's studies as files (the modality's send queue)."""
    queues: dict[str, list[list[Path]]] = {}
    for modality in MODALITIES:
        queues[modality] = []
        for s in range(STUDIES_PER_MODALITY):
            accession = accessions.pop()
            study_uid, series_uid = generate_uid(), generate_uid()
            folder = root / modality / str(s)
            folder.mkdir(parents=True)
            files = []
            for n in range(INSTANCES_PER_STUDY):
                path = folder / f"{n}.dcm"
                path.write_bytes(ct_instance(patient_id=f"SC-{modality}-{s}", patient_name="Trần^Văn Mở Rộng",
                                             accession=accession, study_uid=study_uid,
                                             series_uid=series_uid, instance_number=n + 1, size=32))
                files.append(path)
            queues[modality].append(files)
    return queues


def _uids(files: list[Path]) -> tuple[str, set[str]]:
    sops = set()
    study = ""
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = str(ds.StudyInstanceUID)
        sops.add(str(ds.SOPInstanceUID))
    return study, sops


def test_four_modalities_two_of_each_node_kill_one_of_each_mid_send(cluster: Cluster, tmp_path: Path) -> None:
    queues = _studies(tmp_path, _orders(cluster))
    expected_sops: set[str] = set()
    study_uids = []
    for studies in queues.values():
        for files in studies:
            uid, sops = _uids(files)
            study_uids.append(uid)
            expected_sops |= sops
    gw_ports = [g.port for g in cluster.gateways]
    store0 = cluster.store(0)
    index_db = cluster.orthanc_dsn.rsplit("/", 1)[1]
    sent: dict[str, int] = {m: 0 for m in MODALITIES}  # studies acknowledged, per modality
    failures: dict[str, int] = {m: 0 for m in MODALITIES}
    errors: list[str] = []
    last_error: dict[str, str] = {}

    def modality(name: str, primary: int) -> None:
        """Send each study; when the association fails, send it again to the other gateway."""
        for files in queues[name]:
            for attempt in range(6):
                port = gw_ports[primary if attempt % 2 == 0 else 1 - primary]
                if attempt and port == gw_ports[0] and not cluster.gateways[0].running:
                    continue  # that destination is still down: try the other next
                result = send_study(files, port, name)
                if result.returncode == 0:
                    sent[name] += 1
                    break
                failures[name] += 1
                last_error[name] = f"port {port} rc {result.returncode}: {result.stderr[-500:]}"
            else:
                errors.append(f"{name}: a study could not be sent to any gateway")

    senders = [threading.Thread(target=modality, args=(m, i % 2)) for i, m in enumerate(MODALITIES)]
    for t in senders:
        t.start()
    # Mid-send: a third of the studies acknowledged and images arriving in the index.
    try:
        wait_for(lambda: sum(sent.values()) >= len(study_uids) // 3 and store0.count_instances() > 0, timeout=120,
                 what="a third of the studies")
    except AssertionError as exc:  # seen once in a full run (not reproduced): say where it stood
        tails = "\n".join(f"--- {n.name}\n{n.tail(3000)}" for n in [*cluster.gateways, *cluster.orthancs])
        raise AssertionError(f"{exc}; sent {sent}, failures {failures}, errors {errors}, last {last_error}, "
                             f"instances in the index {store0.count_instances()}\n{tails}") from None
    still_sending = [m for m, t in zip(MODALITIES, senders, strict=True) if t.is_alive()]
    cluster.gateways[0].kill()
    cluster.kill_orthanc(cluster.orthancs[1])  # gateway 1's preferred Orthanc
    for t in senders:
        t.join(300)
    assert not errors, errors
    assert {"CT01", "MR01"} & set(still_sending)  # gateway 0 was killed while receiving...
    assert failures["CT01"] + failures["MR01"] >= 1  # ...and its modalities saw the broken association

    # Images are available while Orthanc 1 is down: gateway 1 forwarded everything to Orthanc 0.
    spools = [Path(g.env["FILMLESS_DATA_DIR"]) / "spool" / "ready" for g in cluster.gateways]
    wait_for(lambda: not any(spools[1].glob("*.dcm")), timeout=120,
             what="gateway 1 to forward to the surviving Orthanc")
    assert not cluster.orthancs[1].running and "now using" in cluster.gateways[1].tail(100_000)

    # systemd restarts what died: the gateway's spool forwards what it had acknowledged.
    cluster.start_gateway(cluster.gateways[0])
    cluster.start_orthanc(cluster.orthancs[1])
    wait_for(lambda: store0.count_instances() == len(expected_sops), timeout=120, what="every instance stored")
    wait_for(lambda: not any(any(s.glob("*.dcm")) for s in spools), timeout=60, what="both spools to drain")

    # Every instance in the index exactly once (resource type 3 = instance in Orthanc's schema).
    assert int(query(index_db, "select count(*) from resources where resourcetype = 3")) == len(expected_sops)
    sop_rows = query(index_db, "select value from dicomidentifiers where taggroup = 8 and tagelement = 24")
    assert sorted(sop_rows.split()) == sorted(expected_sops)

    # Both Orthanc servers serve every study over DICOMweb (the viewer's source).
    for index in range(2):
        store = cluster.store(index)
        for uid in study_uids:
            response = store.open_stream(f"/dicom-web/studies/{uid}/metadata",
                                         headers={"Accept": "application/dicom+json"})
            try:
                assert response.status_code == 200, (index, uid, response.status_code)
                assert len(response.json()) == INSTANCES_PER_STUDY
            finally:
                response.close()

    # Query/retrieve through each gateway: every study found, a study retrieved whole.
    for gw_index, port in enumerate(gw_ports):
        out = tmp_path / f"find{gw_index}"
        out.mkdir()
        found = dcmtk("findscu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-X", "-od", str(out),
                      "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                      "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(port))
        assert found.returncode == 0, found.stderr
        answers = [pydicom.dcmread(p) for p in out.iterdir()]
        assert sorted(str(a.StudyInstanceUID) for a in answers) == sorted(study_uids)
        assert {int(a.NumberOfStudyRelatedInstances) for a in answers} == {INSTANCES_PER_STUDY}
        got = tmp_path / f"get{gw_index}"
        got.mkdir()
        retrieved = dcmtk("getscu", "-S", "-aet", "WS01", "-aec", "FILMLESS", "-od", str(got),
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uids[gw_index]}",
                          "127.0.0.1", str(port))
        assert retrieved.returncode == 0, retrieved.stderr
        assert len(list(got.iterdir())) == INSTANCES_PER_STUDY

    # Two EMR processes, one linker at a time: each study linked to its order once.
    emr_db = cluster.emr_url.rsplit("/", 1)[1]  # type: ignore[union-attr]

    def linked_rows() -> list[str]:
        return query(emr_db, "select object_id from audit_log where action = 'study.link'").split()

    wait_for(lambda: set(linked_rows()) >= set(study_uids), timeout=60, what="the EMR to link every study")
    assert sorted(linked_rows()) == sorted(study_uids), "a study was linked twice (two linkers ran at once)"
    assert int(query(emr_db, "select count(*) from studies")) == len(study_uids)
    assert int(query(emr_db, "select count(*) from studies where state <> 'linked'")) == 0

    # The viewer's DICOMweb through each EMR process (each prefers its own Orthanc), one login for both.
    http = http_login(f"http://127.0.0.1:{cluster.emrs[0].port}", "cdha.scale", PASSWORD)
    for emr in cluster.emrs:
        for uid in study_uids:
            answer = http.get(f"http://127.0.0.1:{emr.port}/dicomweb/studies/{uid}/metadata",
                              headers={"Accept": "application/dicom+json"}, timeout=30)
            assert answer.status_code == 200, (emr.name, uid, answer.status_code, answer.text[:200])
            assert len(answer.json()) == INSTANCES_PER_STUDY
    assert all(node.running for node in cluster.emrs)
