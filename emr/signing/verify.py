"""Verification of signed documents: valid or not, per signature, and why.

A document verifies only when every signature is cryptographically intact,
chains to a trust anchor, is not revoked, carries a valid timestamp, and no
byte of the file changed after signing:

* each signature's byte range digest matches (pyHanko ``intact``);
* the unsigned gap of each signature (its ``/Contents``) holds exactly the
  CMS structure followed by zero padding, so even a padding digit cannot be
  altered unnoticed; the certificates carried in the CMS verify against their
  issuers, and its unsigned framing (digest algorithm set, versions,
  algorithm parameters) is the one RFC 5652 value that fits;
* revisions added after a signature only fill the remaining signature
  fields (pyHanko's difference analysis: at most ``FORM_FILLING``), which
  catches content edits, swapped pages and added annotations;
* the last revision of the file is itself covered by a signature, and
  nothing follows the final ``%%EOF`` — documents signed by this library
  keep their B-LT revocation data inside the signed revision, so no unsigned
  bytes remain anywhere.

The report uses message keys from ``emr/i18n/vi.json`` (``signing.verify.*``)
so the verification page and ``filmless verify`` show the same Vietnamese
sentences.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESIndeterminate
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature, extract_contents
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from .signers import from_asn1_cert, to_asn1_cert

__all__ = ["SignatureReport", "VerificationReport", "verify_pdf"]

_ALLOWED_LATER = (ModificationLevel.NONE, ModificationLevel.LTA_UPDATES, ModificationLevel.FORM_FILLING)


@dataclass(frozen=True)
class SignatureReport:
    """One signature of a document, as a verifier sees it."""

    field_name: str
    signer_name: str | None
    signer_subject: str | None
    certificate_serial: str | None
    signing_time: dt.datetime | None  # claimed by the signer (signed attribute)
    timestamp_time: dt.datetime | None  # from the TSA token, if valid
    intact: bool  # the signed bytes hash to the signed digest
    signature_valid: bool  # the CMS signature checks out with the certificate
    chain_status: str  # trusted | untrusted | revoked | expired | unknown
    timestamp_valid: bool
    unmodified: bool  # nothing but later signatures changed the document after this one
    covers_whole_file: bool
    modification_level: str | None
    problems: tuple[str, ...] = ()  # message keys (signing.verify.*)

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class VerificationReport:
    """The verdict for a whole file."""

    valid: bool
    signatures: tuple[SignatureReport, ...]
    problems: tuple[str, ...]  # file-level message keys
    sha256: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for the API and ``filmless verify --json``)."""

        def value(v: Any) -> Any:
            return v.isoformat() if isinstance(v, dt.datetime) else v

        return {
            "valid": self.valid,
            "sha256": self.sha256,
            "size": self.size,
            "problems": list(self.problems),
            "signatures": [
                {k: (list(v) if isinstance(v, tuple) else value(v)) for k, v in vars(s).items()}
                | {"valid": s.valid}
                for s in self.signatures
            ],
        }


def _as_asn1_certs(anchors: Iterable[x509.Certificate | bytes]) -> list[Any]:
    out: list[Any] = []
    for anchor in anchors:
        if isinstance(anchor, bytes):
            if b"-----BEGIN" in anchor:
                out.extend(to_asn1_cert(c) for c in x509.load_pem_x509_certificates(anchor))
            else:
                out.append(to_asn1_cert(x509.load_der_x509_certificate(anchor)))
        else:
            out.append(to_asn1_cert(anchor))
    return out


def _padding_ok(sig: EmbeddedPdfSignature) -> bool:
    """The /Contents string is the CMS DER and then only zero bytes."""
    raw = extract_contents(sig.sig_object)
    try:
        der_len = len(cms.ContentInfo.load(raw, strict=False).dump())
    except ValueError:
        return False
    return 0 < der_len <= len(raw) and not raw[der_len:].strip(b"\x00")


def _signed_datas(signed_data: cms.SignedData) -> Iterable[cms.SignedData]:
    """The signature's SignedData and those of the timestamp tokens inside it."""
    yield signed_data
    for signer_info in signed_data["signer_infos"]:
        for attr in signer_info["unsigned_attrs"] or ():
            if attr["type"].native == "signature_time_stamp_token":
                for token in attr["values"]:
                    yield token["content"]


def _algorithm_ok(alg: Any) -> bool:
    """Parameters of a digest/RSA algorithm identifier: absent or NULL (PSS has its own)."""
    if alg["algorithm"].native == "rsassa_pss":
        return True
    params = alg["parameters"]
    return params.native is None and params.contents in (None, b"")


