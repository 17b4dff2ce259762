"""The facility's signing key for the insurance envelope: PKCS#12 file or PKCS#11 token.

signxml signs with any object that has ``sign(data, padding=..., algorithm=...)``
the way a ``cryptography`` RSA key does; :class:`TokenRsaKey` gives that
shape to a private key that never leaves a PKCS#11 token (python-pkcs11,
mechanism CKM_SHA256_RSA_PKCS), so the same signer code serves both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import pkcs12

from .config import ExportConfig
from .exceptions import FacilityKeyError

__all__ = ["FacilityKey", "load_pkcs12_key", "open_token_key", "open_facility_key", "TokenRsaKey"]


@dataclass
class FacilityKey:
    """A private key (or token handle) with its certificate and the chain above it."""

    key: Any
    certificate: x509.Certificate
    chain: Sequence[x509.Certificate] = field(default_factory=tuple)
    source: str = "pkcs12"


def load_pkcs12_key(data: bytes, password: str) -> FacilityKey:
    try:
        key, cert, others = pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
    except ValueError as exc:
        raise FacilityKeyError(f"cannot open the facility PKCS#12: {exc}", key="exports.error.key_password") from exc
    if key is None or cert is None:
        raise FacilityKeyError("the PKCS#12 holds no key or no certificate", key="exports.error.key_missing")
    return FacilityKey(key=key, certificate=cert, chain=tuple(others), source="pkcs12")


class TokenRsaKey:
    """An RSA private key on a PKCS#11 token, signing like a ``cryptography`` key (PKCS#1 v1.5)."""

    _MECHANISMS = {"sha256": "SHA256_RSA_PKCS", "sha384": "SHA384_RSA_PKCS", "sha512": "SHA512_RSA_PKCS"}

    def __init__(self, private_key: Any, key_size: int) -> None:
        self._key = private_key
        self.key_size = key_size

    def sign(self, data: bytes, padding: Any, algorithm: hashes.HashAlgorithm) -> bytes:
        import pkcs11

        if not isinstance(padding, PKCS1v15) or algorithm.name not in self._MECHANISMS:
            raise FacilityKeyError(f"token key cannot sign with {padding!r}/{algorithm.name}")
        mechanism = getattr(pkcs11.Mechanism, self._MECHANISMS[algorithm.name])
        return bytes(self._key.sign(data, mechanism=mechanism))


@contextmanager
def open_token_key(library: str, token_label: str, pin: str, key_label: str) -> Iterator[FacilityKey]:
    """A logged-in token session holding the facility key; closed on exit."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    try:
        lib = pkcs11.lib(library)
        token = lib.get_token(token_label=token_label)
        session = token.open(user_pin=pin)
    except (pkcs11.exceptions.PKCS11Error, RuntimeError, OSError) as exc:
        raise FacilityKeyError(f"cannot open token {token_label!r}: {exc}", key="exports.error.token") from exc
    try:
        try:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
            certs = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: key_label}))
        except (pkcs11.exceptions.NoSuchKey, pkcs11.exceptions.MultipleObjectsReturned) as exc:
            raise FacilityKeyError(
                f"no usable key {key_label!r} on the token", key="exports.error.key_missing"
            ) from exc
        if not certs:
            raise FacilityKeyError(f"no certificate {key_label!r} on the token", key="exports.error.key_missing")
        cert = x509.load_der_x509_certificate(bytes(certs[0][Attribute.VALUE]))
        size = cert.public_key().key_size  # type: ignore[union-attr]
        yield FacilityKey(key=TokenRsaKey(private, size), certificate=cert, source="pkcs11")
    finally:
        session.close()


@contextmanager
def open_facility_key(config: ExportConfig) -> Iterator[FacilityKey]:
    """The configured facility key: the token when configured, else the PKCS#12 file."""
    if config.token is not None:
        pin = Path(config.token.pin_file).read_text(encoding="utf-8").strip()
        with open_token_key(config.token.library, config.token.token_label, pin, config.token.key_label) as key:
            yield key
        return
    if config.facility_p12 is None or not config.facility_p12.exists():
        raise FacilityKeyError("no facility key configured (exports.json: facility_p12)", key="exports.error.no_key")
    password = ""
    if config.facility_p12_password_file is not None:
        password = config.facility_p12_password_file.read_text(encoding="utf-8").strip()
    yield load_pkcs12_key(config.facility_p12.read_bytes(), password)
