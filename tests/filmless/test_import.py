"""``filmless import`` of a folder into a real Orthanc, as an admin runs it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from storage import OrthancProcess
from tests.dicom_factory import ct_instance


def _run_import(proc: OrthancProcess, *paths: Path, retries: int = 5) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update({
        "FILMLESS_ORTHANC_URL": proc.settings.url,
        "FILMLESS_ORTHANC_USER": proc.credentials.username,
        "FILMLESS_ORTHANC_PASSWORD": proc.credentials.password,
    })
    return subprocess.run([sys.executable, "-m", "filmless", "import", "--no-progress", "--retries", str(retries),
                           *map(str, paths)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_import_folder_counts_accepted_and_rejected(orthanc_process: OrthancProcess, tmp_path: Path) -> None:
    study = generate_uid()
    folder = tmp_path / "cd-export" / "nested"
    folder.mkdir(parents=True)
    sops = []
    for i in range(5):
        data = ct_instance(patient_id="IMPORT-1", patient_name="Phạm^Minh Châu", study_uid=study,
                           instance_number=i + 1)
        sops.append(dcmread(io.BytesIO(data)).SOPInstanceUID)
        (folder / f"IM{i:04d}").write_bytes(data)
    (folder / "notes.txt").write_text("không phải DICOM")
    no_uid = dcmread(io.BytesIO(ct_instance()))
    del no_uid.SOPInstanceUID
    buf = io.BytesIO()
    no_uid.save_as(buf)
    (folder / "broken.dcm").write_bytes(buf.getvalue())

    # No study/series UIDs (Orthanc would only say "no such resource"), and a value pydicom warns about.
    no_study = dcmread(io.BytesIO(ct_instance()))
    del no_study.StudyInstanceUID
    del no_study.SeriesInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        no_study.PatientAge = "45 years"  # not a valid AS value: pydicom warns when reading it
        buf = io.BytesIO()
        no_study.save_as(buf)
    (folder / "nostudy.dcm").write_bytes(buf.getvalue())
    dicomdir = dcmread(io.BytesIO(ct_instance()))
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    buf = io.BytesIO()
    dicomdir.save_as(buf)
    (folder / "DICOMDIR").write_bytes(buf.getvalue())

    first = _run_import(orthanc_process, tmp_path / "cd-export")
    assert first.returncode == 1, first.stderr  # some files were rejected
    assert "accepted: 5" in first.stdout and "rejected: 3" in first.stdout and "skipped: 1" in first.stdout
    assert "notes.txt: not a readable DICOM file" in first.stdout
    assert "broken.dcm: missing SOP Instance UID (0008,0018)" in first.stdout
    assert "nostudy.dcm: missing Study Instance UID (0020,000D), Series Instance UID (0020,000E)" in first.stdout
    assert "no such resource" not in first.stdout.lower()
    assert "skipped (not imported on purpose, nothing is wrong with them):" in first.stdout
    assert "DICOMDIR (an index, not an image)" in first.stdout
    assert "Warning" not in first.stderr and "pydicom" not in first.stderr, first.stderr

    store = orthanc_process.store()
    for sop in sops:
        assert store.find_instance(str(sop)) is not None
    assert store.find_studies(study_instance_uid=study)[0].patient_name == "Phạm^Minh Châu"

    again = _run_import(orthanc_process, *sorted(folder.glob("IM*")))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "accepted: 0   already stored: 5   rejected: 0" in again.stdout


def test_import_stops_cleanly_when_orthanc_is_down(fresh_orthanc, tmp_path: Path) -> None:
    proc = fresh_orthanc()
    proc.stop()
    (tmp_path / "a.dcm").write_bytes(ct_instance())
    result = _run_import(proc, tmp_path, retries=1)
    assert result.returncode == 1
    assert "import stopped early: Orthanc is not reachable" in result.stdout


def test_import_of_missing_path_is_a_usage_error(orthanc_process: OrthancProcess, tmp_path: Path) -> None:
    result = _run_import(orthanc_process, tmp_path / "nope")
    assert result.returncode == 2
    assert "not found" in result.stderr
