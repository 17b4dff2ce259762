"""Certificates: a development PKI and the store of trusted roots.

In production the hospital's clinicians hold certificates from a licensed
Vietnamese CA; the admin only imports that CA's chain as trust anchors
(:func:`import_trust_anchor`, :func:`list_trust_anchors`). For demos and
tests :func:`init_dev_pki` makes a root CA whose name says loudly that it is
not for clinical use, a time-stamping certificate, user certificates in
password-protected PKCS#12 files, and a CRL. Private keys, PKCS#12 files and
their passwords are written 0600.

Layout of a development PKI folder::

    ca.pem  ca.key  ca.crl (DER)  revoked.json
    tsa.pem tsa.key
    users/<id>.p12  users/<id>.pem  users/<id>.password
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .exceptions import PkiError

__all__ = [
    "DEV_CA_NAME",
    "DEFAULT_DEV_USERS",
    "DevPki",
    "DevUser",
    "TrustAnchor",
    "WithdrawnAnchor",
    "cert_sha256",
    "check_trust_anchor",
    "fingerprint",
    "import_trust_anchor",
    "init_dev_pki",
    "issue_certificate_for_key",
    "issue_user_certificate",
    "list_trust_anchors",
    "list_withdrawn_anchors",
    "load_certificates",
    "load_dev_pki",
    "load_trust_anchors",
    "revoke_certificate",
    "withdraw_trust_anchor",
]

DEV_CA_NAME = "filmless DEVELOPMENT CA — NOT FOR CLINICAL USE"
_DEV_ORG = "filmless DEVELOPMENT — NOT FOR CLINICAL USE"
# (user id, name on the certificate): demo clinicians.
DEFAULT_DEV_USERS: tuple[tuple[str, str], ...] = (
    ("bs.an", "BS. Nguyễn Văn An"),
    ("bs.binh", "BS. Trần Thị Bình"),
    ("bs.cuong", "BS. Lê Quốc Cường"),
)
_KEY_SIZE = 2048


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, even if the file existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


@dataclass(frozen=True)
class DevUser:
    """A demo clinician with a PKCS#12 file and its (generated) password."""

    user_id: str
    name: str
    p12_path: Path
    password_path: Path
    cert_path: Path

    def password(self) -> str:
        return self.password_path.read_text(encoding="utf-8").strip()

    def p12_bytes(self) -> bytes:
        return self.p12_path.read_bytes()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())


@dataclass(frozen=True)
class DevPki:
    """Paths of a development PKI made by :func:`init_dev_pki`."""

    directory: Path
    crl_url: str | None = None
    users: dict[str, DevUser] = field(default_factory=dict)

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "ca.crl"

    @property
    def tsa_cert_path(self) -> Path:
        return self.directory / "tsa.pem"

    @property
    def tsa_key_path(self) -> Path:
        return self.directory / "tsa.key"

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_der_x509_crl(self.crl_path.read_bytes())

    def tsa_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.tsa_cert_path.read_bytes())

    def _ca_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _DEV_ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _leaf(
    pki: DevPki,
    public_key: CertificateIssuerPublicKeyTypes,
    common_name: str,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    timestamping: bool = False,
) -> x509.Certificate:
    ca = pki.ca_certificate()
    ca_key = pki._ca_key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    end = not_after or min(start + dt.timedelta(days=730), ca.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if timestamping:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
    if pki.crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(pki.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _write_crl(pki: DevPki) -> None:
    """(Re)issue the CA's CRL from ``revoked.json``; valid for 7 days."""
    revoked_file = pki.directory / "revoked.json"
    revoked = json.loads(revoked_file.read_text()) if revoked_file.exists() else {}
    ca = pki.ca_certificate()
    now = _now()
    number = int(revoked.get("crl_number", 0)) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for serial_hex, when in revoked.get("serials", {}).items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial_hex, 16))
            .revocation_date(dt.datetime.fromisoformat(when))
            .build()
        )
    crl = builder.sign(pki._ca_key(), hashes.SHA256())
    revoked["crl_number"] = number
    revoked_file.write_text(json.dumps(revoked, indent=1))
    _write_public(pki.crl_path, crl.public_bytes(serialization.Encoding.DER))


