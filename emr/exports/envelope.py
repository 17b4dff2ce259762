"""The GIAMDINHHS envelope: each table base64 in FILEHOSO/NOIDUNGFILE, signed in CHUKYDONVI.

The signature is a W3C XMLDSig made by signxml (no canonicalisation of our
own): enveloped, Reference URI="" over the whole envelope, C14N 1.0
(2001), RSA-SHA256 with a SHA-256 digest, the facility certificate (and its
chain) in KeyInfo/X509Data, the Signature element inside CHUKYDONVI.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import InvalidSignature, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureConstructionMethod, SignatureMethod

from .exceptions import ExportError
from .facility_key import FacilityKey
from .xml130 import XSD_DIR

__all__ = [
    "build_envelope",
    "sign_envelope",
    "verify_envelope",
    "read_envelope",
    "VerifiedEnvelope",
    "DS_NS",
    "encode_for_submission",
    "sign_enveloped",
    "envelope_schema_errors",
]

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
C14N_2001 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"


def build_envelope(facility_code: str, tables: Sequence[tuple[str, bytes]], created: datetime) -> etree._Element:
    """The unsigned envelope for one visit's tables ``[(LOAIHOSO, document bytes), ...]``."""
    root = etree.Element("GIAMDINHHS")
    unit = etree.SubElement(root, "THONGTINDONVI")
    etree.SubElement(unit, "MACSKCB").text = facility_code
    info = etree.SubElement(root, "THONGTINHOSO")
    etree.SubElement(info, "NGAYLAP").text = created.strftime("%Y%m%d")
    etree.SubElement(info, "SOLUONGHOSO").text = "1"
    hoso = etree.SubElement(etree.SubElement(info, "DANHSACHHOSO"), "HOSO")
    for kind, document in tables:
        f = etree.SubElement(hoso, "FILEHOSO")
        etree.SubElement(f, "LOAIHOSO").text = kind
        etree.SubElement(f, "NOIDUNGFILE").text = base64.b64encode(document).decode("ascii")
    sig = etree.SubElement(root, "CHUKYDONVI")
    etree.SubElement(sig, f"{{{DS_NS}}}Signature", Id="placeholder", nsmap={"ds": DS_NS})
    return root


def sign_envelope(envelope: etree._Element, key: FacilityKey) -> bytes:
    """The signed envelope as UTF-8 bytes (never re-serialise it: that would break the signature)."""
    return sign_enveloped(envelope, key)


def sign_enveloped(document: etree._Element, key: FacilityKey) -> bytes:
    """Enveloped XMLDSig (URI="", C14N 1.0, RSA-SHA256, X509 certificates) at the placeholder or the end."""
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
    )
    certs = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (key.certificate, *key.chain)]
    signed = signer.sign(document, key=key.key, cert=certs)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


@dataclass
class VerifiedEnvelope:
    facility_code: str
    created: str
    tables: dict[str, bytes]  # LOAIHOSO → decoded table document
    signer: x509.Certificate | None


def read_envelope(data: bytes) -> tuple[etree._Element, dict[str, bytes]]:
    """Parse an envelope and decode its tables (no signature check)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.fromstring(data, parser)
    tables: dict[str, bytes] = {}
    for f in root.iterfind("THONGTINHOSO/DANHSACHHOSO/HOSO/FILEHOSO"):
        tables[f.findtext("LOAIHOSO") or ""] = base64.b64decode(f.findtext("NOIDUNGFILE") or "", validate=True)
    return root, tables


def encode_for_submission(envelope: bytes) -> bytes:
    """The portal takes the signed envelope base64-encoded once more."""
    return base64.b64encode(envelope)


def envelope_schema_errors(data: bytes) -> list[str]:
    schema = etree.XMLSchema(etree.parse(str(XSD_DIR / "giamdinhhs.xsd")))
    doc = etree.fromstring(data)
    return [] if schema.validate(doc) else [f"line {e.line}: {e.message}" for e in schema.error_log]


def verify_envelope(
    data: bytes, ca_pem_file: str | Path | None = None, certificate: x509.Certificate | None = None
) -> VerifiedEnvelope:
    """Check the signature (chain to the CA in ``ca_pem_file``, or a pinned ``certificate``); decode the tables."""
    verifier = XMLVerifier()
    kwargs: dict[str, object] = {}
    if certificate is not None:
        kwargs["x509_cert"] = certificate
    elif ca_pem_file is not None:
        kwargs["ca_pem_file"] = str(ca_pem_file)
    try:
        result = verifier.verify(data, expect_references=1, **kwargs)  # type: ignore[arg-type]
    except InvalidSignature as exc:
        raise ExportError(f"envelope signature invalid: {exc}", key="exports.error.signature_invalid") from exc
    root, tables = read_envelope(data)
    signed = result.signed_xml if not isinstance(result, list) else result[0].signed_xml
    assert signed is not None
    return VerifiedEnvelope(
        facility_code=root.findtext("THONGTINDONVI/MACSKCB") or "",
        created=root.findtext("THONGTINHOSO/NGAYLAP") or "",
        tables=tables,
        signer=getattr(result, "signing_cert", None),
    )
