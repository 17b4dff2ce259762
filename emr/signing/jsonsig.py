"""Detached CMS signatures over the RFC 8785 canonical JSON of a record version.

A structured export (``HoSoBenhAn`` JSON) can then be verified without the
PDF: canonicalise the JSON (JCS: sorted keys, fixed number and string
forms), check the CMS against it. Same key, certificate, status check and
timestamp as the PDF signature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms
from pyhanko_certvalidator import ValidationContext

from .context import SigningContext, check_certificate
from .exceptions import DocumentError, TimestampError
from .pades import _timestamper
from .signers import DocumentSigner, from_asn1_cert
from .verify import _as_asn1_certs

__all__ = ["JsonSignatureReport", "canonical_json", "sign_json", "verify_json_signature"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (a JSON-compatible object, or JSON text/bytes to re-canonicalise)."""
    import json

    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise DocumentError(f"not JSON: {exc}", key="signing.error.document") from exc
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise DocumentError(f"cannot canonicalise: {exc}", key="signing.error.document") from exc


def sign_json(value: Any, signer: DocumentSigner, context: SigningContext) -> bytes:
    """DER CMS SignedData (detached, CAdES attributes, timestamped) over ``canonical_json(value)``."""
    data = canonical_json(value)
    check_certificate(signer.certificate, context, signer.chain)
    timestamper = _timestamper(context.tsa_url, context.tsa_timeout) if context.tsa_url else None
    try:
        content_info = asyncio.run(
            signer.signer.async_sign_general_data(
                data, "sha256", detached=True, use_cades=True, timestamper=timestamper
            )
        )
    except OSError as exc:
        raise TimestampError(f"TSA failed: {exc}", key="signing.error.tsa", url=context.tsa_url) from exc
    return bytes(content_info.dump())


@dataclass(frozen=True)
class JsonSignatureReport:
    valid: bool
    intact: bool
    signature_valid: bool
    trusted: bool
    signer_name: str | None
    signing_time: dt.datetime | None
    timestamp_time: dt.datetime | None
    problems: tuple[str, ...]


def verify_json_signature(
    value: Any,
    signature: bytes,
    trust_anchors: Sequence[x509.Certificate | bytes],
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> JsonSignatureReport:
    """Check a CMS from :func:`sign_json` against the (re-canonicalised) JSON; never raises for bad input."""
    data = canonical_json(value)
    try:
        info = cms.ContentInfo.load(signature)
        signed_data = info["content"]
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        ctx = ValidationContext(
            trust_roots=_as_asn1_certs(trust_anchors),
            crls=[c.public_bytes(Encoding.DER) for c in crls],
            revocation_mode="soft-fail",
        )
        status = asyncio.run(
            async_validate_detached_cms(
                data, signed_data, signer_validation_context=ctx, ts_validation_context=ctx
            )
        )
    except (ValueError, TypeError, KeyError) as exc:
        del exc
        return JsonSignatureReport(False, False, False, False, None, None, None, ("signing.verify.bad_signature",))
    problems = []
    if not (status.intact and status.valid):
        problems.append("signing.verify.bad_signature")
    if status.revoked:
        problems.append("signing.verify.revoked")
    elif not status.trusted:
        problems.append("signing.verify.untrusted")
    ts = status.timestamp_validity
    ts_ok = bool(ts is not None and ts.intact and ts.valid and ts.trusted)
    if not ts_ok:
        problems.append("signing.verify.no_timestamp")
    cert = from_asn1_cert(status.signing_cert)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return JsonSignatureReport(
        valid=not problems,
        intact=bool(status.intact),
        signature_valid=bool(status.valid),
        trusted=bool(status.trusted),
        signer_name=str(names[0].value) if names else None,
        signing_time=status.signer_reported_dt,
        timestamp_time=ts.timestamp if ts_ok and ts is not None else None,
        problems=tuple(problems),
    )

