"""Digital signatures and record integrity for filmless (a plain library).

Render a document version to PDF with empty signature fields
(:func:`render_document_pdf`), sign a field as a PAdES B-T/B-LT incremental
update with a PKCS#12 file or a PKCS#11 token (:func:`sign_pdf`), sign the
version's canonical JSON as detached CMS (:func:`sign_json`), verify both
(:func:`verify_pdf`, :func:`verify_json_signature`), wrap a signed report as
DICOM Encapsulated PDF (:func:`encapsulate_pdf`), manage the development PKI
and the trust store, and compute retention dates. No web framework and no
database here: the EMR passes plain values in and stores what comes out.

Typical use by the EMR (one signing step of a document version)::

    context = SigningContext(trust_anchors=load_trust_anchors(anchors_dir),
                             tsa_url=settings.tsa_url, crls=known_crls)
    pdf = render_document_pdf(RenderInput(..., signers=[SignerSlot("radiologist", ...)],
                                          verification_code=code, public_url=settings.public_url))
    with open_token_signer(token_label, pin, key_label) as signer:    # or load_pkcs12_signer(...)
        pdf = sign_pdf(pdf, "radiologist", signer, context)           # next signer: same call, next field
        cms = sign_json(version_as_dict, signer, context)
    # store pdf + cms with the version; verify_pdf(pdf, anchors) on /verify/<code>
    # radiology report: store.upload(encapsulate_pdf(pdf, study_tags))

Errors are :class:`SigningError` subclasses carrying a ``signing.error.*``
message key (``exc.user_message()`` gives the Vietnamese sentence).
"""

from .context import SigningContext, check_certificate
from .devserver import DevPkiServer
from .dicom_pdf import ENCAPSULATED_PDF_STORAGE, encapsulate_pdf, extract_pdf
from .exceptions import (
    CertificateRejected,
    DicomEncapsulationError,
    DocumentError,
    KeyAccessError,
    PkiError,
    SignatureFieldError,
    SigningError,
    TimestampError,
)
from .jsonsig import JsonSignatureReport, canonical_json, sign_json, verify_json_signature
from .pades import sign_pdf, signature_fields
from .pki import (
    DEV_CA_NAME,
    DevPki,
    DevUser,
    TrustAnchor,
    import_trust_anchor,
    init_dev_pki,
    issue_certificate_for_key,
    issue_user_certificate,
    list_trust_anchors,
    list_withdrawn_anchors,
    load_certificates,
    load_dev_pki,
    load_trust_anchors,
    revoke_certificate,
    withdraw_trust_anchor,
)
from .render import RenderInput, SignerSlot, render_document_pdf, verification_url
from .retention import RETENTION_YEARS, retention_class, retention_until
from .signers import DocumentSigner, load_pkcs12_signer
from .token import SOFTHSM_LIBRARY, enroll_dev_token_key, open_token_signer
from .verify import SignatureReport, VerificationReport, verify_pdf

__all__ = [
    "CertificateRejected",
    "DEV_CA_NAME",
    "DevPki",
    "DevPkiServer",
    "DevUser",
    "DicomEncapsulationError",
    "DocumentError",
    "DocumentSigner",
    "ENCAPSULATED_PDF_STORAGE",
    "JsonSignatureReport",
    "KeyAccessError",
    "PkiError",
    "RETENTION_YEARS",
    "RenderInput",
    "SOFTHSM_LIBRARY",
    "SignatureFieldError",
    "SignatureReport",
    "SignerSlot",
    "SigningContext",
    "SigningError",
    "TimestampError",
    "TrustAnchor",
    "VerificationReport",
    "canonical_json",
    "check_certificate",
    "encapsulate_pdf",
    "enroll_dev_token_key",
    "extract_pdf",
    "import_trust_anchor",
    "init_dev_pki",
    "issue_certificate_for_key",
    "issue_user_certificate",
    "list_trust_anchors",
    "list_withdrawn_anchors",
    "load_certificates",
    "load_dev_pki",
    "load_pkcs12_signer",
    "load_trust_anchors",
    "open_token_signer",
    "render_document_pdf",
    "retention_class",
    "retention_until",
    "revoke_certificate",
    "withdraw_trust_anchor",
    "sign_json",
    "sign_pdf",
    "signature_fields",
    "verification_url",
    "verify_json_signature",
    "verify_pdf",
]
