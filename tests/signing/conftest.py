"""Fixtures for the signing tests: a development PKI with a local TSA/CRL
server, rendered documents, signers, and a SoftHSM2 token in a temp folder."""

from __future__ import annotations

import datetime as dt

import pytest

from emr.signing import (
    DevPki,
    DevPkiServer,
    DocumentSigner,
    RenderInput,
    SignerSlot,
    SigningContext,
    load_pkcs12_signer,
    render_document_pdf,
)

# The session PKI and token fixtures (pki_server, pki, softhsm_token) live in
# tests/signing_fixtures.py, registered from tests/conftest.py.
from tests.signing_fixtures import TOKEN_LABEL, TOKEN_PIN  # noqa: F401 - re-exported


def make_context(pki: DevPki, server: DevPkiServer, **overrides: object) -> SigningContext:
    """Offline by default: the CRL is handed over, nothing is fetched."""
    values: dict[str, object] = {
        "trust_anchors": [pki.ca_certificate()],
        "tsa_url": server.tsa_url,
        "crls": [pki.crl()],
        "allow_fetching": False,
    }
    values.update(overrides)
    return SigningContext(**values)  # type: ignore[arg-type]


@pytest.fixture
def context(pki: DevPki, pki_server: DevPkiServer) -> SigningContext:
    return make_context(pki, pki_server)


def signer_for(pki: DevPki, user_id: str) -> DocumentSigner:
    user = pki.users[user_id]
    return load_pkcs12_signer(user.p12_bytes(), user.password())


def document(pages: int = 1, code: str = "Vf7kQ2mZ") -> RenderInput:
    body = "Nhu mô não hai bên bán cầu không thấy bất thường tỷ trọng. Hệ thống não thất không giãn."
    return RenderInput(
        hospital_name="Bệnh viện Đa khoa tỉnh Thừa Thiên Huế",
        department="Khoa Chẩn đoán hình ảnh",
        patient_name="Nguyễn Thị Hồng Nhung",
        patient_code="BN000123",
        patient_birth_date=dt.date(1985, 3, 14),
        patient_sex="F",
        title="Kết quả chụp cắt lớp vi tính",
        document_type="Phiếu kết quả chẩn đoán hình ảnh",
        version=1,
        sections=[
            ("Kỹ thuật", "Chụp CLVT sọ não không tiêm thuốc cản quang, lát cắt 5 mm."),
            ("Mô tả", "\n".join([body] * (1 if pages == 1 else 60 * (pages - 1)))),
            ("Kết luận", "Chưa phát hiện bất thường trên phim CLVT sọ não."),
        ],
        signers=[
            SignerSlot("radiologist", "Bác sĩ đọc kết quả", "BS. Nguyễn Văn An"),
            SignerSlot("head", "Trưởng khoa", "BS. Trần Thị Bình"),
        ],
        verification_code=code,
        public_url="https://emr.benhvien.example",
    )


@pytest.fixture(scope="session")
def report_pdf() -> bytes:
    return render_document_pdf(document())


@pytest.fixture(scope="session")
def two_page_pdf() -> bytes:
    return render_document_pdf(document(pages=2))


@pytest.fixture(scope="session")
def signed_once(report_pdf: bytes, pki: DevPki, pki_server: DevPkiServer) -> bytes:
    from emr.signing import sign_pdf

    return sign_pdf(report_pdf, "radiologist", signer_for(pki, "bs.an"), make_context(pki, pki_server))


@pytest.fixture(scope="session")
def signed_twice(signed_once: bytes, pki: DevPki, pki_server: DevPkiServer) -> bytes:
    from emr.signing import sign_pdf

    return sign_pdf(signed_once, "head", signer_for(pki, "bs.binh"), make_context(pki, pki_server))
