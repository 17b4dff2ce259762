"""Who may associate: AE/IP allow-list and TLS with client certificates."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacs_gateway import Gateway
from storage import OrthancStore

from .conftest import dcmtk, echo


def test_allow_list_by_ae_title_and_address(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    gw = make_gateway(orthanc, allowed_peers=("CT01@127.0.0.1", "MR01@10.0.0.0/8", "US01"))
    port = gw.settings.port
    assert echo(port, "CT01")
    assert echo(port, "US01")
    assert not echo(port, "MR01")  # right title, wrong network
    assert not echo(port, "STRANGER")
    messages = [r.getMessage() for r in caplog.records]
    assert any("'MR01' is not allowed from address 127.0.0.1" in m for m in messages)
    assert any("'STRANGER' is not in the allowed peers" in m for m in messages)
    # The rejection is an A-ASSOCIATE-RJ, calling AE title not recognised.
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS")
    assert assoc.is_rejected
    assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (0x01, 0x03)


def test_silent_clients_do_not_block_others(orthanc: OrthancStore, make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(orthanc)
    silent = [socket.create_connection(("127.0.0.1", gw.settings.port)) for _ in range(3)]
    try:
        assert echo(gw.settings.port)
    finally:
        for s in silent:
            s.close()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
          ca: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = _key()
    ca = _cert("filmless test CA", ca_key, None, ca=True)
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key, client_key, rogue_key = _key(), _key(), _key()
    issuer = ("filmless test CA", ca_key)
    server_crt, server_key_path = _write(tmp_path / "server", _cert("localhost", server_key, issuer), server_key)
    client_crt, client_key_path = _write(tmp_path / "client", _cert("CT01", client_key, issuer), client_key)
    rogue_crt, rogue_key_path = _write(tmp_path / "rogue", _cert("rogue", rogue_key, None), rogue_key)
    return {"ca": ca_path, "server_crt": server_crt, "server_key": server_key_path, "client_crt": client_crt,
            "client_key": client_key_path, "rogue_crt": rogue_crt, "rogue_key": rogue_key_path}


def _tls_echo(port: int, ca: Path, cert: Path | None, key: Path | None) -> bool:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS", tls_args=(ctx, "localhost"))
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


def test_tls_requires_a_client_certificate_from_the_ca(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], pki: dict[str, Path]
) -> None:
    gw = make_gateway(orthanc, tls_cert=pki["server_crt"], tls_key=pki["server_key"], tls_ca=pki["ca"])
    port = gw.settings.port
    assert _tls_echo(port, pki["ca"], pki["client_crt"], pki["client_key"])
    assert not _tls_echo(port, pki["ca"], None, None)
    assert not _tls_echo(port, pki["ca"], pki["rogue_crt"], pki["rogue_key"])
    assert not echo(port)  # plain TCP is not served on a TLS port
    # DCMTK as a modality with its certificate.
    ok = dcmtk("echoscu", "-aec", "FILMLESS", "+tls", str(pki["client_key"]), str(pki["client_crt"]),
               "+cf", str(pki["ca"]), "127.0.0.1", str(port), timeout=30)
    assert ok.returncode == 0, ok.stderr
    # ...and still reachable while a client is connected that never speaks TLS.
    with socket.create_connection(("127.0.0.1", port)):
        assert _tls_echo(port, pki["ca"], pki["client_crt"], pki["client_key"])


def test_tls_without_client_verification(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], pki: dict[str, Path]
) -> None:
    gw = make_gateway(orthanc, tls_cert=pki["server_crt"], tls_key=pki["server_key"])
    assert _tls_echo(gw.settings.port, pki["ca"], None, None)


def test_tls_c_store_of_a_multi_pdu_instance_arrives_whole(
    orthanc: OrthancStore, make_gateway: Callable[..., Gateway], pki: dict[str, Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """C-STORE over TLS goes through the socket thread's fast path (fast_store.py) like plain TCP:
    DCMTK storescu sends a 2.6 MB instance in 16 KiB PDUs, and Orthanc keeps the very pixels sent."""
    import io

    import pydicom
    from pydicom.uid import generate_uid

    from tests.dicom_factory import ct_instance
    from tests.helpers import wait_for

    caplog.set_level(logging.INFO, logger="pacs_gateway")
    gw = make_gateway(orthanc, tls_cert=pki["server_crt"], tls_key=pki["server_key"], tls_ca=pki["ca"])
    uid = generate_uid()
    sent = tmp_path / "big.dcm"
    sent.write_bytes(ct_instance(size=1140, patient_id="TLS1", sop_uid=uid))
    done = dcmtk("storescu", "-aet", "CT01", "-aec", "FILMLESS", "--max-send-pdu", "16384",
                 "+tls", str(pki["client_key"]), str(pki["client_crt"]), "+cf", str(pki["ca"]),
                 "127.0.0.1", str(gw.settings.port), str(sent), timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    wait_for(lambda: orthanc.find_instance(uid) is not None, timeout=30, what="the instance in Orthanc")
    stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc.find_instance(uid) or "")))
    assert stored.PixelData == pydicom.dcmread(sent).PixelData
    wait_for(lambda: any('"fast_path": 1' in r.getMessage() for r in caplog.records), timeout=10,
             what="the association's log line counting one fast-path C-STORE")
