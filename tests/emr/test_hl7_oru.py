"""ORU^R01 after signing (issue 15 §5): a radiology report ordered by the HIS over HL7 is signed for real
(PKCS#12, dev PKI with its TSA) and goes through the durable outbox to a real MLLP stand-in receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emr import Actor, EmrSettings, create_app, upgrade_database
from emr.access.users import create_user
from emr.core.settings import Hl7Settings
from emr.db import make_engine, make_session_factory
from emr.documents import service as documents
from emr.hl7.messages import replay
from emr.hl7.mllp import start_listener
from emr.imaging.order_visit import visit_for_report
from emr.models import Document, DocumentVersion, Hl7Message, ImagingOrder, OutboxMessage
from emr.models.signing import SignedArtifact
from emr.outbox import HandlerContext, run_due
from emr.patients import encounters
from emr.signing import service as signing
from filmless.wiring import viewer_extension
from tests.signing_fixtures import trust_dev_pki
from tests.standins.mllp_receiver import MllpReceiver

from .hl7_support import mllp, msa, orm

SETUP = Actor(None, "test-setup", "admin", "127.0.0.1")
CONTENT = {
    "technique": "Chụp CT 64 dãy, không tiêm thuốc cản quang.",
    "findings": "Không thấy máu tụ nội sọ.\nHệ thống não thất cân đối.",
    "conclusion": "Chưa phát hiện tổn thương cấp tính | theo dõi ^ lâm sàng",
}


@pytest.fixture
def receiver() -> Iterator[MllpReceiver]:
    with MllpReceiver() as r:
        yield r


@pytest.fixture
def world(tmp_path: Path, pki: Any, pki_server: Any, receiver: MllpReceiver) -> Iterator[dict[str, Any]]:
    data = tmp_path / "data"
    trust_dev_pki(pki, data)
    settings = EmrSettings(
        data_dir=data, database_url=f"sqlite:///{tmp_path / 'emr.sqlite3'}", secret_key_file=tmp_path / "key",
        public_url="https://emr.benhvien.example", facility_code="79001", tsa_url=pki_server.tsa_url,
        hl7=Hl7Settings(receiver=f"127.0.0.1:{receiver.port}", send_timeout=5.0),
    )
    upgrade_database(settings)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    app = create_app(settings, test_config={"TESTING": True, "EMR_ENGINE": engine}, extensions=[viewer_extension(None)])
    listener = start_listener(settings, factory, port=0)
    try:
        with factory() as session:
            dep = encounters.ensure_department(session, "CDHA", "Khoa Chẩn đoán hình ảnh")
            rad = create_user(session, SETUP, "bschan1", "correct horse battery", "radiologist",
                              "BS. Trần Thị Bích Ngọc", department_id=dep.id, practising_cert_no="9/HCM-CCHN")
            user = pki.users["bs.an"]
            signing.register_pkcs12(session, SETUP, rad.id, user.p12_bytes(), user.password())
            yield {"settings": settings, "factory": factory, "listener": listener, "app": app,
                   "radiologist": Actor(rad.id, rad.username, rad.role, "127.0.0.1"), "password": user.password()}
    finally:
        listener.stop()
        engine.dispose()


def _segments(message: bytes) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for seg in message.decode("utf-8").split("\r"):
        fields = seg.split("|")
        out.setdefault(fields[0], []).append(fields)
    return out


def test_signed_report_goes_to_the_his_as_oru(world: dict[str, Any], receiver: MllpReceiver) -> None:
    settings, factory = world["settings"], world["factory"]
    ack = mllp(world["listener"].port, orm("ORU-O1", "PL-900", "HIS900", name="Lý^Hải^Thanh"))
    assert msa(ack)[1] == "AA"
    config = world["app"].extensions["emr.signing_config"]
    assert config.on_report_signed, "create_app wires the HL7 hook when FILMLESS_HL7_RECEIVER is set"
    context = HandlerContext(session_factory=factory, settings=settings)
    with factory() as session:
        order = session.scalar(select(ImagingOrder).order_by(ImagingOrder.id.desc()))
        actor = world["radiologist"]
        visit = visit_for_report(session, actor, order)
        doc = documents.create_document(session, actor, {"encounter_id": visit.id, "form_type": "radiology_report",
                                                         "order_id": order.id, "content": CONTENT})
        version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
        artifact = signing.sign_document(session, actor, doc.id, config, method="pkcs12", secret=world["password"],
                                         expected_sha256=version.content_sha256)
        assert artifact.complete
        queued = session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "hl7.oru"))
        assert queued is not None and queued.status == "waiting"  # committed with the signature
        accession, pdf_sha256, doc_id, verify = (order.accession_number, artifact.pdf_sha256, doc.id,
                                                 artifact.verification_code)
    deliveries = run_due(context, kinds=["hl7.oru"])
    assert [d.outcome for d in deliveries] == ["sent"], deliveries
    assert len(receiver.received) == 1
    seg = _segments(receiver.received[0])
    assert seg["MSH"][0][8] == "ORU^R01^ORU_R01" and seg["MSH"][0][17] == "UNICODE UTF-8"
    assert seg["PID"][0][3].startswith("HIS900^^^BV01^PI~BN") and seg["PID"][0][5] == "Lý^Hải^Thanh"
    obr = seg["OBR"][0]
    assert obr[2] == "PL-900^HIS" and obr[3] == f"{accession}^FILMLESS" and obr[25] == "F"
    assert obr[32] == "BS. Trần Thị Bích Ngọc"
    obx = {f[3].split("^")[0]: f for f in seg["OBX"]}
    # The observations' names (from vi.json) are what they were when written in the code.
    assert [f[3] for f in seg["OBX"]] == ["TECHNIQUE^Kỹ thuật^L", "FINDINGS^Mô tả^L", "CONCLUSION^Kết luận^L",
                                          "PDF^Báo cáo đã ký số^L", "PDF-SHA256^SHA-256 của PDF^L",
                                          "VERIFY^Tra cứu chữ ký^L"]
    assert obx["FINDINGS"][2] == "FT"
    assert obx["FINDINGS"][5] == "Không thấy máu tụ nội sọ.\\.br\\Hệ thống não thất cân đối."
    assert obx["CONCLUSION"][5] == "Chưa phát hiện tổn thương cấp tính \\F\\ theo dõi \\S\\ lâm sàng"
    assert obx["PDF"][2] == "RP" and obx["PDF"][5] == (
        f"https://emr.benhvien.example/signing/documents/{doc_id}/versions/1/pdf^FILMLESS^AP^PDF")
    assert obx["PDF-SHA256"][5] == pdf_sha256
    assert verify in obx["VERIFY"][5]
    # An amendment, signed, goes as a corrected result (OBR-25 / OBX-11 "C").
    with factory() as session:
        amended = documents.amend_document(session, world["radiologist"], doc_id,
                                           {**CONTENT, "conclusion": "Bổ sung: nang màng nhện nhỏ thái dương trái."},
                                           "Bổ sung kết luận")
        v2 = max(amended.versions, key=lambda v: v.number)
        signing.sign_document(session, world["radiologist"], doc_id, config, method="pkcs12",
                              secret=world["password"], expected_sha256=v2.content_sha256)
    assert [d.outcome for d in run_due(context, kinds=["hl7.oru"])] == ["sent"]
    corrected = _segments(receiver.received[1])
    assert corrected["OBR"][0][25] == "C" and all(f[11] == "C" for f in corrected["OBX"])
    assert "nang màng nhện" in {f[3].split("^")[0]: f for f in corrected["OBX"]}["CONCLUSION"][5]
    with factory() as session:
        row = session.scalar(select(Hl7Message).where(Hl7Message.direction == "out").order_by(Hl7Message.id))
        assert (row.status, row.ack_code, row.message_type) == ("sent", "AA", "ORU^R01")
        # The receiver refuses a resend (AR): dead at once, not retried; the log says why.
        receiver.answer = "AR"
        again = replay(session, Actor(None, "admin1", "admin", "127.0.0.1"), row.id, settings)
        again_id = again.id
        resent = session.scalar(select(OutboxMessage).where(OutboxMessage.key == f"resend:{again_id}"))
        assert resent is not None and resent.subject == f"ORU^R01 {row.control_id} (gửi lại)"
    assert [d.outcome for d in run_due(context, kinds=["hl7.oru"])] == ["dead"]
    with factory() as session:
        refused = session.get(Hl7Message, again_id)
        assert refused.status == "refused" and refused.ack_code == "AR" and "unknown order" in refused.error
        assert refused.replay_of_id == row.id
        # Nothing on the signed side changed, and one signature was made.
        assert session.scalar(select(Document).where(Document.id == doc_id)).status != "cancelled"
        assert len(list(session.scalars(select(SignedArtifact)))) == 2  # the report and its amendment


def test_receiver_down_is_retried_not_lost(world: dict[str, Any], receiver: MllpReceiver) -> None:
    settings, factory = world["settings"], world["factory"]
    assert msa(mllp(world["listener"].port, orm("ORU-O2", "PL-901", "HIS901")))[1] == "AA"
    config = world["app"].extensions["emr.signing_config"]
    receiver.answer = "close"  # the HIS takes the connection and drops it unanswered
    with factory() as session:
        order = session.scalar(select(ImagingOrder).order_by(ImagingOrder.id.desc()))
        actor = world["radiologist"]
        doc = documents.create_document(session, actor, {"encounter_id": visit_for_report(session, actor, order).id,
                                                         "form_type": "radiology_report", "order_id": order.id,
                                                         "content": CONTENT})
        version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
        signing.sign_document(session, actor, doc.id, config, method="pkcs12", secret=world["password"],
                              expected_sha256=version.content_sha256)
    context = HandlerContext(session_factory=factory, settings=settings)
    assert [d.outcome for d in run_due(context, kinds=["hl7.oru"])] == ["failed"]
    with factory() as session:
        row = session.scalar(select(Hl7Message).where(Hl7Message.direction == "out"))
        assert row.status == "failed" and "IncompleteReadError" in row.error
        message = session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "hl7.oru"))
        assert message.status == "failed" and message.attempts == 1  # waits for its back-off, then retried


def test_no_oru_for_what_the_his_never_sent(world: dict[str, Any], receiver: MllpReceiver) -> None:
    """A patient registered and an order placed in filmless itself: the HIS could not attach a result."""
    from emr.imaging.orders import create_order
    from emr.patients.service import create_patient

    config = world["app"].extensions["emr.signing_config"]
    with world["factory"]() as session:
        actor = world["radiologist"]
        patient = create_patient(session, SETUP, {"full_name": "Mai Văn Tại Chỗ", "birth_date": "1970-01-01",
                                                  "sex": "M"})
        ward = encounters.ensure_department(session, "K19", "Khoa Nội tổng hợp")
        physician = create_user(session, SETUP, "bsdieutri1", "correct horse battery", "physician", "BS. Điều Trị",
                                department_id=ward.id)  # the order opens a visit there: care begins
        order = create_order(session, Actor(physician.id, physician.username, "physician", None),
                             {"patient_id": patient.id, "modality": "CT", "procedure_name": "CT ngực"})
        doc = documents.create_document(session, actor, {"encounter_id": visit_for_report(session, actor, order).id,
                                                         "form_type": "radiology_report", "order_id": order.id,
                                                         "content": CONTENT})
        version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
        artifact = signing.sign_document(session, actor, doc.id, config, method="pkcs12", secret=world["password"],
                                         expected_sha256=version.content_sha256)
        assert artifact.complete
        assert session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "hl7.oru")) is None
        assert session.scalar(select(Hl7Message).where(Hl7Message.direction == "out")) is None
