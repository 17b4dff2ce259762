"""The A5 slip a patient takes home instead of film: QR code, short link, PIN, expiry.

fpdf2 with DejaVu Sans (Debian fonts-dejavu-core) for Vietnamese diacritics;
the QR code is drawn from qrcode's PIL image. Nothing here touches the
database: the caller passes what to print.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import qrcode
from fpdf import FPDF

from emr.core.clock import to_local
from emr.core.dicom_dates import display_da

from ..i18n import t

__all__ = ["FONT", "FONT_BOLD", "render_slip"]

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FONT_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _date(dicom_date: str) -> str:
    return display_da(dicom_date) if dicom_date else ""


def render_slip(
    *,
    hospital: str,
    patient_name: str,
    patient_code: str,
    procedure: str,
    study_date: str,
    url: str,
    code: str,
    pin: str,
    expires_at: datetime,
) -> bytes:
    """The slip as PDF bytes (A5 portrait)."""
    pdf = FPDF(format=(148, 210), unit="mm")  # A5 (ISO 216) in mm
    pdf.set_title(t("share.slip.title"))
    pdf.set_creator("filmless")
    pdf.set_auto_page_break(False)
    pdf.add_font("DejaVu", "", str(FONT))
    pdf.add_font("DejaVu", "B", str(FONT_BOLD))
    pdf.add_page()
    width = pdf.w - 2 * pdf.l_margin
    pdf.set_font("DejaVu", "B", 11)
    pdf.multi_cell(width, 6, hospital.upper(), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 13)
    pdf.multi_cell(width, 7, t("share.slip.title"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("DejaVu", "", 10.5)
    for line in (
        t("share.slip.patient", name=patient_name, code=patient_code),
        t("share.slip.procedure", procedure=procedure),
        t("share.slip.date", date=_date(study_date)),
    ):
        pdf.multi_cell(width, 5.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2, box_size=8)
    qr.add_data(url)
    qr.make(fit=True)
    image = qr.make_image(fill_color="black", back_color="white").get_image()
    size = 60.0
    pdf.image(image, x=(pdf.w - size) / 2, y=pdf.get_y(), w=size, h=size)
    pdf.set_y(pdf.get_y() + size + 2)
    pdf.multi_cell(width, 5.5, t("share.slip.scan"), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "B", 10.5)
    pdf.multi_cell(width, 6, url, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("DejaVu", "B", 16)
    pdf.multi_cell(width, 9, t("share.slip.pin", pin=pin), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10.5)
    expires_local = to_local(expires_at).strftime("%d/%m/%Y")
    pdf.multi_cell(width, 6, t("share.slip.expires", date=expires_local), align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(width, 4.5, t("share.slip.note"), align="C", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
