"""A local RFC 3161 time-stamping authority and CRL server for the development PKI.

Production points the signer at a licensed TSA's URL. Demos, tests and the
benchmark need one that runs here: this serves ``POST /tsa`` (RFC 3161 over
HTTP, ``application/timestamp-query`` → ``application/timestamp-reply``)
with pyHanko's self-contained responder signing with the development TSA
certificate, and ``GET /crl`` with the development CA's current CRL (read from
disk on every request, so a revocation shows at once). It listens on
localhost only, on a free port unless told otherwise.

The port is bound when the object is built, before the PKI exists, so the CRL
URL can be written into the certificates that :func:`init_dev_pki` issues.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from asn1crypto import cms, core, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute
from pyhanko.sign.timestamps import DummyTimeStamper
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

__all__ = ["DevPkiServer"]

log = logging.getLogger(__name__)
_MAX_REQUEST = 64 * 1024


class _Stamper(DummyTimeStamper):
    """pyHanko's self-contained responder, with the TSA key parsed once.

    The parent re-parses the DER key (and cryptography re-checks the RSA key,
    ≈45 ms) on every request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = serialization.load_der_private_key(self.tsa_key.dump(), password=None)
        assert isinstance(key, RSAPrivateKey)
        self._key = key

    def _sign_tst_info(
        self, tst_info_data: bytes, md_algorithm: str, dt: datetime
    ) -> tuple[bytes, cms.CMSAttributes]:
        md = hashes.Hash(get_pyca_cryptography_hash(md_algorithm))
        md.update(tst_info_data)
        signed_attrs = cms.CMSAttributes(
            [
                simple_cms_attribute("content_type", "tst_info"),
                simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                simple_cms_attribute("signing_certificate", as_signing_certificate(self.tsa_cert)),
                simple_cms_attribute("message_digest", md.finalize()),
            ]
        )
        signature = self._key.sign(
            signed_attrs.dump(), PKCS1v15(), get_pyca_cryptography_hash(md_algorithm.upper())
        )
        return signature, signed_attrs


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("dev PKI server: " + format, *args)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/crl":
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        crl = self.server.directory / "ca.crl"
        if not crl.is_file():
            self._reply(HTTPStatus.NOT_FOUND, b"no CRL yet\n", "text/plain")
            return
        self._reply(HTTPStatus.OK, crl.read_bytes(), "application/pkix-crl")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/tsa":
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_REQUEST:
            self._reply(HTTPStatus.BAD_REQUEST, b"bad length\n", "text/plain")
            return
        body = self.rfile.read(length)
        try:
            request = tsp.TimeStampReq.load(body)
            _ = request.native  # parse fully now, not halfway through the answer
            response = self.server.stamper().request_tsa_response(request)
        except Exception as exc:  # a hostile request must not kill the server
            log.info("dev TSA: refused request: %s", exc)
            refusal = tsp.TimeStampResp(
                {"status": tsp.PKIStatusInfo({"status": "rejection", "fail_info": {"bad_request"}})}
            )
            self._reply(HTTPStatus.OK, refusal.dump(), "application/timestamp-reply")
            return
        self._reply(HTTPStatus.OK, response.dump(), "application/timestamp-reply")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path) -> None:
        super().__init__(address, _Handler)
        self.directory = directory
        self._stamper: _Stamper | None = None
        self._lock = threading.Lock()

    def stamper(self) -> _Stamper:
        with self._lock:
            if self._stamper is None:
                cert = asn1_x509.Certificate.load(
                    _pem_to_der((self.directory / "tsa.pem").read_bytes())
                )
                ca = asn1_x509.Certificate.load(_pem_to_der((self.directory / "ca.pem").read_bytes()))
                key = serialization.load_pem_private_key(
                    (self.directory / "tsa.key").read_bytes(), password=None
                )
                key_info = asn1_keys.PrivateKeyInfo.load(
                    key.private_bytes(
                        serialization.Encoding.DER,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
                self._stamper = _Stamper(cert, key_info, certs_to_embed=[ca])  # type: ignore[arg-type]
            return self._stamper


def _pem_to_der(pem: bytes) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class DevPkiServer:
    """``with DevPkiServer(pki_dir) as server: server.tsa_url, server.crl_url``."""

    def __init__(self, directory: Path | str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), Path(directory))
        self._thread: threading.Thread | None = None

    @property
    def directory(self) -> Path:
        return self._server.directory

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    @property
    def tsa_url(self) -> str:
        return f"{self.url}/tsa"

    @property
    def crl_url(self) -> str:
        return f"{self.url}/crl"

    def start(self) -> DevPkiServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="dev-pki-server", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (for ``python -m emr.signing tsa``)."""
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> DevPkiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