def _cms_structure_ok(sig: EmbeddedPdfSignature) -> bool:
    """The unsigned framing of each SignedData is exactly what RFC 5652 prescribes.

    The signer signs only its signed attributes; the ``digestAlgorithms`` set,
    version numbers and algorithm parameters around them are not covered, and
    a validator ignores most of them. Each must be the one value that fits the
    rest, so no byte there can change unnoticed.
    """
    for signed_data in _signed_datas(sig.signed_data):
        infos = list(signed_data["signer_infos"])
        if not infos:
            return False
        declared = sorted(a.dump() for a in signed_data["digest_algorithms"])
        used = sorted({i["digest_algorithm"].dump() for i in infos})
        if declared != used or not all(_algorithm_ok(a) for a in signed_data["digest_algorithms"]):
            return False
        for info in infos:
            expected = "v1" if info["sid"].name == "issuer_and_serial_number" else "v3"
            if info["version"].native != expected:
                return False
            if not (_algorithm_ok(info["digest_algorithm"]) and _algorithm_ok(info["signature_algorithm"])):
                return False
        other = any(c.name != "certificate" for c in signed_data["certificates"] or ())
        if other or signed_data["crls"]:
            expected_sd = {"v4", "v5"}
        elif any(i["version"].native == "v3" for i in infos) or (
            signed_data["encap_content_info"]["content_type"].native != "data"
        ):
            expected_sd = {"v3"}
        else:
            expected_sd = {"v1"}
        if signed_data["version"].native not in expected_sd:
            return False
    return True


def _embedded_certs_ok(sig: EmbeddedPdfSignature, anchors: Sequence[x509.Certificate]) -> bool:
    """Every certificate carried in the CMS (and its timestamp tokens) is intact.

    These certificates are outside what the signer signed; a validator that
    builds the chain from the trust store would not notice a damaged copy of
    the root, so each one must verify against an issuer we have.
    """
    certs: list[x509.Certificate] = []
    for signed_data in _signed_datas(sig.signed_data):
        for choice in signed_data["certificates"] or ():
            if choice.name != "certificate":
                continue
            try:
                certs.append(x509.load_der_x509_certificate(choice.chosen.dump()))
            except Exception:  # any parse failure of a hostile certificate  # noqa: BLE001
                return False
    issuers = [*certs, *anchors]
    for cert in certs:
        for issuer in issuers:
            if issuer.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            return False
    return True


def _contents_hex_ok(data: bytes, sig: EmbeddedPdfSignature) -> bool:
    """The gap in the byte range is exactly ``<hex digits>``: no stray characters hidden there."""
    br = sig.byte_range
    gap = data[br[0] + br[1] : br[2]]
    return re.fullmatch(rb"<[0-9A-Fa-f]*>", gap) is not None


def _ends_cleanly(data: bytes) -> bool:
    tail = data.rstrip(b"\r\n")
    return tail.endswith(b"%%EOF")


def chain_status(status: PdfSignatureStatus) -> str:
    """trusted / revoked / expired / unknown / untrusted: the verdict on a signer's certificate chain."""
    if status.revoked:
        return "revoked"
    if status.trusted:
        return "trusted"
    indic = status.trust_problem_indic
    if indic in (
        AdESIndeterminate.EXPIRED,
        AdESIndeterminate.OUT_OF_BOUNDS_NO_POE,
        AdESIndeterminate.OUT_OF_BOUNDS_NOT_REVOKED,
    ):
        return "expired"
    if indic in (AdESIndeterminate.TRY_LATER, AdESIndeterminate.REVOCATION_OUT_OF_BOUNDS_NO_POE):
        return "unknown"
    return "untrusted"


