"""`filmless demo` and the EMR admin commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from emr import EmrSettings, create_app, open_session
from emr.demo.seed import DEMO_ACCOUNTS, orthanc_study_id, seed
from emr.models import ImagingOrder, Patient, Study, User
from filmless.cli import main
from filmless.wiring import viewer_extension
from storage import OrthancProcess, OrthancStore

from .conftest import World, csrf_token, login
from .demo_support import assert_demo_is_coherent


def test_demo_seeds_the_whole_flow(tmp_path: Path, fresh_orthanc: Callable[..., OrthancProcess]) -> None:
    # An Orthanc of its own: the demo's accession numbers are the same in every demo database, so
    # demo studies other tests left in the session-wide Orthanc would be linked here too.
    orthanc: OrthancStore = fresh_orthanc().store()
    settings = EmrSettings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/emr.sqlite3", secret_key_file=tmp_path / "key"
    )
    accounts = seed(settings, orthanc)
    assert {role for _u, _p, role in accounts} == {
        "admin",
        "physician",
        "radiologist",
        "technician",
        "nurse",
        "records_clerk",
    }
    assert seed(settings, orthanc) == accounts  # idempotent
    with open_session(settings) as s:
        assert s.scalar(select(Patient).where(Patient.cccd == "079190001234")) is not None
        assert len(s.scalars(select(ImagingOrder)).all()) == 5  # with the inpatient stay's chest X-ray (issue 14)
        linked = s.scalars(select(Study).where(Study.state == "linked").order_by(Study.id)).all()
        # the chest CT (reported and signed), the head CT left unread, the inpatient stay's chest X-ray (reported)
        # (the chest CT holds its signed report too, as Encapsulated PDF: CT\\DOC)
        assert [(study.modalities or "").split("\\")[0] for study in linked] == ["CT", "CT", "DX"]
        pid = linked[0].patient_id
        by_order = assert_demo_is_coherent(s)
        for studies in by_order.values():  # the images are in the PACS, not only a record of them
            for study in studies:
                assert sum(len(x["Instances"]) for x in orthanc.study_series(study.orthanc_id)) >= 1
                # the id the demo gives a study without a PACS (--no-study) is the one Orthanc gives it
                assert orthanc_study_id(study.dicom_patient_id or "", study.study_instance_uid) == study.orthanc_id
        # the demo price list priced the orders, and the closed chest-CT visit exports real money
        from emr.exports import load_config
        from emr.exports.service import check_visit
        from emr.models import Encounter

        chest = s.scalars(select(ImagingOrder).where(ImagingOrder.procedure_code == "18.0043.0002")).one()
        assert (chest.price_hospital, chest.price_insurance) == (650000, 536000)
        unpriced = s.scalars(select(ImagingOrder).where(ImagingOrder.procedure_code.is_(None))).all()
        assert [o.modality for o in unpriced] == ["MR"] and unpriced[0].price_hospital is None
        visit = s.get(Encounter, chest.encounter_id)
        assert visit is not None and visit.status == "closed" and visit.benefit_level == 80
        rows, problems = check_visit(s, visit.id, load_config(settings))
        assert problems == []
        xml1 = rows["XML1"][0]
        # 650 000 đ, BHYT 536 000 đ at 80 %: the fund 428 800, co-payment 107 200, outside insurance 114 000
        assert (xml1["T_TONGCHI_BV"], xml1["T_BHTT"], xml1["T_BNCCT"], xml1["T_BNTT"]) == (
            "650000.00",
            "428800.00",
            "107200.00",
            "114000.00",
        )
        # No paper is shown signed without its signatures (every slot of its form, with the demo token).
        from emr.models import Document
        from emr.models.signing import SignedArtifact
        from emr.signing import load_trust_anchors, verify_pdf
        from emr.signing.service import slots_for

        papers = s.scalars(select(Document).order_by(Document.id)).all()
        assert len(papers) == 8  # the chest CT report, the outpatient note, the inpatient stay's six
        anchors = load_trust_anchors(tmp_path / "pki" / "trust-anchors")
        for doc in papers:
            version = doc.versions[-1]
            artifact = s.scalar(select(SignedArtifact).where(SignedArtifact.version_id == version.id))
            assert (doc.status, version.status, version.signed_at is not None) == ("signed", "signed", True)
            assert artifact is not None and artifact.complete, doc.form_type
            assert len(artifact.signatures) == len(slots_for(doc.form_type)), doc.form_type
        discharge = next(d for d in papers if d.form_type == "discharge_summary")
        signed = s.scalar(select(SignedArtifact).where(SignedArtifact.document_id == discharge.id))
        assert signed is not None and verify_pdf(bytes(signed.pdf), anchors).valid
        assert [x.signer_role for x in signed.signatures] == ["treating", "head"]
        # The stay is discharged before its paper is signed: the paper prints the discharge time (facility time).
        import subprocess

        from emr.core.clock import to_local
        from emr.i18n import t

        stay = s.get(Encounter, discharge.encounter_id)
        assert stay is not None and stay.discharged_at is not None
        pdf = bytes(signed.pdf)
        out = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
        discharged = to_local(stay.discharged_at).strftime("%H:%M, %d/%m/%Y")
        assert f"{t('signing.pdf.discharged_at')}: {discharged}" in " ".join(out.stdout.decode().split())
    client = create_app(settings, store=orthanc, extensions=[viewer_extension(orthanc)]).test_client()
    username, password = DEMO_ACCOUNTS[1][0], DEMO_ACCOUNTS[1][1]
    assert login(client, username, password).status_code == 302
    chart = client.get(f"/patients/{pid}").get_data(as_text=True)
    assert f"/viewer/?study={linked[0].study_instance_uid}" in chart and "Nguyễn Thị Hồng Nhung" in chart
    page = client.get(f"/documents/{discharge.id}").get_data(as_text=True)
    assert "Đã ký: Trưởng khoa" in page and "Chưa ký" not in page and "Chờ ký" not in page
    # The radiologist's home is the reading list, with the emergency head CT waiting to be read.
    reader = create_app(settings, store=orthanc, extensions=[viewer_extension(orthanc)]).test_client()
    assert login(reader, "bschan", "demo-bschan-2026").status_code == 302
    home = reader.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/reading/")
    page = reader.get("/reading/").get_data(as_text=True)
    assert "Trần Văn Đức" in page and f"/reading/studies/{linked[1].id}" in page


def test_the_demo_is_the_same_on_every_run(tmp_path: Path) -> None:
    """Apart from its secrets and the day it runs: the same patients, accession numbers and studies (their
    UIDs too, so a PACS kept from an earlier run holds the very same study), linked the same way."""

    def fingerprint(folder: Path) -> tuple[list[tuple[str | None, ...]], list[tuple[str | None, ...]]]:
        settings = EmrSettings(data_dir=folder, database_url=f"sqlite:///{folder}/emr.sqlite3",
                               secret_key_file=folder / "key")  # fmt: skip
        seed(settings, None, signing=False)
        with open_session(settings) as s:
            found = [(o.accession_number, o.study_instance_uid, o.modality, o.status)
                     for o in s.scalars(select(ImagingOrder).order_by(ImagingOrder.id))]  # fmt: skip
            studies = [(x.orthanc_id, x.study_instance_uid, x.study_date, x.state, x.dicom_patient_id)
                       for x in s.scalars(select(Study).order_by(Study.id))]  # fmt: skip
        return found, studies

    first, second = fingerprint(tmp_path / "a"), fingerprint(tmp_path / "b")
    assert first == second
    assert [status for *_x, status in first[0]].count("images_available") == 2  # both CTs imaged, none reported
    assert len({uid for _a, uid, *_x in first[0]}) == len(first[0])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_radiologists_home_is_the_reading_list(client: FlaskClient, world: World) -> None:
    """The imaging department admits nobody: a radiologist's home was an empty list of open visits."""
    assert login(client, "radiologist1").status_code == 302
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/reading/")
    assert client.get("/", follow_redirects=True).status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/reading/")})
    assert login(client, "physician1").status_code == 302
    assert client.get("/").headers["Location"].endswith("/patients/")  # the patients they are treating


def test_create_admin_and_audit_verify_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FILMLESS_DATA_DIR", str(tmp_path))
    assert main(["emr", "create-admin", "boss", "--generate"]) == 0
    out = capsys.readouterr().out
    assert "password: " in out and "created admin boss" in out
    assert main(["emr", "create-admin", "boss", "--password", "another-long-pass"]) == 1
    with open_session(EmrSettings(database_url=f"sqlite:///{tmp_path}/emr.sqlite3")) as s:
        assert s.scalar(select(User.role).where(User.username == "boss")) == "admin"
    assert main(["audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out
    assert (tmp_path / "secret_key").exists() is False  # no app was started; the CLI does not need the key


def test_sqlite_database_is_private(tmp_path: Path) -> None:
    from emr import upgrade_database

    upgrade_database(EmrSettings(database_url=f"sqlite:///{tmp_path}/emr.sqlite3"))
    assert (tmp_path / "emr.sqlite3").stat().st_mode & 0o077 == 0
