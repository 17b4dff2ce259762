"""Any change after signing makes the document invalid: bytes, pages, updates."""

from __future__ import annotations

import io
import re

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer

from emr.signing import sign_pdf, verify_pdf
from tests.signing.conftest import make_context, signer_for


def _positions(data: bytes) -> list[int]:
    """Spread over the file, plus every region that is easy to get wrong:
    each signature's /Contents (DER and zero padding), the DSS, the tail."""
    picks = set(range(0, len(data), max(1, len(data) // 60)))
    for match in re.finditer(rb"/Contents\s*<([0-9a-fA-F]+)>", data):
        start, end = match.span(1)
        picks.update({start, start + 1, start + 200, (start + end) // 2, end - 10, end - 1})
    for needle in (b"/DSS", b"/CRLs", b"/ByteRange", b"startxref", b"%%EOF"):
        for match in re.finditer(re.escape(needle), data):
            picks.add(match.start() + 1)
    picks.update({len(data) - 1, len(data) - 3, len(data) - 20})
    return sorted(p for p in picks if 0 <= p < len(data))


def test_every_changed_byte_is_detected(signed_twice: bytes, pki) -> None:
    anchors = [pki.ca_certificate()]
    assert verify_pdf(signed_twice, anchors).valid
    missed = []
    for pos in _positions(signed_twice):
        original = signed_twice[pos]
        # a hex digit stays a hex digit (0↔1, a↔b): the nastiest case in /Contents
        changed = original ^ 0x01 if chr(original) in "0123456789abcdefABCDEF" else (original + 1) % 256
        tampered = signed_twice[:pos] + bytes([changed]) + signed_twice[pos + 1 :]
        if verify_pdf(tampered, anchors).valid:
            missed.append((pos, signed_twice[max(0, pos - 20) : pos + 20]))
    assert not missed, missed


def test_appended_bytes_detected(signed_once: bytes, pki) -> None:
    assert not verify_pdf(signed_once + b"\n% harmless?\n", [pki.ca_certificate()]).valid


def _swap_first_pages(writer_source: bytes) -> bytes:
    w = IncrementalPdfFileWriter(io.BytesIO(writer_source))
    pages_ref = w.root.raw_get("/Pages")
    pages = pages_ref.get_object()
    kids = pages["/Kids"]
    kids[0], kids[1] = kids[1], kids[0]
    w.mark_update(pages_ref)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def test_swapped_pages_detected(two_page_pdf: bytes, pki, pki_server) -> None:
    signed = sign_pdf(two_page_pdf, "radiologist", signer_for(pki, "bs.an"), make_context(pki, pki_server))
    anchors = [pki.ca_certificate()]
    assert int(PdfFileReader(io.BytesIO(signed)).root["/Pages"]["/Count"]) >= 2
    assert verify_pdf(signed, anchors).valid
    # as an incremental update after the signature
    swapped = _swap_first_pages(signed)
    report = verify_pdf(swapped, anchors)
    assert not report.valid and "signing.verify.modified" in report.signatures[0].problems
    # as a rewritten file (pages re-ordered, everything re-serialised)
    reader = PdfFileReader(io.BytesIO(swapped))
    rewritten = io.BytesIO()
    copy_into_new_writer(reader).write(rewritten)
    assert not verify_pdf(rewritten.getvalue(), anchors).valid


def test_incremental_update_changing_content_detected(signed_twice: bytes, pki) -> None:
    w = IncrementalPdfFileWriter(io.BytesIO(signed_twice))
    page_ref = w.root["/Pages"].raw_get("/Kids")[0]
    page = page_ref.get_object()
    stream = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 720 Td (Ket luan: UNG THU) Tj ET")
    page["/Contents"] = w.add_object(stream)
    w.update_container(page)
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(out.getvalue(), [pki.ca_certificate()])
    assert not report.valid
    assert all("signing.verify.modified" in s.problems for s in report.signatures)


@pytest.mark.parametrize("field", ["/Annots"])
def test_added_annotation_detected(signed_once: bytes, pki, field: str) -> None:
    w = IncrementalPdfFileWriter(io.BytesIO(signed_once))
    page = w.root["/Pages"].raw_get("/Kids")[0].get_object()
    annot = generic.DictionaryObject({
        generic.NameObject("/Type"): generic.NameObject("/Annot"),
        generic.NameObject("/Subtype"): generic.NameObject("/FreeText"),
        generic.NameObject("/Rect"): generic.ArrayObject([generic.NumberObject(n) for n in (50, 50, 300, 100)]),
        generic.NameObject("/Contents"): generic.TextStringObject("Đã sửa"),
    })
    annots = page.get(field) or generic.ArrayObject()
    annots.append(w.add_object(annot))
    page[generic.NameObject(field)] = annots
    w.update_container(page)
    out = io.BytesIO()
    w.write(out)
    assert not verify_pdf(out.getvalue(), [pki.ca_certificate()]).valid
