"""Issue 12, §5: a disk that fills up in the middle of an instance answers 0xA700.

The spool lives on a real 12 MB tmpfs; a 20 MB instance cannot fit. The
modality (pynetdicom) must get Out of Resources for it, keep its association,
and store a small instance on that same association afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated module

from pacs_gateway import Gateway
from storage import OrthancStore
from tests.dicom_factory import ct_instance
from tests.helpers import wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_instance_answers_out_of_resources_and_keeps_the_association(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], small_disk: Path
) -> None:
    gw = make_gateway(orthanc, spool_dir=small_disk / "spool", min_free_bytes=0)
    big = pydicom.dcmread(BytesIO(ct_instance(size=3200, patient_id="DISKFULL")))  # 20 MB of pixels
    small_uid = generate_uid()
    small = pydicom.dcmread(BytesIO(ct_instance(patient_id="DISKFULL", sop_uid=small_uid)))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    assert assoc.is_established
    try:
        refused = assoc.send_c_store(big)
        assert refused.Status == 0xA700, refused
        assert "disk full" in str(refused.get("ErrorComment", ""))
        assert assoc.is_established, "the association was dropped"
        stored = assoc.send_c_store(small)
        assert stored.Status == 0x0000
    finally:
        assoc.release()
    wait_for(lambda: orthanc.find_instance(small_uid) is not None, timeout=60, what="the small instance in Orthanc")
    assert gw.stats.refused == 1
    # Nothing of the refused instance is left on the small disk.
    assert not [p for p in (small_disk / "spool").rglob("*") if p.is_file() and p.stat().st_size > 1024 * 1024]
