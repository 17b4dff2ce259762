"""``pacs_gateway.send_instances`` (issue 15): C-STORE to another facility's gateway, plain or TLS.

Real gateways receiving (the session Orthanc behind them); the certificates of test_access.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from pacs_gateway import Gateway, SendFailed, send_instances
from storage import OrthancStore
from tests.dicom_factory import ct_instance
from tests.helpers import wait_for
from tests.pacs_gateway.test_access import pki  # noqa: F401 - fixture


def _study(n: int) -> tuple[str, list[Callable[[], bytes]]]:
    study, series = generate_uid(), generate_uid()
    blobs = [ct_instance(patient_id="SEND-1", accession="", study_uid=study, series_uid=series, instance_number=i + 1)
             for i in range(n)]
    return study, [lambda b=b: b for b in blobs]


def test_send_twice_stores_once_and_unknown_callers_are_refused(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway]
) -> None:
    gw = make_gateway(orthanc, allowed_peers=("SITEA@127.0.0.1",))
    study, loaders = _study(3)
    for _ in range(2):  # a retried delivery: the same instances again
        result = send_instances(loaders, calling_aet="SITEA", called_aet="FILMLESS", host="127.0.0.1",
                                port=gw.settings.port)
        assert (result.sent, result.refused) == (3, [])

    def held() -> int:
        return sum(len(series["Instances"]) for found in orthanc.find_studies(study_instance_uid=study)
                   for series in orthanc.study_series(found.orthanc_id))

    wait_for(lambda: held() == 3, timeout=30, what="the 3 instances in Orthanc")
    assert held() == 3
    with pytest.raises(SendFailed, match="rejected"):
        send_instances(loaders, calling_aet="NOBODY", called_aet="FILMLESS", host="127.0.0.1", port=gw.settings.port)
    with pytest.raises(SendFailed, match="cannot connect"):
        send_instances(loaders, calling_aet="SITEA", called_aet="FILMLESS", host="127.0.0.1", port=1)


def test_tls_to_a_gateway_that_requires_our_certificate(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], pki: dict[str, Path]  # noqa: F811
) -> None:
    gw = make_gateway(orthanc, tls_cert=pki["server_crt"], tls_key=pki["server_key"], tls_ca=pki["ca"])
    ca = pki["ca"].read_text()
    _, loaders = _study(1)
    ok = send_instances(loaders, calling_aet="SITEA", called_aet="FILMLESS", host="localhost",
                        port=gw.settings.port, certificate_pem=ca, client_cert=pki["client_crt"],
                        client_key=pki["client_key"])
    assert ok.sent == 1
    with pytest.raises(SendFailed):  # no certificate of ours: the gateway refuses the handshake
        send_instances(loaders, calling_aet="SITEA", called_aet="FILMLESS", host="localhost",
                       port=gw.settings.port, certificate_pem=ca)
    with pytest.raises(SendFailed):  # a peer whose certificate does not chain to the one registered
        send_instances(loaders, calling_aet="SITEA", called_aet="FILMLESS", host="localhost",
                       port=gw.settings.port, certificate_pem=pki["rogue_crt"].read_text(),
                       client_cert=pki["client_crt"], client_key=pki["client_key"])
