"""PAdES signing of a rendered document: one signer fills one field.

Each call appends an incremental update to the PDF, so the bytes covered by
earlier signatures are untouched and every signature stays verifiable. The
signature is PAdES baseline B-T (CAdES detached CMS + an RFC 3161 timestamp
over the signature value) and, when revocation data is available, B-LT: the
CRLs/OCSP answers used to check the signer (and the TSA) are stored in the
document security store. The first signature of a document certifies it
(DocMDP: only filling the remaining signature fields is allowed afterwards).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

from pyhanko.pdf_utils.font.opentype import GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.signers.pdf_signer import DSSContentSettings, SigDSSPlacementPreference
from pyhanko.sign.timestamps import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper
from pyhanko.stamp import TextStampStyle

from emr.core.clock import facility_zone
from emr.i18n import t

from .context import SigningContext, check_certificate
from .exceptions import CertificateRejected, DocumentError, SignatureFieldError, SigningError, TimestampError
from .render import find_font
from .signers import DocumentSigner

__all__ = ["sign_pdf", "signature_fields"]

log = logging.getLogger(__name__)

_FONT = None
# Room for the CMS (signer + CA certificates, timestamp token with the TSA's
# chain). Fixed so pyHanko skips its size-estimating dry-run signature.
_RESERVED = 24 * 1024


def _too_large(exc: Exception) -> bool:
    """pyHanko's ways of saying the CMS did not fit in the bytes reserved for it (PdfError while writing,
    or SigningError "Final ByteRange payload larger than expected" once the signature is made)."""
    text = str(exc).lower()
    return "reserved" in text or "too large" in text or "larger than expected" in text


# Characters a stamp can need: ASCII, Latin-1/Extended-A, ơ/ư, combining
# marks and the precomposed Vietnamese letters (U+1EA0–U+1EF9).
_STAMP_UNICODES = [
    *range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x1A0, 0x1B1), *range(0x300, 0x324),
    *range(0x1EA0, 0x1EFA), *range(0x2010, 0x2028), 0x20AB,
]


def _stamp_font() -> str:
    """DejaVu Sans cut down once per process to what Vietnamese stamps need.

    pyHanko subsets the stamp font on every signature; starting from the
    whole 750 kB DejaVu Sans that costs ≈300 ms, from this ≈40 kB cut a few ms.
    """
    from fontTools import subset
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.scaleUpem import scale_upem

    target = Path(tempfile.gettempdir()) / f"filmless-stamp-font-v2-{os.getuid()}.ttf"
    if not target.is_file():
        font = TTFont(str(find_font()))
        options = subset.Options(layout_closure=False, hinting=False)
        options.drop_tables += ["GPOS", "GDEF", "GSUB"]
        subsetter = subset.Subsetter(options=options)
        subsetter.populate(unicodes=_STAMP_UNICODES)
        subsetter.subset(font)
        # pyHanko writes glyph widths in font units into /W, which PDF reads
        # per 1000 em: with DejaVu's 2048 units the stamp text would be spaced
        # out twice too wide. A 1000-unit em makes both agree.
        scale_upem(font, 1000)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        font.save(str(partial))
        os.replace(partial, target)
    return str(target)


def _stamp_style(heading: str | None = None, name: str | None = None) -> TextStampStyle:
    """The visible stamp in the signature box, laid out like a signature block: ``heading`` (the signer's
    capacity, e.g. "KT. TRƯỞNG KHOA" / "PHÓ TRƯỞNG KHOA") first, then the signature, then ``name`` (the
    signer's full name, for a slot whose name could not be printed before it was signed). The text is a
    %-format: a literal % in the heading or name is doubled."""
    global _FONT
    if _FONT is None:
        _FONT = GlyphAccumulatorFactory(_stamp_font(), font_size=8)
    # %(ts_local)s, not pyHanko's %(ts)s: pyHanko formats "ts" in the server's zone (often UTC).
    text = t("signing.stamp", signer="%(signer)s", ts="%(ts_local)s")
    if heading:
        text = heading.replace("%", "%%") + "\n" + text
    if name:
        text += "\n" + " ".join(name.split()).replace("%", "%%")
    return TextStampStyle(
        stamp_text=text,
        text_box_style=TextBoxStyle(font=_FONT, font_size=8),
        timestamp_format="%d/%m/%Y %H:%M:%S %z",
        border_width=1,
    )


@functools.lru_cache(maxsize=8)
def _timestamper(url: str, timeout: float) -> RequestsHTTPTimeStamper:
    """One client per TSA: it caches the dummy token pyHanko sizes signatures with."""
    return RequestsHTTPTimeStamper(url, timeout=timeout)


def _reader(pdf: bytes) -> IncrementalPdfFileWriter:
    if not pdf.startswith(b"%PDF-"):
        raise DocumentError("input is not a PDF", key="signing.error.document")
    try:
        return IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except (PdfError, ValueError, KeyError, IndexError) as exc:
        raise DocumentError(f"unreadable PDF: {exc}", key="signing.error.document") from exc


def signature_fields(pdf: bytes) -> dict[str, bool]:
    """Signature field name → already signed?, in document order."""
    return _fields(_reader(pdf))


def _fields(writer: IncrementalPdfFileWriter) -> dict[str, bool]:
    try:
        return {
            name: value is not None
            for name, value, _ref in fields.enumerate_sig_fields(writer.prev, filled_status=None)
        }
    except (PdfError, ValueError, KeyError) as exc:
        raise DocumentError(f"unreadable PDF: {exc}", key="signing.error.document") from exc


def sign_pdf(
    pdf: bytes,
    field_name: str,
    signer: DocumentSigner,
    context: SigningContext,
    *,
    reason: str | None = None,
    stamp_heading: str | None = None,
    stamp_name: str | None = None,
) -> bytes:
    """Sign ``field_name`` of ``pdf``; returns the PDF with the signature appended. ``stamp_heading`` is
    printed first in the signature's visible stamp (the signer's capacity, e.g. "KT. TRƯỞNG KHOA"), and
    ``stamp_name`` (the signer's full name) last, under the signature.

    Refuses (:class:`CertificateRejected`) before touching the key when the
    signer's certificate is expired, revoked, not yet valid, or does not chain
    to ``context.trust_anchors``. Raises :class:`SignatureFieldError` when the
    field does not exist or is already signed, :class:`TimestampError` when
    the TSA does not answer.
    """
    writer = _reader(pdf)
    existing = _fields(writer)
    if field_name not in existing:
        raise SignatureFieldError(
            f"no signature field {field_name!r}", key="signing.error.field_missing", field=field_name
        )
    if existing[field_name]:
        raise SignatureFieldError(
            f"field {field_name!r} is already signed", key="signing.error.field_signed", field=field_name
        )
    check_certificate(signer.certificate, context, signer.chain)

    first = not any(existing.values())
    vc = context.validation_context(signer.chain)
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        reason=reason,
        location=context.location,
        name=signer.subject_name,
        certify=first,
        docmdp_permissions=MDPPerm.FILL_FORMS,
        embed_validation_info=context.embed_revocation_info,
        validation_context=vc,
        signer_key_usage=set(context.key_usage),
        # Revocation data goes into the signed revision itself: no unsigned
        # revision follows, so every byte of the file stays covered.
        dss_settings=DSSContentSettings(
            include_vri=False, placement=SigDSSPlacementPreference.TOGETHER_WITH_SIGNATURE
        ),
    )
    timestamper = _timestamper(context.tsa_url, context.tsa_timeout) if context.tsa_url else None
    pdf_signer = signers.PdfSigner(
        meta, signer=signer.signer, timestamper=timestamper, stamp_style=_stamp_style(stamp_heading, stamp_name)
    )
    out = io.BytesIO()
    # The stamp's time in the facility's zone (pyHanko would use the server's, often UTC).
    stamp = {"ts_local": datetime.now(facility_zone()).strftime("%d/%m/%Y %H:%M:%S %z")}
    try:
        try:
            pdf_signer.sign_pdf(writer, output=out, bytes_reserved=_RESERVED, appearance_text_params=stamp)
        except (PdfError, PyHankoSigningError) as exc:
            # A CMS larger than the room reserved (the CA's CRL embedded in it grows with every revocation):
            # sign again and let pyHanko size the room from a dry run.
            if not _too_large(exc):
                raise
            log.info("signature larger than %d bytes (%s); signing again with the room sized by pyHanko",
                     _RESERVED, exc)
            writer, out = _reader(pdf), io.BytesIO()
            pdf_signer.sign_pdf(writer, output=out, appearance_text_params=stamp)
    except TimestampRequestError as exc:
        raise TimestampError(
            f"TSA {context.tsa_url} failed: {exc}", key="signing.error.tsa", url=context.tsa_url
        ) from exc
    except PyHankoSigningError as exc:
        # pre-sign validation of the TSA certificate or revocation data
        cause = exc.__cause__
        if cause is not None and type(cause).__module__.startswith("pyhanko_certvalidator"):
            raise CertificateRejected(
                f"validation while signing failed: {exc}", key="signing.error.cert_status_unknown",
                subject=signer.subject_name,
            ) from exc
        raise SigningError(f"signing failed: {exc}") from exc
    except OSError as exc:  # network errors of the TSA client
        raise TimestampError(
            f"TSA {context.tsa_url} failed: {exc}", key="signing.error.tsa", url=context.tsa_url
        ) from exc
    return out.getvalue()
