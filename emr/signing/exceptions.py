"""Errors of the signing library.

Every error carries a message key from the catalogue ``emr/i18n/vi.json``
(``signing.error.*``) plus its parameters, so the EMR shows a Vietnamese
sentence and the command line can print the same one; ``str(exc)`` stays an
English developer message for logs. One root, :class:`SigningError`, so a
caller can catch the whole library at its edge.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CertificateRejected",
    "DicomEncapsulationError",
    "DocumentError",
    "KeyAccessError",
    "PkiError",
    "SignatureFieldError",
    "SigningError",
    "TimestampError",
]


class SigningError(Exception):
    """Root of every error raised by :mod:`emr.signing`."""

    default_key = "signing.error.generic"

    def __init__(self, detail: str, *, key: str | None = None, **params: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.key = key or self.default_key
        self.params = params

    def user_message(self) -> str:
        """The Vietnamese sentence for this error, from the message catalogue."""
        from emr.i18n import t  # late: the catalogue is only needed when shown

        return t(self.key, **self.params)


class CertificateRejected(SigningError):
    """The signer's certificate is expired, revoked, untrusted or unusable."""

    default_key = "signing.error.cert_untrusted"


class KeyAccessError(SigningError):
    """The private key could not be opened (wrong password or PIN, no token, no key)."""

    default_key = "signing.error.key_access"


class TimestampError(SigningError):
    """The time-stamping authority did not give a usable timestamp."""

    default_key = "signing.error.tsa"


class DocumentError(SigningError):
    """The input is not a document this library can render, sign or read."""

    default_key = "signing.error.document"


class SignatureFieldError(SigningError):
    """The signature field is missing or already signed."""

    default_key = "signing.error.field_missing"


class PkiError(SigningError):
    """Creating or importing certificates failed (bad PEM, not a CA, ...)."""

    default_key = "signing.error.pki"


class DicomEncapsulationError(SigningError):
    """The PDF could not be wrapped into, or read back from, DICOM."""

    default_key = "signing.error.dicom"