def _common_name(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def verify_pdf(
    data: bytes,
    trust_anchors: Sequence[x509.Certificate | bytes],
    *,
    crls: Sequence[x509.CertificateRevocationList] = (),
    allow_fetching: bool = False,
) -> VerificationReport:
    """Check every signature of ``data`` against ``trust_anchors``; never raises for bad input.

    Revocation data embedded in the document (DSS) is used, plus ``crls`` and,
    if ``allow_fetching``, whatever the certificates' CRL/OCSP URLs give.
    """
    digest = hashlib.sha256(data).hexdigest()

    def broken(*keys: str) -> VerificationReport:
        return VerificationReport(False, (), tuple(keys), digest, len(data))

    if not data.startswith(b"%PDF-"):
        return broken("signing.verify.unreadable")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=True)
        signatures = list(reader.embedded_signatures)
        dss = DocumentSecurityStore.read_dss(reader) if "/DSS" in reader.root else None
    except Exception:  # hostile input: any parse failure means unreadable  # noqa: BLE001
        return broken("signing.verify.unreadable")
    if not signatures:
        return broken("signing.verify.no_signatures")

    anchor_certs = [from_asn1_cert(c) for c in _as_asn1_certs(trust_anchors)]
    kwargs: dict[str, Any] = {
        "trust_roots": _as_asn1_certs(trust_anchors),
        "crls": [asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER)) for c in crls],
        "allow_fetching": allow_fetching,
        "revocation_mode": "soft-fail",
    }
    reports = []
    file_problems: list[str] = []
    if not _ends_cleanly(data):
        file_problems.append("signing.verify.trailing_data")
    last_covers_file = False
    for sig in signatures:
        try:
            report, covers = _verify_one(data, sig, dss, kwargs, anchor_certs)
        except Exception:  # hostile input: whatever breaks, the signature is not valid  # noqa: BLE001
            report = SignatureReport(
                field_name=str(sig.field_name), signer_name=None, signer_subject=None,
                certificate_serial=None, signing_time=None, timestamp_time=None, intact=False,
                signature_valid=False, chain_status="unknown", timestamp_valid=False,
                unmodified=False, covers_whole_file=False, modification_level=None,
                problems=("signing.verify.bad_signature",),
            )
            covers = False
        reports.append(report)
        last_covers_file = last_covers_file or covers
    if not last_covers_file and "signing.verify.modified" not in file_problems:
        file_problems.append("signing.verify.modified")
    valid = not file_problems and all(r.valid for r in reports)
    return VerificationReport(valid, tuple(reports), tuple(file_problems), digest, len(data))


def _context(dss: DocumentSecurityStore | None, kwargs: dict[str, Any], **extra: Any) -> ValidationContext:
    merged = {**kwargs, **extra}
    if dss is not None:
        return dss.as_validation_context(merged)
    return ValidationContext(**merged)


def _verify_one(
    data: bytes,
    sig: EmbeddedPdfSignature,
    dss: DocumentSecurityStore | None,
    kwargs: dict[str, Any],
    anchors: Sequence[x509.Certificate],
) -> tuple[SignatureReport, bool]:
    status = asyncio.run(
        async_validate_pdf_signature(
            sig,
            signer_validation_context=_context(dss, kwargs),
            ts_validation_context=_context(dss, kwargs),
        )
    )
    ts = status.timestamp_validity
    ts_ok = bool(ts is not None and ts.intact and ts.valid and ts.trusted)
    chain = chain_status(status)
    if chain == "expired" and ts_ok and ts is not None:
        # Signed while the certificate was valid (proved by the timestamp):
        # judge the chain at the timestamp's time, as PAdES long-term validation does.
        status = asyncio.run(
            async_validate_pdf_signature(
                sig,
                signer_validation_context=_context(
                    dss, kwargs, moment=ts.timestamp, retroactive_revinfo=True
                ),
                ts_validation_context=_context(dss, kwargs),
            )
        )
        chain = chain_status(status)

    problems = []
    if (
        not status.intact
        or not status.valid
        or not _padding_ok(sig)
        or not _contents_hex_ok(data, sig)
        or not _embedded_certs_ok(sig, anchors)
        or not _cms_structure_ok(sig)
    ):
        problems.append("signing.verify.bad_signature")
    if chain != "trusted":
        problems.append(
            {"revoked": "signing.verify.revoked", "expired": "signing.verify.expired",
             "unknown": "signing.verify.status_unknown"}.get(chain, "signing.verify.untrusted")
        )
    if not ts_ok:
        problems.append("signing.verify.no_timestamp")
    level = status.modification_level
    coverage = status.coverage
    covers = coverage == SignatureCoverageLevel.ENTIRE_FILE
    unmodified = covers or (
        coverage == SignatureCoverageLevel.ENTIRE_REVISION
        and level in _ALLOWED_LATER
        and status.docmdp_ok is not False
    )
    if not unmodified:
        problems.append("signing.verify.modified")
    cert = from_asn1_cert(status.signing_cert)
    report = SignatureReport(
        field_name=str(sig.field_name),
        signer_name=_common_name(cert),
        signer_subject=cert.subject.rfc4514_string(),
        certificate_serial=format(cert.serial_number, "x"),
        signing_time=status.signer_reported_dt,
        timestamp_time=ts.timestamp if ts_ok and ts is not None else None,
        intact=bool(status.intact),
        signature_valid=bool(status.valid),
        chain_status=chain,
        timestamp_valid=ts_ok,
        unmodified=unmodified,
        covers_whole_file=covers,
        modification_level=level.name if level is not None else None,
        problems=tuple(problems),
    )
    return report, covers
