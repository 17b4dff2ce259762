"""Key sources for signing: a password-protected PKCS#12 file per user.

(PKCS#11 tokens are in :mod:`emr.signing.token`.) Both give a
:class:`DocumentSigner`: the pyHanko signer plus the signer's certificate and
its chain, which the certificate-status check at signing time needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers import Signer, SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from .exceptions import KeyAccessError

__all__ = ["DocumentSigner", "load_pkcs12_signer", "to_asn1_cert", "from_asn1_cert"]


def to_asn1_cert(cert: x509.Certificate | asn1_x509.Certificate) -> asn1_x509.Certificate:
    if isinstance(cert, asn1_x509.Certificate):
        return cert
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def from_asn1_cert(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())


class _LoadedKeySigner(SimpleSigner):
    """SimpleSigner that keeps the parsed private key.

    pyHanko's SimpleSigner re-parses the DER key for every raw signature,
    and cryptography checks an RSA key's consistency on each parse (≈45 ms
    for 2048 bits): twice per PDF signature. Signing a session's documents
    with the key parsed once keeps p95 latency low.
    """

    def __init__(self, key: PrivateKeyTypes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key = key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        if isinstance(self._key, RSAPrivateKey) and mechanism["algorithm"].native in (
            "rsassa_pkcs1v15",
            "sha256_rsa",
            "sha384_rsa",
            "sha512_rsa",
        ):
            return self._key.sign(data, PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
        return super().sign_raw(data, digest_algorithm)


@dataclass
class DocumentSigner:
    """A ready-to-use signing key with its certificate (and the chain above it)."""

    signer: Signer
    certificate: x509.Certificate
    chain: Sequence[x509.Certificate] = field(default_factory=tuple)
    source: str = "pkcs12"  # or "pkcs11"

    @property
    def subject_name(self) -> str:
        names = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else self.certificate.subject.rfc4514_string()


def load_pkcs12_signer(
    data: bytes, password: str, extra_chain: Sequence[x509.Certificate] = ()
) -> DocumentSigner:
    """Open a PKCS#12 (.p12/.pfx) file; a wrong password raises :class:`KeyAccessError`."""
    try:
        key, cert, others = pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
    except ValueError as exc:
        raise KeyAccessError(
            f"cannot open PKCS#12: {exc}", key="signing.error.bad_password"
        ) from exc
    if key is None or cert is None:
        raise KeyAccessError("PKCS#12 holds no key or no certificate", key="signing.error.key_access")
    chain = [*others, *extra_chain]
    key_info = asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    signer = _LoadedKeySigner(
        key,
        signing_cert=to_asn1_cert(cert),
        signing_key=key_info,
        cert_registry=SimpleCertificateStore.from_certs([to_asn1_cert(c) for c in chain]),
    )
    return DocumentSigner(signer=signer, certificate=cert, chain=tuple(chain), source="pkcs12")
