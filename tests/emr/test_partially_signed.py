"""A version is signed only with every signature its form requires (migration 0021, the version guard).

The signing workflow itself (a discharge paper signed by the treating physician and then the head of
department, on the chart, in the HSBA export and FHIR) is tested in tests/signing/test_workflow.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.core.exceptions import InvalidState
from emr.documents import service as documents
from emr.models import Document, DocumentVersion

from . import test_prices as prices
from .conftest import World, patient_data

empty_url = prices.empty_url  # a database with no schema, to migrate step by step (a fixture)

_T1, _T2 = datetime(2026, 12, 1, 2, 0), datetime(2026, 12, 1, 3, 0)


def _document(c: Any, t: Any, doc_id: int, status: str, current: int, *, before_cancel: str | None = None) -> None:
    c.execute(t["documents"].insert().values(
        id=doc_id, patient_id=1, encounter_id=1, form_type="discharge_summary", status=status,
        status_before_cancel=before_cancel, current_version=current, record_type="ordinary", retention_class="10y",
        created_by=1, created_at=_T1))


def _version(c: Any, t: Any, version_id: int, doc_id: int, number: int, status: str, *, done: int, required: int = 2
             ) -> None:
    """A locked version signed ``done`` of ``required`` times the way the code before 0021 stored it."""
    c.execute(t["document_versions"].insert().values(
        id=version_id, document_id=doc_id, number=number, content_json="{}", content_sha256="0" * 64, status=status,
        locked=True, created_by=1, created_at=_T1, signed_at=_T1, signed_by=1))
    c.execute(t["signed_artifacts"].insert().values(
        id=version_id, version_id=version_id, document_id=doc_id, verification_code=f"code-{version_id}", pdf=b"%PDF",
        pdf_sha256="1" * 64, content_sha256="0" * 64, signatures_required=required, signatures_done=done,
        complete=done >= required, created_at=_T1, updated_at=_T2))
    for i in range(1, done + 1):
        c.execute(t["document_signatures"].insert().values(
            artifact_id=version_id, version_id=version_id, order_index=i, field_name=f"f{i}", signer_role="treating",
            signer_id=1, method="pkcs11", cert_subject="CN=x", cert_serial=f"{version_id}{i}",
            signed_at=_T1 if i == 1 else _T2, pdf_length=4, pdf_sha256="1" * 64, cms=b"x"))


def test_migration_0021_makes_partially_signed_versions_signing_and_matches_the_models(empty_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import emr.models.signing  # noqa: F401  (every table in the metadata)
    from emr.db import upgrade
    from emr.models import Base

    engine, t = prices.at_revision(empty_url, "0020")
    try:
        with engine.begin() as c:
            prices.seed_people(c, t, _T1)
            _document(c, t, 1, "signed", 1)  # the physician signed, the head not yet
            _version(c, t, 1, 1, 1, "signed", done=1)
            _document(c, t, 2, "signed", 1)  # both signed
            _version(c, t, 2, 2, 1, "signed", done=2)
            _document(c, t, 3, "cancelled", 1, before_cancel="signed")  # cancelled half-signed
            _version(c, t, 3, 3, 1, "signed", done=1)
            _document(c, t, 4, "signed", 2)  # version 1 complete, its amendment half-signed
            _version(c, t, 4, 4, 1, "superseded", done=2)
            _version(c, t, 5, 4, 2, "signed", done=1)
        upgrade(engine)

        def state() -> tuple[dict[int, tuple[str, str | None]], dict[int, tuple[str, Any, Any]]]:
            with engine.connect() as c:
                docs = {r.id: (r.status, r.status_before_cancel) for r in c.execute(select(
                    Document.id, Document.status, Document.status_before_cancel))}
                versions = {r.id: (r.status, r.signed_at, r.signed_by) for r in c.execute(select(
                    DocumentVersion.id, DocumentVersion.status, DocumentVersion.signed_at, DocumentVersion.signed_by))}
            return docs, versions

        docs, versions = state()
        assert docs == {1: ("signing", None), 2: ("signed", None), 3: ("cancelled", "signing"), 4: ("amended", None)}
        assert versions == {1: ("signing", None, None), 2: ("signed", _T1, 1), 3: ("signing", None, None),
                            4: ("superseded", _T1, 1), 5: ("signing", None, None)}
        with engine.connect() as c:
            diffs = [d for d in compare_metadata(MigrationContext.configure(c), Base.metadata)
                     if prices._touches(d, {"documents", "document_versions", "signed_artifacts"})]
            assert diffs == []

        _downgrade(engine, "0020")
        docs, versions = state()
        assert docs == {1: ("signed", None), 2: ("signed", None), 3: ("cancelled", "signed"), 4: ("signed", None)}
        assert versions[1] == ("signed", _T1, 1) and versions[5] == ("signed", _T1, 1)
    finally:
        engine.dispose()


def _downgrade(engine: Any, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from emr.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def test_a_signing_version_is_locked_and_gets_its_signing_time_once(session: Session, world: World) -> None:
    from emr.patients import encounters
    from emr.patients import service as patients

    doctor = world.actor("physician")
    p = patients.create_patient(session, world.actor("records_clerk"), patient_data())
    enc = encounters.create_encounter(session, doctor, {"patient_id": p.id, "kind": "outpatient",
                                                        "department_code": "K19", "reason": "Ho"})
    doc = documents.create_document(session, doctor, {
        "encounter_id": enc.id, "form_type": "discharge_summary",
        "content": {"summary": "Ổn định", "discharge_diagnosis": "Viêm phổi", "treatment": "Kháng sinh", "result": "1"},
    })
    documents.mark_signed(session, doctor, doc.id, 1, complete=False)
    version = session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)).one()
    assert (doc.status, version.status, version.locked, version.signed_at) == ("signing", "signing", True, None)
    version.content_json = '{"summary": "khác"}'  # locked at the first signature: the head signs the same text
    with pytest.raises(InvalidState):
        session.commit()
    session.rollback()
    documents.complete_signing(session, doctor, doc.id, 1)
    session.refresh(version)
    assert version.status == "signed" and version.signed_at is not None and version.signed_by == doctor.user_id
    assert session.get(Document, doc.id).status == "signed"
    version.signed_at = datetime(2020, 1, 1)  # written once
    with pytest.raises(InvalidState):
        session.commit()
    session.rollback()
    with pytest.raises(InvalidState):
        documents.complete_signing(session, doctor, doc.id, 1)  # already signed
