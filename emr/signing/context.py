"""What a signature is checked against: trust anchors, revocation data, TSA.

Decree 23/2025 wants the signer's certificate status checked at signing time:
:func:`check_certificate` builds the chain to one of the hospital's trust
anchors and checks expiry and revocation (CRLs given here and, when allowed,
fetched from the certificate's own CRL/OCSP URLs), and refuses with a
:class:`CertificateRejected` that names the reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as cv_errors
from pyhanko_certvalidator.path import ValidationPath

from .exceptions import CertificateRejected
from .signers import to_asn1_cert

__all__ = ["SigningContext", "check_certificate"]


@dataclass(frozen=True)
class SigningContext:
    """Settings for signing and verifying; built once from the application's settings.

    ``tsa_url``: RFC 3161 time-stamping service (PAdES B-T needs it).
    ``crls``: revocation lists known locally (e.g. the CA's CRL, downloaded
    by an admin); ``allow_fetching``: also fetch CRL/OCSP from the URLs in the
    certificates. ``require_revocation_info``: refuse when the status cannot
    be established (hard-fail) instead of assuming "not revoked".
    ``embed_revocation_info``: store the CRLs/OCSP answers used in the PDF
    (PAdES B-LT), so it verifies later without the network.
    """

    trust_anchors: Sequence[x509.Certificate]
    tsa_url: str | None = None
    crls: Sequence[x509.CertificateRevocationList] = ()
    intermediates: Sequence[x509.Certificate] = ()
    allow_fetching: bool = True
    require_revocation_info: bool = True
    embed_revocation_info: bool = True
    tsa_timeout: float = 10.0
    location: str | None = None
    key_usage: frozenset[str] = field(default_factory=lambda: frozenset({"non_repudiation"}))

    def validation_context(
        self, extra_certs: Sequence[x509.Certificate] = (), *, moment: dt.datetime | None = None
    ) -> ValidationContext:
        return ValidationContext(
            trust_roots=[to_asn1_cert(c) for c in self.trust_anchors],
            other_certs=[to_asn1_cert(c) for c in (*self.intermediates, *extra_certs)],
            crls=[
                asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER))
                for c in self.crls
            ],
            allow_fetching=self.allow_fetching,
            revocation_mode="hard-fail" if self.require_revocation_info else "soft-fail",
            moment=moment,
        )


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def check_certificate(
    cert: x509.Certificate,
    context: SigningContext,
    chain: Sequence[x509.Certificate] = (),
    *,
    moment: dt.datetime | None = None,
) -> ValidationPath:
    """The validated path for ``cert`` now (or at ``moment``), or :class:`CertificateRejected`."""
    subject = _subject(cert)
    validator = CertificateValidator(
        to_asn1_cert(cert),
        intermediate_certs=[to_asn1_cert(c) for c in chain],
        validation_context=context.validation_context(chain, moment=moment),
    )
    try:
        return asyncio.run(validator.async_validate_usage(set(context.key_usage)))
    except cv_errors.RevokedError as exc:
        raise CertificateRejected(
            f"certificate of {subject} is revoked: {exc}", key="signing.error.cert_revoked", subject=subject
        ) from exc
    except cv_errors.ExpiredError as exc:
        raise CertificateRejected(
            f"certificate of {subject} expired: {exc}", key="signing.error.cert_expired", subject=subject
        ) from exc
    except cv_errors.NotYetValidError as exc:
        raise CertificateRejected(
            f"certificate of {subject} not yet valid: {exc}",
            key="signing.error.cert_not_yet_valid",
            subject=subject,
        ) from exc
    except cv_errors.InsufficientRevinfoError as exc:
        raise CertificateRejected(
            f"revocation status of {subject} unknown: {exc}",
            key="signing.error.cert_status_unknown",
            subject=subject,
        ) from exc
    except cv_errors.InvalidCertificateError as exc:
        raise CertificateRejected(
            f"certificate of {subject} not usable for signing: {exc}",
            key="signing.error.cert_usage",
            subject=subject,
        ) from exc
    except (cv_errors.PathBuildingError, cv_errors.PathValidationError) as exc:
        raise CertificateRejected(
            f"certificate of {subject} is not trusted: {exc}",
            key="signing.error.cert_untrusted",
            subject=subject,
        ) from exc
