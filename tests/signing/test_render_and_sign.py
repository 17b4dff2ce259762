"""Rendering, PAdES signing with PKCS#12, multi-signer order, refusals."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from emr.signing import (
    CertificateRejected,
    DocumentError,
    KeyAccessError,
    SignatureFieldError,
    TimestampError,
    init_dev_pki,
    issue_user_certificate,
    load_pkcs12_signer,
    render_document_pdf,
    revoke_certificate,
    sign_pdf,
    signature_fields,
    verify_pdf,
)
from tests.helpers import free_port
from tests.signing.conftest import document, make_context, signer_for


def test_render_has_empty_named_fields_and_embedded_unicode_font(report_pdf: bytes) -> None:
    assert signature_fields(report_pdf) == {"radiologist": False, "head": False}
    assert b"/FontFile2" in report_pdf  # TrueType program embedded (subset)
    assert b"DejaVuSans" in report_pdf
    reader = PdfFileReader(io.BytesIO(report_pdf))
    assert int(reader.root["/Pages"]["/Count"]) == 1


def test_render_rejects_bad_field_names() -> None:
    from dataclasses import replace

    from emr.signing import SignerSlot

    bad = replace(document(), signers=[SignerSlot("a.b", "Bác sĩ", "X")])
    with pytest.raises(DocumentError):
        render_document_pdf(bad)


def test_pkcs12_round_trip_is_pades_b_lt_in_one_revision(report_pdf: bytes, signed_once: bytes, pki) -> None:
    assert signed_once.startswith(report_pdf)  # incremental update
    before = PdfFileReader(io.BytesIO(report_pdf)).xrefs.total_revisions
    reader = PdfFileReader(io.BytesIO(signed_once))
    assert reader.xrefs.total_revisions == before + 1  # signature and DSS together
    assert "/DSS" in reader.root and len(reader.root["/DSS"]["/CRLs"]) >= 1
    report = verify_pdf(signed_once, [pki.ca_certificate()])
    assert report.valid, report
    (sig,) = report.signatures
    assert sig.field_name == "radiologist"
    assert sig.signer_name == "BS. Nguyễn Văn An"
    assert sig.chain_status == "trusted"
    assert sig.timestamp_valid and sig.timestamp_time is not None
    assert abs(sig.timestamp_time - dt.datetime.now(dt.UTC)) < dt.timedelta(hours=1)
    assert sig.covers_whole_file and sig.unmodified


def test_two_signers_in_order_both_valid(signed_once: bytes, signed_twice: bytes, pki) -> None:
    assert signed_twice.startswith(signed_once)
    assert signature_fields(signed_twice) == {"radiologist": True, "head": True}
    report = verify_pdf(signed_twice, [pki.ca_certificate()])
    assert report.valid, report
    first, second = report.signatures
    assert (first.signer_name, second.signer_name) == ("BS. Nguyễn Văn An", "BS. Trần Thị Bình")
    assert first.modification_level == "FORM_FILLING" and not first.covers_whole_file
    assert second.covers_whole_file
    assert first.timestamp_time <= second.timestamp_time


def test_signed_field_and_unknown_field_refused(signed_once: bytes, pki, context) -> None:
    with pytest.raises(SignatureFieldError) as exc:
        sign_pdf(signed_once, "radiologist", signer_for(pki, "bs.cuong"), context)
    assert exc.value.key == "signing.error.field_signed"
    with pytest.raises(SignatureFieldError) as exc:
        sign_pdf(signed_once, "nurse", signer_for(pki, "bs.cuong"), context)
    assert exc.value.key == "signing.error.field_missing"
    with pytest.raises(DocumentError):
        sign_pdf(b"not a pdf", "head", signer_for(pki, "bs.cuong"), context)


def test_wrong_pkcs12_password_refused(pki) -> None:
    with pytest.raises(KeyAccessError) as exc:
        load_pkcs12_signer(pki.users["bs.an"].p12_bytes(), "wrong password")
    assert "Mật khẩu" in exc.value.user_message()


def test_revoked_certificate_refused(report_pdf: bytes, pki, pki_server) -> None:
    user = issue_user_certificate(pki, "bs.revoked", "BS. Bị Thu Hồi")
    signer = load_pkcs12_signer(user.p12_bytes(), user.password())
    revoke_certificate(pki, user.certificate().serial_number)
    with pytest.raises(CertificateRejected) as exc:
        sign_pdf(report_pdf, "radiologist", signer, make_context(pki, pki_server))
    assert exc.value.key == "signing.error.cert_revoked"
    assert "thu hồi" in exc.value.user_message() and "BS. Bị Thu Hồi" in exc.value.user_message()


def test_revocation_found_through_the_crl_distribution_point(report_pdf: bytes, pki, pki_server) -> None:
    user = issue_user_certificate(pki, "bs.revoked2", "BS. Thu Hồi Qua Mạng")
    signer = load_pkcs12_signer(user.p12_bytes(), user.password())
    online = make_context(pki, pki_server, crls=(), allow_fetching=True)
    good = sign_pdf(report_pdf, "radiologist", signer_for(pki, "bs.an"), online)
    assert verify_pdf(good, [pki.ca_certificate()]).valid  # CRL fetched, embedded (B-LT)
    revoke_certificate(pki, user.certificate().serial_number)
    with pytest.raises(CertificateRejected) as exc:
        sign_pdf(report_pdf, "radiologist", signer, online)
    assert exc.value.key == "signing.error.cert_revoked"


def test_expired_certificate_refused(report_pdf: bytes, pki, context) -> None:
    now = dt.datetime.now(dt.UTC)
    user = issue_user_certificate(
        pki, "bs.expired", "BS. Hết Hạn",
        not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=1),
    )
    signer = load_pkcs12_signer(user.p12_bytes(), user.password())
    with pytest.raises(CertificateRejected) as exc:
        sign_pdf(report_pdf, "radiologist", signer, context)
    assert exc.value.key == "signing.error.cert_expired"
    assert "hết hạn" in exc.value.user_message()


def test_untrusted_certificate_refused(report_pdf: bytes, tmp_path, context) -> None:
    other = init_dev_pki(tmp_path / "other", users=[("bs.la", "BS. Người Lạ")])
    signer = load_pkcs12_signer(other.users["bs.la"].p12_bytes(), other.users["bs.la"].password())
    with pytest.raises(CertificateRejected) as exc:
        sign_pdf(report_pdf, "radiologist", signer, context)
    assert exc.value.key == "signing.error.cert_untrusted"


def test_unreachable_tsa_is_a_clear_error(report_pdf: bytes, pki, pki_server) -> None:
    dead = make_context(pki, pki_server, tsa_url=f"http://127.0.0.1:{free_port()}/tsa", tsa_timeout=2)
    with pytest.raises(TimestampError) as exc:
        sign_pdf(report_pdf, "radiologist", signer_for(pki, "bs.an"), dead)
    assert exc.value.key == "signing.error.tsa"


def test_verify_without_the_anchor_is_untrusted(signed_once: bytes) -> None:
    report = verify_pdf(signed_once, [])
    assert not report.valid
    assert report.signatures[0].chain_status == "untrusted"
    assert "signing.verify.untrusted" in report.signatures[0].problems


def test_unsigned_and_garbage_input_reported_not_raised(report_pdf: bytes, pki) -> None:
    assert verify_pdf(report_pdf, [pki.ca_certificate()]).problems == ("signing.verify.no_signatures",)
    assert verify_pdf(b"hello", [pki.ca_certificate()]).problems == ("signing.verify.unreadable",)
    assert not verify_pdf(b"%PDF-1.7\n garbage", [pki.ca_certificate()]).valid


def test_text_of_a_paper_reads_each_label_with_its_value(tmp_path) -> None:
    """Copied, searched or read aloud, the exam block gives each label followed by its value: the facts are
    laid out so that text extraction (pdftotext, screen readers) does not gather the labels in one column
    and the values in another."""
    import dataclasses
    import re
    import subprocess

    exam = [("Số phiếu chụp (Accession)", "261208000001"), ("Kỹ thuật", "CT sọ não không tiêm"), ("Loại máy", "CT"),
            ("Ngày chụp", "08/12/2026"), ("Bác sĩ chỉ định", "Nguyễn Văn An"), ("Khoa chỉ định", "Khoa Khám bệnh")]
    path = tmp_path / "report.pdf"
    path.write_bytes(render_document_pdf(dataclasses.replace(document(), exam=exam)))
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True, text=True).stdout
    for label, value in exam:
        assert re.search(re.escape(label) + r":\s*" + re.escape(value), text), (label, text)


def test_a_signature_larger_than_the_room_reserved_is_signed_again_not_refused(
    report_pdf: bytes, pki: Any, pki_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CMS carries the CA's CRL, which grows with every revocation: past the fixed room reserved for it,
    pyHanko said "Final ByteRange payload larger than expected" and every signature failed ("Không ký được
    văn bản") until the room was sized again. A room far too small stands for a CRL grown large."""
    import emr.signing.pades as pades

    monkeypatch.setattr(pades, "_RESERVED", 2048)
    pdf = sign_pdf(report_pdf, "radiologist", signer_for(pki, "bs.an"), make_context(pki, pki_server))
    assert signature_fields(pdf) == {"radiologist": True, "head": False}
    assert verify_pdf(pdf, [pki.ca_certificate()]).valid
