"""C-STORE a set of instances to another facility's gateway (issue 15: images between hospitals).

Why here and not in the EMR: this package owns the DICOM network; the EMR's
outbox decides *when* to send and retries, and gets this function through
``filmless.wiring``. One association per call; each instance is asked for
only when it is about to be sent, so a 2 GB study never sits in memory.

A refused instance is a permanent failure for that instance (the receiver
looked at it and said no); an association that cannot be opened, or that
breaks, is a transient one (the caller retries the whole set later; the
receiver stores a re-sent instance once, PS3.4 B.2.3 "duplicate SOP instance").
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context

from .dimse_status import Status

__all__ = ["SendFailed", "SendResult", "send_instances"]

# PS3.7 Annex C: success and the warnings a store SCP answers when it kept the instance.
_STORED = {Status.SUCCESS, 0xB000, 0xB006, 0xB007, 0x0111}


class SendFailed(Exception):
    """The peer could not be reached, refused the association, or the association broke."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass
class SendResult:
    sent: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID, status)


def _tls_args(
    certificate_pem: str | None, host: str, client_cert: Path | None, client_key: Path | None
) -> tuple[ssl.SSLContext, str] | None:
    """TLS (PS3.15 B.1 secure transport) when the peer's certificate or CA is configured: the peer
    must present a certificate chaining to it for ``host``; ours is presented when we have one
    (the receiving gateway may require it: mutual TLS)."""
    if not certificate_pem:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=certificate_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None and client_key is not None:
        ctx.load_cert_chain(str(client_cert), str(client_key))
    return ctx, host


def send_instances(
    instances: Iterable[Callable[[], bytes]],
    *,
    calling_aet: str,
    called_aet: str,
    host: str,
    port: int,
    certificate_pem: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    timeout: float = 30.0,
) -> SendResult:
    """C-STORE each instance (a callable returning its Part-10 bytes) over one association.

    Presentation contexts are proposed per SOP class after reading the headers, so
    the set is read twice: headers first (to negotiate), then sent one at a time.
    """
    loaders = list(instances)
    headers: list[tuple[str, str]] = []
    for load in loaders:
        header = dcmread(io.BytesIO(load()), stop_before_pixels=True)
        headers.append((str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)))
    if not loaders:
        return SendResult()
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    wanted: dict[tuple[str, str], None] = {}
    for sop_class, ts in headers:
        wanted.setdefault((sop_class, ts), None)
        wanted.setdefault((sop_class, ""), None)
    contexts = [
        build_context(sop, [ts] if ts else [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        for sop, ts in list(wanted)[:128]
    ]
    try:
        tls = _tls_args(certificate_pem, host, client_cert, client_key)
        assoc = ae.associate(host, port, contexts=contexts, ae_title=called_aet, tls_args=tls)
    except (OSError, ssl.SSLError) as exc:
        raise SendFailed(f"cannot connect to {called_aet}@{host}:{port}: {exc}") from exc
    if assoc.is_rejected:
        raise SendFailed(f"{called_aet}@{host}:{port} rejected the association (is this site registered there?)")
    if not assoc.is_established:
        raise SendFailed(f"cannot connect to {called_aet}@{host}:{port} (no association: down, or TLS refused)")
    result = SendResult()
    try:
        for load in loaders:
            ds: Dataset = dcmread(io.BytesIO(load()))
            status = assoc.send_c_store(ds)
            if not assoc.is_established and not status:
                raise SendFailed(f"association with {called_aet}@{host}:{port} broke while sending")
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise SendFailed(f"{called_aet}@{host}:{port} did not answer a C-STORE")
            if code in _STORED:
                result.sent += 1
            else:
                result.refused.append((str(ds.SOPInstanceUID), f"0x{code:04X}"))
    finally:
        if assoc.is_established:
            assoc.release()
    return result
