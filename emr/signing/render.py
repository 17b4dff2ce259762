"""Render one document version (or radiology report) to a PDF ready for signing.

The PDF carries the hospital header, the patient block, the content sections,
a QR code that opens ``<public_url>/verify/<code>``, and one EMPTY signature
field per signer slot. Signers later fill their own field, each as an
incremental update, so earlier signatures stay byte-for-byte intact.

Text is set in DejaVu Sans from Debian's ``fonts-dejavu-core``, embedded (as
a subset) so Vietnamese diacritics print the same everywhere. The layout is
done with fpdf2; the AcroForm signature fields are added by pyHanko, the same
library that signs them.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import qrcode
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.fields import SigFieldSpec, append_signature_field

from emr.i18n import t

from .exceptions import DocumentError

__all__ = ["RenderInput", "SignerSlot", "find_font", "render_document_pdf", "verification_url"]

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),
)
_MM = 72 / 25.4  # PDF points per millimetre


def find_font(bold: bool = False) -> Path:
    """DejaVu Sans (regular or bold) from the system's font folders."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in _FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise DocumentError(
        f"{name} not found (install Debian package fonts-dejavu-core)",
        key="signing.error.render",
        reason=f"{name} (fonts-dejavu-core)",
    )


@dataclass(frozen=True)
class SignerSlot:
    """One signature the document needs, in signing order."""

    field_name: str  # AcroForm field name, e.g. "radiologist"
    role_label: str  # printed above the box, e.g. "Bác sĩ đọc kết quả"
    signer_name: str  # printed under the box


@dataclass(frozen=True)
class RenderInput:
    """Everything printed on a document; plain values, no database objects."""

    hospital_name: str
    patient_name: str
    patient_code: str
    patient_birth_date: dt.date | str | None
    patient_sex: str  # M, F, O or U
    title: str
    document_type: str
    version: int
    sections: Sequence[tuple[str, str]]
    signers: Sequence[SignerSlot]
    verification_code: str
    public_url: str
    department: str = ""
    created_at: dt.datetime | None = None
    extra_lines: Sequence[str] = field(default_factory=tuple)
    # The exam a report is about (accession, procedure, modality, study date, ordered by/in).
    exam: Sequence[tuple[str, str]] = field(default_factory=tuple)
    # Printed in a framed box under the title: what an amendment amends, when that was signed, and why.
    notice: Sequence[str] = field(default_factory=tuple)
    # More of the patient block (address, health insurance card, health ID), as (label, value).
    patient_details: Sequence[tuple[str, str]] = field(default_factory=tuple)
    # The stay a paper is about (a discharge paper: visit code, admission and discharge times, ICD-10 codes).
    visit: Sequence[tuple[str, str]] = field(default_factory=tuple)


def verification_url(public_url: str, code: str) -> str:
    return f"{public_url.rstrip('/')}/verify/{code}"


