"""`filmless demo` with signing: dev PKI, SoftHSM token, a signed radiology report stored in
Orthanc as Encapsulated PDF, and an imaging visit ready for the insurance export.

The demo runs in a subprocess: SoftHSM reads its configuration once per process,
and this test process already loaded it for the session's test token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from emr import Actor, EmrSettings
from emr.db import make_engine, make_session_factory
from emr.demo.signing import DEMO_TOKEN_PIN
from emr.exports import check_visit, export_xml130, load_config, open_facility_key, verify_envelope
from emr.models import Document, Encounter
from emr.models.signing import SignedArtifact
from emr.signing import extract_pdf, load_trust_anchors, verify_pdf
from storage import OrthancProcess


def test_demo_seed_signs_stores_and_exports(tmp_path: Path, fresh_orthanc: Callable[..., OrthancProcess]) -> None:
    # An Orthanc of its own: the demo's accession numbers would link into other tests' demo databases.
    orthanc_process = fresh_orthanc()
    data = tmp_path / "data"
    store = orthanc_process.store()
    env = {
        **os.environ,
        "FILMLESS_DATA_DIR": str(data),
        "FILMLESS_ORTHANC_URL": store.url,
        "FILMLESS_ORTHANC_USER": orthanc_process.credentials.username,
        "FILMLESS_ORTHANC_PASSWORD": orthanc_process.credentials.password,
        "FILMLESS_FACILITY_CODE": "79001",
    }
    env.pop("SOFTHSM2_CONF", None)
    out = subprocess.run([sys.executable, "-m", "filmless", "demo"], env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert DEMO_TOKEN_PIN in out.stdout  # the token PIN is printed with the demo accounts
    assert (data / "pki" / "dev" / "ca.pem").is_file() and (data / "softhsm" / "softhsm2.conf").is_file()

    settings = EmrSettings(data_dir=data, database_url=f"sqlite:///{data / 'emr.sqlite3'}", facility_code="79001")
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            # The chest CT's report is the one the demo stores in the PACS (the inpatient stay's
            # X-ray report is signed but stays in the EMR).
            stored = session.scalars(
                select(SignedArtifact)
                .join(Document, Document.id == SignedArtifact.document_id)
                .where(Document.form_type == "radiology_report", SignedArtifact.pacs_instance_id.is_not(None))
            ).all()
            assert len(stored) == 1
            artifact = stored[0]
            report = session.get(Document, artifact.document_id)
            assert report is not None and artifact.complete
            pdf = bytes(artifact.pdf)
            anchors = load_trust_anchors(data / "pki" / "trust-anchors")
            assert verify_pdf(pdf, anchors).valid
            # The Encapsulated PDF in Orthanc is the signed file, byte for byte.
            assert artifact.pacs_instance_id and artifact.pacs_error is None
            assert extract_pdf(store.instance_file(artifact.pacs_instance_id)) == pdf

            enc = session.scalars(select(Encounter).where(Encounter.id == report.encounter_id)).one()
            assert enc.status == "closed"
            config = load_config(settings)
            _rows, problems = check_visit(session, enc.id, config)
            assert problems == []
            with open_facility_key(config) as key:
                exp = export_xml130(session, Actor(None, "test", "records_clerk", None), enc.id, config, key)
            verify_envelope(exp.envelope, data / "pki" / "dev" / "ca.pem")  # raises if the signature is bad
            assert b"KET_LUAN" in exp.tables["XML4"] or exp.tables
    finally:
        engine.dispose()
