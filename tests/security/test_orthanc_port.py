"""Issue 10, item 2: nothing but filmless's own code may reach Orthanc.

The probe listed all patients, pulled a study and injected a series through
Orthanc's DICOM port by calling itself FILMLESS. The managed Orthanc now runs
without a DICOM server; DCMTK tools calling themselves FILMLESS get nothing.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from storage import OrthancProcess, OrthancStore
from tests.dicom_factory import ct_instance


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


@pytest.fixture
def stored_study(orthanc: OrthancStore) -> str:
    study = generate_uid()
    orthanc.upload(ct_instance(patient_id="ORTHANC-PORT-1", patient_name="Nguyễn^Văn A", study_uid=study))
    return study


def test_nothing_listens_on_orthancs_dicom_port(orthanc_process: OrthancProcess) -> None:
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        ("127.0.0.1", orthanc_process.settings.dicom_port), timeout=5
    ):
        pass


def test_dcmtk_tools_calling_themselves_filmless_get_nothing(
    orthanc_process: OrthancProcess, orthanc: OrthancStore, stored_study: str, tmp_path: Path
) -> None:
    port = str(orthanc_process.settings.dicom_port)
    aet = orthanc_process.gateway_aet  # the AE title Orthanc would have trusted
    aec = orthanc_process.settings.dicom_aet
    echo = _run("echoscu", "-aet", aet, "-aec", aec, "127.0.0.1", port)
    assert echo.returncode != 0
    find = _run("findscu", "-S", "-aet", aet, "-aec", aec, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*",
                "-k", "PatientID", "127.0.0.1", port)
    assert find.returncode != 0
    assert "ORTHANC-PORT-1" not in find.stdout + find.stderr
    out = tmp_path / "got"
    out.mkdir()
    get = _run("getscu", "-S", "-aet", aet, "-aec", aec, "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={stored_study}", "127.0.0.1", port)
    assert get.returncode != 0
    assert not list(out.iterdir())
    sop = generate_uid()
    path = tmp_path / "inject.dcm"
    path.write_bytes(ct_instance(patient_id="ORTHANC-PORT-1", study_uid=stored_study, sop_uid=sop))
    store = _run("storescu", "-aet", aet, "-aec", aec, "127.0.0.1", port, str(path))
    assert store.returncode != 0
    assert orthanc.find_instance(sop) is None
