"""Several Orthanc servers used as one store: the next one answers while the preferred one is down."""

from __future__ import annotations

from io import BytesIO

import pytest

from storage import FailoverStore, NotFound, OrthancProcess, OrthancStore, StorageUnavailable
from tests.dicom_factory import ct_instance
from tests.helpers import free_port


def _dead(orthanc_process: OrthancProcess) -> OrthancStore:
    """A store for a server that is down (nothing listens on the port), with the same login."""
    creds = orthanc_process.credentials
    return OrthancStore(f"http://127.0.0.1:{free_port()}", creds.username, creds.password, timeout=5)


def test_the_next_server_answers_while_the_first_is_down(orthanc: OrthancStore,
                                                         orthanc_process: OrthancProcess) -> None:
    store = FailoverStore([_dead(orthanc_process), orthanc])
    blob = ct_instance(patient_id="FAILOVER-1", patient_name="Phạm^Văn Dự Phòng")
    stream = BytesIO(blob)
    stream.read(100)  # a file the first server half-read before its connection broke...
    stream.seek(0)
    result = store.upload(stream)  # ...is rewound and sent whole to the next
    assert orthanc.get_study(result.study_id).patient_id == "FAILOVER-1"
    assert store.url == orthanc.url  # the server that answered is tried first from now on
    assert store.get_study(result.study_id).patient_name == "Phạm^Văn Dự Phòng"


def test_an_answer_is_not_retried_elsewhere_and_all_down_is_unavailable(
    orthanc: OrthancStore, orthanc_process: OrthancProcess
) -> None:
    with pytest.raises(NotFound):  # the same answer on every server of one index: raised at once
        FailoverStore([orthanc, _dead(orthanc_process)]).get_study("0" * 8 + "-" + "0" * 8)
    down = FailoverStore([_dead(orthanc_process), _dead(orthanc_process)])
    with pytest.raises(StorageUnavailable):
        down.upload(ct_instance())
    assert not down.ping()
    with pytest.raises(ValueError):
        FailoverStore([])
