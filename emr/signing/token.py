"""PKCS#11 tokens (USB signing tokens; SoftHSM2 in demos and tests).

The only module that talks PKCS#11. Vietnamese clinicians usually sign with
a USB token from a licensed CA; the token's vendor ships a PKCS#11 library
(``.so``). :func:`open_token_signer` opens a logged-in session on the token
with the given label and yields a :class:`DocumentSigner`; the key never
leaves the token. :func:`enroll_dev_token_key` is for demos and tests: it
generates a key pair ON the token, has the development CA certify it, and
stores the certificate on the token next to the key.

python-pkcs11 loads a PKCS#11 library once per process (SoftHSM2 reads
``SOFTHSM2_CONF`` at that moment), so callers set that variable before the
first call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pkcs11
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11 import exceptions as p11_errors
from pyhanko.config.pkcs11 import TokenCriteria
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.pkcs11 import PKCS11Signer, find_token, open_pkcs11_session

from .exceptions import KeyAccessError
from .pki import DevPki, issue_certificate_for_key
from .signers import DocumentSigner, to_asn1_cert

__all__ = ["SOFTHSM_LIBRARY", "enroll_dev_token_key", "open_token_signer"]

SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"


def _open_session(lib_path: str, token_label: str, pin: str, *, rw: bool = False) -> pkcs11.Session:
    try:
        if not rw:
            return open_pkcs11_session(
                lib_path, token_criteria=TokenCriteria(label=token_label), user_pin=pin
            )
        token = find_token(pkcs11.lib(lib_path).get_slots(), token_criteria=TokenCriteria(label=token_label))
        if token is None:
            raise p11_errors.TokenNotPresent(f"no token labelled {token_label!r}")
        return token.open(rw=True, user_pin=pin)
    except (p11_errors.PinIncorrect, p11_errors.PinLenRange, p11_errors.PinInvalid) as exc:
        raise KeyAccessError(f"wrong PIN for token {token_label!r}", key="signing.error.bad_pin") from exc
    except p11_errors.PinLocked as exc:
        raise KeyAccessError(f"token {token_label!r} is locked", key="signing.error.bad_pin") from exc
    except (PyHankoSigningError, p11_errors.PKCS11Error, RuntimeError, OSError) as exc:
        # pyHanko's "no token matching", a missing .so, a token pulled out.
        raise KeyAccessError(
            f"cannot open token {token_label!r}: {exc}",
            key="signing.error.token_missing",
            label=token_label,
        ) from exc


def _certificate_on_token(session: pkcs11.Session, label: str) -> x509.Certificate:
    found = list(
        session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
    )
    if not found:
        raise KeyAccessError(
            f"no certificate labelled {label!r} on the token", key="signing.error.key_missing", label=label
        )
    return x509.load_der_x509_certificate(bytes(found[0][Attribute.VALUE]))


@contextmanager
def open_token_signer(
    token_label: str,
    pin: str,
    key_label: str,
    *,
    cert_label: str | None = None,
    lib_path: str = SOFTHSM_LIBRARY,
    chain: Sequence[x509.Certificate] = (),
) -> Iterator[DocumentSigner]:
    """A signer whose key stays on the PKCS#11 token; the session closes on exit.

    Keep the context open across several signatures (a signing session); the
    PIN is asked once. ``chain``: CA certificates above the signer's
    certificate when the token does not hold them.
    """
    session = _open_session(lib_path, token_label, pin)
    try:
        try:
            cert = _certificate_on_token(session, cert_label or key_label)
            session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
        except p11_errors.NoSuchKey as exc:
            raise KeyAccessError(
                f"no private key labelled {key_label!r}", key="signing.error.key_missing", label=key_label
            ) from exc
        signer = PKCS11Signer(
            session,
            key_label=key_label,
            signing_cert=to_asn1_cert(cert),
            ca_chain=[to_asn1_cert(c) for c in chain],
            other_certs_to_pull=None,
        )
        yield DocumentSigner(signer=signer, certificate=cert, chain=tuple(chain), source="pkcs11")
    finally:
        session.close()


def enroll_dev_token_key(
    pki: DevPki,
    token_label: str,
    pin: str,
    key_label: str,
    name: str,
    *,
    lib_path: str = SOFTHSM_LIBRARY,
    key_size: int = 2048,
) -> x509.Certificate:
    """Generate an RSA key pair on the token and store a development-CA certificate for it.

    The certificate object carries CLASS, CERTIFICATE_TYPE, VALUE, SUBJECT,
    LABEL and ID (without them PKCS#11 answers TemplateIncomplete).
    """
    session = _open_session(lib_path, token_label, pin, rw=True)
    try:
        key_id = key_label.encode("utf-8")
        public, _private = session.generate_keypair(
            KeyType.RSA, key_size, id=key_id, label=key_label, store=True
        )
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        )
        cert = issue_certificate_for_key(pki, numbers.public_key(), name)
        der = cert.public_bytes(serialization.Encoding.DER)
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.VALUE: der,
                Attribute.SUBJECT: asn1_x509.Certificate.load(der).subject.dump(),
                Attribute.LABEL: key_label,
                Attribute.ID: key_id,
            }
        )
        return cert
    finally:
        session.close()