def init_dev_pki(
    directory: Path | str,
    users: Sequence[tuple[str, str]] = DEFAULT_DEV_USERS,
    *,
    crl_url: str | None = None,
    overwrite: bool = False,
) -> DevPki:
    """Create a development root CA, a TSA certificate, user PKCS#12 files and a CRL.

    ``crl_url`` (optional) is written into every issued certificate as its CRL
    distribution point, so signers can fetch revocation data like they would
    from a licensed CA. Each user's PKCS#12 password is random and written next
    to it (0600). Refuses to replace an existing CA unless ``overwrite``.
    """
    directory = Path(directory)
    if (directory / "ca.pem").exists() and not overwrite:
        raise PkiError(f"{directory} already holds a CA", key="signing.error.pki_exists")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    (directory / "revoked.json").unlink(missing_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    now = _now()
    subject = _name(DEV_CA_NAME)
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(directory / "ca.key", _key_pem(ca_key))
    _write_public(directory / "ca.pem", _pem(ca))
    pki = DevPki(directory=directory, crl_url=crl_url)
    if crl_url:
        _write_public(directory / "crl-url.txt", crl_url.encode())
    else:
        (directory / "crl-url.txt").unlink(missing_ok=True)

    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    tsa = _leaf(pki, tsa_key.public_key(), "filmless DEVELOPMENT TSA", timestamping=True)
    _write_secret(directory / "tsa.key", _key_pem(tsa_key))
    _write_public(directory / "tsa.pem", _pem(tsa))
    _write_crl(pki)
    for user_id, name in users:
        issue_user_certificate(pki, user_id, name)
    return load_dev_pki(directory)


def load_dev_pki(directory: Path | str) -> DevPki:
    """Open a development PKI made earlier by :func:`init_dev_pki`."""
    directory = Path(directory)
    if not (directory / "ca.pem").is_file():
        raise PkiError(f"no development CA in {directory}", key="signing.error.pki_missing")
    url_file = directory / "crl-url.txt"
    crl_url = url_file.read_text().strip() if url_file.exists() else None
    users = {}
    for p12 in sorted((directory / "users").glob("*.p12")):
        user_id = p12.stem
        cert_path = p12.with_suffix(".pem")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        users[user_id] = DevUser(
            user_id=user_id,
            name=_common_name(cert),
            p12_path=p12,
            password_path=p12.with_suffix(".password"),
            cert_path=cert_path,
        )
    return DevPki(directory=directory, crl_url=crl_url, users=users)


def issue_certificate_for_key(
    pki: DevPki,
    public_key: CertificateIssuerPublicKeyTypes,
    name: str,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A signing certificate from the development CA for an existing key (e.g. on a token)."""
    return _leaf(pki, public_key, name, not_before=not_before, not_after=not_after)


def issue_user_certificate(
    pki: DevPki,
    user_id: str,
    name: str,
    *,
    password: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> DevUser:
    """A new key + certificate for ``user_id`` in ``users/<id>.p12`` (password generated if not given)."""
    if not user_id or not all(c.isalnum() or c in "._-" for c in user_id) or user_id[0] == ".":
        raise PkiError(f"bad user id {user_id!r}", key="signing.error.pki")
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    cert = _leaf(pki, key.public_key(), name, not_before=not_before, not_after=not_after)
    password = password or secrets.token_urlsafe(12)
    p12 = pkcs12.serialize_key_and_certificates(
        user_id.encode(),
        key,
        cert,
        [pki.ca_certificate()],
        serialization.BestAvailableEncryption(password.encode()),
    )
    users = pki.directory / "users"
    users.mkdir(exist_ok=True)
    _write_secret(users / f"{user_id}.p12", p12)
    _write_secret(users / f"{user_id}.password", password.encode() + b"\n")
    _write_public(users / f"{user_id}.pem", _pem(cert))
    user = DevUser(
        user_id=user_id,
        name=name,
        p12_path=users / f"{user_id}.p12",
        password_path=users / f"{user_id}.password",
        cert_path=users / f"{user_id}.pem",
    )
    pki.users[user_id] = user
    return user


def revoke_certificate(pki: DevPki, serial_number: int, when: dt.datetime | None = None) -> None:
    """Put a serial number on the development CA's CRL and reissue the CRL."""
    revoked_file = pki.directory / "revoked.json"
    revoked = json.loads(revoked_file.read_text()) if revoked_file.exists() else {}
    revoked.setdefault("serials", {})[format(serial_number, "x")] = (when or _now()).isoformat()
    revoked_file.write_text(json.dumps(revoked, indent=1))
    _write_crl(pki)


# -- trust anchors -----------------------------------------------------------


@dataclass(frozen=True)
class TrustAnchor:
    """A root (or intermediate) CA certificate the hospital trusts for signatures."""

    subject: str
    issuer: str
    serial_number: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    path: Path

    @property
    def fingerprint(self) -> str:
        """``AA:BB:…``: the SHA-256 as read aloud to the issuing site for out-of-band confirmation."""
        return fingerprint(self.sha256)

    @property
    def is_development(self) -> bool:
        return "DEVELOPMENT" in self.subject

    @property
    def expired(self) -> bool:
        return self.not_after < _now()


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or several) or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PkiError(f"not a certificate: {exc}", key="signing.error.bad_certificate") from exc


def cert_sha256(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 over its DER encoding (hex): how a trust anchor is named and confirmed."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _anchor(cert: x509.Certificate, path: Path) -> TrustAnchor:
    return TrustAnchor(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial_number=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=cert_sha256(cert),
        path=path,
    )


def fingerprint(sha256_hex: str) -> str:
    """A SHA-256 hex digest as colon-separated upper-case pairs (``AA:BB:…``), the way certificate
    viewers show it, so two people can read it to each other over the phone."""
    digest = sha256_hex.upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def check_trust_anchor(data: bytes) -> list[x509.Certificate]:
    """The CA certificate(s) in ``data`` (PEM bundle or DER) if they may become trust anchors.

    Refuses (:class:`PkiError`) what is not a certificate, a file that also holds a private key
    (a CA's key has no business travelling with its certificate), a certificate that is not a
    CA's (basicConstraints cA, RFC 5280 §4.2.1.9) and an expired one. Writes nothing.
    """
    if b"PRIVATE KEY-----" in data:
        raise PkiError("the file holds a private key", key="signing.error.anchor_private_key")
    certs = load_certificates(data)
    for cert in certs:
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise PkiError(
                f"{cert.subject.rfc4514_string()} is not a CA certificate",
                key="signing.error.anchor_not_ca",
                subject=cert.subject.rfc4514_string(),
            )
        if cert.not_valid_after_utc < _now():
            raise PkiError(
                f"{cert.subject.rfc4514_string()} expired",
                key="signing.error.anchor_expired",
                subject=cert.subject.rfc4514_string(),
            )
    return certs


def import_trust_anchor(data: bytes, store_dir: Path | str) -> list[TrustAnchor]:
    """Add the CA certificate(s) in ``data`` (PEM bundle or DER) to the trust store.

    Only CA certificates that are currently valid are accepted (:func:`check_trust_anchor`);
    importing the same certificate twice is harmless.
    """
    store = Path(store_dir)
    certs = check_trust_anchor(data)
    store.mkdir(parents=True, exist_ok=True)
    anchors = []
    for cert in certs:
        path = store / f"{cert_sha256(cert)}.pem"
        if not path.exists():
            _write_public(path, _pem(cert))
        anchors.append(_anchor(cert, path))
    return anchors


def list_trust_anchors(store_dir: Path | str) -> list[TrustAnchor]:
    """The imported trust anchors, sorted by subject."""
    store = Path(store_dir)
    if not store.is_dir():
        return []
    anchors: list[TrustAnchor] = []
    for path in sorted(store.glob("*.pem")):
        anchors.extend(_anchor(cert, path) for cert in load_certificates(path.read_bytes()))
    return sorted(anchors, key=lambda a: a.subject)


def load_trust_anchors(store_dir: Path | str) -> list[x509.Certificate]:
    """The trust store's certificates, ready for signing and verification."""
    certs: list[x509.Certificate] = []
    for anchor in list_trust_anchors(store_dir):
        certs.extend(load_certificates(anchor.path.read_bytes()))
    return certs



# -- withdrawn trust anchors ---------------------------------------------------------
#
# A CA that is compromised or retired stops being trusted at once: its certificate leaves the store
# (every verification reads the store afresh, emr.signing.service.SigningConfig.anchors) and goes, with
# who withdrew it, when and why, to ``<store>/withdrawn/`` (never read as an anchor: only ``<store>/*.pem``
# is), so an auditor can still see what was trusted until when. Verification results stored before
# stay as they were; a paper signed under that CA now verifies as "chain not trusted", since its
# signature itself is still intact.

WITHDRAWN_DIR = "withdrawn"


@dataclass(frozen=True)
class WithdrawnAnchor:
    """A CA certificate that was a trust anchor until ``withdrawn_at``."""

    subject: str
    sha256: str
    not_after: dt.datetime
    withdrawn_at: dt.datetime
    withdrawn_by: str
    reason: str
    owners: tuple[str, ...]  # the network sites whose signing CA it was
    path: Path  # the certificate as it was trusted (PEM)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sha256)


def _normalised_sha256(value: str) -> str:
    digest = value.strip().replace(":", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise PkiError(f"not a SHA-256 fingerprint: {value!r}", key="signing.error.anchor_fingerprint")
    return digest


def withdraw_trust_anchor(
    store_dir: Path | str, sha256: str, *, reason: str, by: str, owners: Sequence[str] = (),
) -> WithdrawnAnchor:
    """Stop trusting the anchor whose SHA-256 is ``sha256`` (hex or ``AA:BB:…``), keeping a record.

    The certificate is written to ``<store>/withdrawn/<sha256>-<UTC time>.pem`` with a ``.json`` next to
    it (reason, who, when, subject, validity, owners), then removed from the store; a file holding
    several certificates is rewritten without it. Raises :class:`PkiError` for a blank reason or an
    anchor the store does not hold.
    """
    store = Path(store_dir)
    digest = _normalised_sha256(sha256)
    reason = " ".join(reason.split())
    if not reason:
        raise PkiError("a withdrawal needs a reason", key="signing.error.anchor_reason")
    found = None
    for path in sorted(store.glob("*.pem")) if store.is_dir() else []:
        certs = load_certificates(path.read_bytes())
        for cert in certs:
            if cert_sha256(cert) == digest:
                found = (path, cert, [c for c in certs if c is not cert])
                break
        if found:
            break
    if found is None:
        raise PkiError(f"no trust anchor {digest}", key="signing.error.anchor_unknown")
    path, cert, rest = found
    now = _now()
    anchor = _anchor(cert, path)
    folder = store / WITHDRAWN_DIR
    stem = f"{digest}-{now:%Y%m%dT%H%M%S%fZ}"
    record = {
        "sha256": digest,
        "subject": anchor.subject,
        "issuer": anchor.issuer,
        "serial_number": anchor.serial_number,
        "not_before": anchor.not_before.isoformat(),
        "not_after": anchor.not_after.isoformat(),
        "withdrawn_at": now.isoformat(),
        "withdrawn_by": by,
        "reason": reason,
        "owners": list(owners),
    }
    # The record first: if anything fails after it, the anchor is still trusted and the admin retries;
    # never the other way round (an anchor gone without a trace).
    _write_public(folder / f"{stem}.pem", _pem(cert))
    _write_public(folder / f"{stem}.json", json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8"))
    if rest:
        tmp = path.with_suffix(".pem.tmp")
        _write_public(tmp, b"".join(_pem(c) for c in rest))
        os.replace(tmp, path)
    else:
        path.unlink()
    return _withdrawn(record, folder / f"{stem}.pem")


def _withdrawn(record: Mapping[str, object], path: Path) -> WithdrawnAnchor:
    owners = record.get("owners") or []
    return WithdrawnAnchor(
        subject=str(record.get("subject", "")),
        sha256=str(record.get("sha256", "")),
        not_after=dt.datetime.fromisoformat(str(record["not_after"])),
        withdrawn_at=dt.datetime.fromisoformat(str(record["withdrawn_at"])),
        withdrawn_by=str(record.get("withdrawn_by", "")),
        reason=str(record.get("reason", "")),
        owners=tuple(str(o) for o in owners) if isinstance(owners, list) else (),
        path=path,
    )


def list_withdrawn_anchors(store_dir: Path | str) -> list[WithdrawnAnchor]:
    """The anchors withdrawn from the store, newest withdrawal first."""
    folder = Path(store_dir) / WITHDRAWN_DIR
    if not folder.is_dir():
        return []
    out = []
    for meta in folder.glob("*.json"):
        try:
            out.append(_withdrawn(json.loads(meta.read_text(encoding="utf-8")), meta.with_suffix(".pem")))
        except (ValueError, KeyError):
            continue  # a hand-edited record: the certificate next to it is still there to read
    return sorted(out, key=lambda w: w.withdrawn_at, reverse=True)