class _Pdf(FPDF):
    """A4 page whose footer carries the verification address and, on a line of its own, the code.

    The code is what a person types into ``/verify``: it is never wrapped or cut,
    so it gets its own line (with the page number at the right), and the address
    line above wraps inside the margins if a long public URL needs it.
    """

    footer_url = ""
    footer_code = ""

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("DejaVu", size=7)
        self.set_text_color(90, 90, 90)
        self.multi_cell(0, 3.5, self.footer_url, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        page = t("signing.pdf.page", page=self.page_no(), pages="{nb}")
        page_w = self.get_string_width(page) + 2
        self.set_font("DejaVu", "B", 8)
        self.cell(self.epw - page_w, 4, self.footer_code)
        self.set_font("DejaVu", size=7)
        self.cell(page_w, 4, page, align="R")
        self.set_text_color(0, 0, 0)


def _date(value: dt.date | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _qr_png(url: str) -> io.BytesIO:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=4, border=1)
    qr.add_data(url)
    qr.make(fit=True)
    out = io.BytesIO()
    qr.make_image().save(out)
    out.seek(0)
    return out


def _validate(doc: RenderInput) -> None:
    names = [slot.field_name for slot in doc.signers]
    for name in names:
        if not _FIELD_NAME.match(name):
            raise DocumentError(f"bad signature field name {name!r}", key="signing.error.render", reason=name)
    if len(set(names)) != len(names):
        raise DocumentError("duplicate signature field names", key="signing.error.render", reason="field")
    if not re.fullmatch(r"[A-Za-z0-9_-]{4,128}", doc.verification_code):
        raise DocumentError(
            "verification code must be 4-128 URL-safe characters",
            key="signing.error.render",
            reason="verification_code",
        )


def _facts(pdf: FPDF, rows: Sequence[tuple[str, str]], heading: str = "", label_w: float = 50) -> None:
    """(label, value) rows, values bold and wrapped in their column; under a ruled heading if given."""
    if not rows:
        return
    width = pdf.epw
    if heading:
        pdf.ln(2)
        pdf.set_font("DejaVu", "B", 10)
        pdf.cell(width, 6, heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT, border="B")
        pdf.ln(1)
    for label, value in rows:
        pdf.set_font("DejaVu", "", 9)
        pdf.cell(label_w, 5.5, f"{label}:")
        pdf.set_font("DejaVu", "B", 10)
        pdf.multi_cell(width - label_w, 5.5, value or "—", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if heading:
        pdf.ln(1)


def render_document_pdf(doc: RenderInput) -> bytes:
    """The PDF of ``doc`` with empty signature fields named after its signer slots."""
    _validate(doc)
    url = verification_url(doc.public_url, doc.verification_code)
    pdf = _Pdf(format="A4", unit="mm")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=21)
    pdf.add_font("DejaVu", "", str(find_font()))
    pdf.add_font("DejaVu", "B", str(find_font(bold=True)))
    pdf.set_title(doc.title)
    pdf.set_creator("filmless")
    pdf.set_lang("vi")
    if doc.created_at is not None:
        pdf.set_creation_date(doc.created_at)
    pdf.footer_url = t("signing.pdf.verify_where", url=url)
    pdf.footer_code = t("signing.pdf.verify_code", code=doc.verification_code)
    pdf.add_page()

    width = pdf.epw
    qr_size = 26.0
    # Header: hospital and department left, QR code right.
    pdf.image(_qr_png(url), x=pdf.w - pdf.r_margin - qr_size, y=pdf.t_margin, w=qr_size, h=qr_size)
    text_w = width - qr_size - 4
    pdf.set_font("DejaVu", "B", 11)
    pdf.multi_cell(text_w, 5.5, doc.hospital_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 9)
    if doc.department:
        pdf.multi_cell(text_w, 4.5, doc.department, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.multi_cell(
        text_w,
        4.5,
        f"{t('signing.pdf.document_type')}: {doc.document_type} · " + t("signing.pdf.version", version=doc.version),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_y(max(pdf.get_y(), pdf.t_margin + qr_size) + 4)
    pdf.set_font("DejaVu", "B", 15)
    pdf.multi_cell(width, 7.5, doc.title.upper(), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    if doc.notice:
        pdf.set_font("DejaVu", "B", 10)
        pdf.multi_cell(width, 5.2, "\n".join(doc.notice), border=1, padding=2, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)

    # Patient block.
    pdf.set_font("DejaVu", "B", 10)
    pdf.cell(width, 6, t("signing.pdf.patient"), new_x=XPos.LMARGIN, new_y=YPos.NEXT, border="B")
    pdf.ln(1)
    sex = t(f"signing.pdf.sex.{doc.patient_sex}") if doc.patient_sex in "MFOU" and doc.patient_sex else "—"
    rows = (
        (t("signing.pdf.patient_name"), doc.patient_name, t("signing.pdf.patient_code"), doc.patient_code),
        (t("signing.pdf.birth_date"), _date(doc.patient_birth_date), t("signing.pdf.sex"), sex),
    )
    for label1, value1, label2, value2 in rows:
        for label, value, cell_w in ((label1, value1, width * 0.55), (label2, value2, width * 0.45)):
            pdf.set_font("DejaVu", "", 9)
            pdf.cell(28, 5.5, f"{label}:")
            pdf.set_font("DejaVu", "B", 10)
            pdf.cell(cell_w - 28, 5.5, value)
        pdf.ln(5.5)
    _facts(pdf, doc.patient_details, label_w=28)
    _facts(pdf, doc.visit, heading=t("signing.pdf.visit_block"))
    _facts(pdf, doc.exam, heading=t("signing.pdf.exam"))
    for line in doc.extra_lines:
        pdf.set_font("DejaVu", "", 9)
        pdf.multi_cell(width, 5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)

    # Content.
    for heading, text in doc.sections:
        pdf.set_font("DejaVu", "B", 11)
        pdf.multi_cell(width, 5.2, heading, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVu", "", 10)
        pdf.multi_cell(width, 5, text or "—", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1.2)

    # Signature boxes: up to three per row, rows kept whole on a page.
    fields: list[SigFieldSpec] = []
    if doc.signers:
        per_row = min(3, len(doc.signers))
        slot_w = width / per_row
        box_w, box_h, row_h = min(58.0, slot_w - 4), 24.0, 41.0  # role (10) + box + name
        pdf.ln(2)
        if pdf.get_y() + 8 + row_h > pdf.h - 21:
            pdf.add_page()
        pdf.set_font("DejaVu", "B", 10)
        pdf.cell(width, 6, t("signing.pdf.signatures"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        for start in range(0, len(doc.signers), per_row):
            if pdf.get_y() + row_h > pdf.h - 21:
                pdf.add_page()
            top = pdf.get_y() + 1
            for i, slot in enumerate(doc.signers[start : start + per_row]):
                x = pdf.l_margin + i * slot_w
                pdf.set_xy(x, top)
                pdf.set_font("DejaVu", "B", 9)
                pdf.multi_cell(slot_w, 4.5, slot.role_label, align="C", max_line_height=4.5)
                box_x, box_y = x + (slot_w - box_w) / 2, top + 10
                pdf.set_draw_color(150, 150, 150)
                pdf.set_dash_pattern(dash=1, gap=1)
                pdf.rect(box_x, box_y, box_w, box_h)
                pdf.set_dash_pattern()
                pdf.set_draw_color(0, 0, 0)
                pdf.set_xy(x, box_y + box_h + 1.5)
                pdf.set_font("DejaVu", "", 9)
                pdf.multi_cell(slot_w, 4.5, slot.signer_name, align="C")
                fields.append(
                    SigFieldSpec(
                        sig_field_name=slot.field_name,
                        on_page=pdf.page_no() - 1,
                        box=(
                            int(box_x * _MM),
                            int((pdf.h - box_y - box_h) * _MM),
                            int((box_x + box_w) * _MM),
                            int((pdf.h - box_y) * _MM),
                        ),
                    )
                )
            pdf.set_xy(pdf.l_margin, top + row_h)

    try:
        laid_out = bytes(pdf.output())
    except Exception as exc:  # fpdf2 raises plain exceptions for layout failures
        raise DocumentError(f"layout failed: {exc}", key="signing.error.render", reason=str(exc)) from exc
    if not fields:
        return laid_out
    writer = IncrementalPdfFileWriter(io.BytesIO(laid_out))
    for spec in fields:
        append_signature_field(writer, spec)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
