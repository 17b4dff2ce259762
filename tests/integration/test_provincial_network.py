"""Two complete filmless sites on one machine (issue 15 §1, "Done when").

Site A (a district hospital) and site B (the provincial hospital) each run
``filmless up --demo`` with their own data directory and ports, and know each
other only through ``filmless site add`` (AE title, address, EMR URL, tokens
in 0600 files) and ``filmless site trust-ca`` (A trusts B's signing CA). Real
parts only: two Orthancs, two gateways, two EMRs with their outbox workers,
DCMTK storescu as A's CT, the demo PKCS#11 token at B.

* order at A → study at A (storescu) → tele-radiology request → read and sign
  at B → the signed report back at A, attached to A's order → study and report
  sent to B's archive; both Orthancs hold exactly what they should, the PDF
  at A is byte for byte the one B signed, and both audit logs say who did what;
* A closes the visit: its summary (patient by CCCD, encounter, the imaging
  study) reaches the health-record stand-in (A's ``FILMLESS_EHR_URL``) once;
* B down while A sends, then back: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, text

from storage import OrthancStore, open_store
from storage.settings import StorageSettings
from tests.dicom_factory import ct_instance
from tests.helpers import csrf_from, free_port, http_login, wait_for
from tests.standins.ehr import CCCD_SYSTEM, EhrStandIn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed"),
    pytest.mark.timeout(900),
]

DEMO_PIN = "246810"  # the demo signing token's PIN (emr.demo.signing)
PHYSICIAN = ("bacsi", "site-a-physician-2026")  # A runs without the demo: its own account
RADIOLOGIST = ("bschan", "demo-bschan-2026")


@dataclass
class Site:
    name: str
    ae: str
    data: Path
    ports: dict[str, int]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['emr']}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "filmless", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def start(self) -> None:
        self.output.clear()
        # B signs with the demo PKCS#11 token, so it runs the demo; A only needs its physician.
        demo = ["--demo"] if self.name == "B" else []
        self.proc = subprocess.Popen([sys.executable, "-m", "filmless", "up", *demo], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.output.extend(iter(self.proc.stdout.readline, "")),  # type: ignore[union-attr]
                         daemon=True).start()

    def wait_ready(self) -> None:
        def running() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited"
            return "filmless is running" in "".join(self.output)

        try:
            wait_for(running, timeout=300, what=f"{self.name} up")
            wait_for(lambda: _ok(f"{self.url}/healthz"), timeout=60, what=f"{self.name} EMR")
            wait_for(lambda: subprocess.run(["echoscu", "-aet", "CT01", "-aec", self.ae, "127.0.0.1",
                                             str(self.ports["gw"])], capture_output=True).returncode == 0,
                     timeout=60, what=f"{self.name} gateway")
        except AssertionError:
            raise AssertionError("".join(self.output)[-4000:]) from None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def store(self) -> OrthancStore:
        return open_store(StorageSettings(data_dir=self.data / "orthanc", http_port=self.ports["http"]))

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(f"sqlite:///{self.data / 'emr.sqlite3'}")
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params))
        finally:
            engine.dispose()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _token_file(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    return path


@pytest.fixture(scope="module")
def ehr() -> Iterator[EhrStandIn]:
    """The national health record's stand-in; A pushes its visit summaries there."""
    standin = EhrStandIn(token=secrets.token_urlsafe(24))
    try:
        yield standin
    finally:
        standin.down()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, ehr: EhrStandIn) -> Iterator[tuple[Site, Site]]:
    root = tmp_path_factory.mktemp("province")
    ehr_token = root / "ehr.token"
    fd = os.open(ehr_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(ehr.state.token or "")
    base = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    base.pop("SOFTHSM2_CONF", None)
    made = []
    for name, ae in (("A", "SITEA"), ("B", "SITEB")):
        ports = {p: free_port() for p in ("gw", "http", "dicom", "emr")}
        env = dict(base, **{
            "FILMLESS_DATA_DIR": str(root / name),
            "FILMLESS_GATEWAY_AET": ae,
            "FILMLESS_GATEWAY_PORT": str(ports["gw"]),
            # Only the CT on this machine by configuration; the other site is admitted from the registry.
            "FILMLESS_GATEWAY_ALLOWED": "CT01@127.0.0.1",
            "FILMLESS_ORTHANC_HTTP_PORT": str(ports["http"]),
            "FILMLESS_ORTHANC_DICOM_PORT": str(ports["dicom"]),
            "FILMLESS_EMR_PORT": str(ports["emr"]),
            "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
            "FILMLESS_HOSPITAL_NAME": f"Bệnh viện {name}",
            "FILMLESS_OUTBOX_RETRY_SECONDS": "1",
            "FILMLESS_OUTBOX_RETRY_MAX_SECONDS": "2",
            "FILMLESS_OUTBOX_POLL_SECONDS": "1",
            "FILMLESS_OUTBOX_MAX_ATTEMPTS": "1000",
        })
        if name == "A":  # the district hospital pushes its visit summaries to the health record
            env.update({"FILMLESS_EHR_URL": ehr.url, "FILMLESS_EHR_TOKEN_FILE": str(ehr_token)})
        made.append(Site(name, ae, root / name, ports, env))
    a, b = made
    a.data.mkdir(mode=0o700)
    b.data.mkdir(mode=0o700)
    a_to_b = _token_file(root / "a-issued-to-b.token")  # B presents it to A
    b_to_a = _token_file(root / "b-issued-to-a.token")  # A presents it to B
    a.cli("site", "add", "Bệnh viện tỉnh B", "--ae", "SITEB", "--host", "127.0.0.1", "--port", str(b.ports["gw"]),
          "--emr-url", b.url, "--issue-token-to", str(a_to_b), "--token-file", str(b_to_a))
    b.cli("site", "add", "Bệnh viện huyện A", "--ae", "SITEA", "--host", "127.0.0.1", "--port", str(a.ports["gw"]),
          "--emr-url", a.url, "--issue-token-to", str(b_to_a), "--token-file", str(a_to_b))
    assert "SITEB@127.0.0.1" in a.cli("site", "list").stdout
    a.cli("emr", "add-department", "K01", "Khoa Khám bệnh")
    a.cli("emr", "load-catalogue", "icd10", str(Path(__file__).parents[1] / "catalogues" / "data" / "icd10.csv"))
    a.cli("emr", "create-user", PHYSICIAN[0], "physician", "--full-name", "Nguyễn Văn An", "--password", PHYSICIAN[1])
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        # A trusts B's signing CA (B's demo CA here), its fingerprint confirmed as if by phone: B's signed
        # reports then verify at A as valid. The running EMR at A reads its trust store on every check.
        b_ca = b.data / "pki" / "dev" / "ca.pem"
        der = x509.load_pem_x509_certificate(b_ca.read_bytes()).public_bytes(serialization.Encoding.DER)
        a.cli("site", "trust-ca", "SITEB", "--signing-ca", str(b_ca),
              "--signing-ca-fingerprint", hashlib.sha256(der).hexdigest())
        yield a, b
    finally:
        a.stop()
        b.stop()


def _api_token(site: Site, username: str) -> dict[str, str]:
    token = site.cli("emr", "create-token", username, "--name", "test").stdout.strip().splitlines()[-1]
    return {"Authorization": f"Bearer {token}"}


def _order_with_study(a: Site, cccd: str, name: str, procedure: str, slices: int) -> tuple[dict[str, Any], str]:
    """An order at A for a new patient and its study sent by A's CT (storescu); (order, study UID)."""
    headers = _api_token(a, PHYSICIAN[0])
    r = requests.post(f"{a.url}/api/patients", json={"full_name": name, "birth_date": "1958-03-14", "sex": "M",
                                                     "cccd": cccd}, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    patient = r.json()
    r = requests.post(f"{a.url}/api/encounters", json={"patient_id": patient["id"], "kind": "outpatient",
                                                       "department_code": "K01", "attending_username": PHYSICIAN[0],
                                                       "diagnoses": ["J18.9"]},
                      headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    encounter = r.json()
    r = requests.post(f"{a.url}/api/orders", json={"patient_id": patient["id"], "modality": "CT",
                                                   "encounter_id": encounter["id"],
                                                   "procedure_name": procedure, "station_ae_title": "CT01"},
                      headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    order = r.json()
    folder = a.data.parent / f"ct-{order['accession_number']}"
    folder.mkdir()
    series = generate_uid()
    for i in range(slices):
        (folder / f"{i}.dcm").write_bytes(ct_instance(
            patient_id="CT-LOCAL", patient_name="Unknown^Patient", accession=order["accession_number"],
            study_uid=order["study_instance_uid"], series_uid=series, instance_number=i + 1,
        ))
    sent = subprocess.run(["storescu", "-aet", "CT01", "-aec", a.ae, "127.0.0.1", str(a.ports["gw"]),
                           *sorted(map(str, folder.iterdir()))], capture_output=True, text=True)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: bool(a.sql("SELECT 1 FROM studies WHERE order_id = :o AND state = 'linked'", o=order["id"])),
             timeout=60, what="the study linked to A's order")
    return order, order["study_instance_uid"]


def _instances(store: OrthancStore, study_uid: str) -> dict[str, list[str]]:
    """Modality → SOP Instance UIDs of a study in one Orthanc (every copy of the UID)."""
    out: dict[str, list[str]] = {}
    for study in store.find_studies(study_instance_uid=study_uid):
        for series in store.study_series(study.orthanc_id):
            modality = series["MainDicomTags"].get("Modality", "")
            for instance in series["Instances"]:
                out.setdefault(modality, []).append(store.instance_tags(instance)["SOPInstanceUID"])
    return {k: sorted(v) for k, v in out.items()}


def _form_post(http: requests.Session, page: str, url: str, data: dict[str, str]) -> requests.Response:
    return http.post(url, data={**data, "csrf_token": csrf_from(http, page)}, allow_redirects=False, timeout=30)


def test_teleradiology_round_trip_and_study_to_the_provincial_archive(sites: tuple[Site, Site],
                                                                      ehr: EhrStandIn) -> None:
    a, b = sites
    order, uid = _order_with_study(a, "079058123456", "Phạm Văn Đồng", "CT ngực", slices=3)
    site_b = a.sql("SELECT id FROM network_sites WHERE ae_title = 'SITEB'")[0][0]

    # A's physician asks B for a read, from the chart.
    doctor = http_login(a.url, *PHYSICIAN)
    chart = f"{a.url}/patients/{order['patient_id']}"
    assert "Yêu cầu đọc từ xa" in doctor.get(chart, timeout=10).text
    r = _form_post(doctor, chart, f"{a.url}/network/orders/{order['id']}/read-request",
                   {"site_id": str(site_b), "question": "Nốt mờ thùy trên phổi phải, loại trừ u?", "urgency": "urgent"})
    assert r.status_code == 302, r.text

    # B: the request made a local order on the study's UID; the images arrive and link to it.
    wait_for(lambda: bool(b.sql("SELECT 1 FROM studies s JOIN imaging_orders o ON o.id = s.order_id "
                                "WHERE o.study_instance_uid = :u AND s.state = 'linked'", u=uid)),
             timeout=90, what="the study at B, linked to the read request's order")
    (b_order_id, b_accession, b_patient), = b.sql(
        "SELECT id, accession_number, patient_id FROM imaging_orders WHERE study_instance_uid = :u", u=uid)
    assert b.sql("SELECT cccd FROM patients WHERE id = :p", p=b_patient)[0][0] == "079058123456"
    assert a.sql("SELECT remote_ref, status FROM network_transfers WHERE kind = 'read_request'")[0] == (
        b_accession, "sent")

    # B's radiologist sees it on the reading worklist, reads B's copy, signs at B with the token.
    reader = http_login(b.url, *RADIOLOGIST)
    worklist = reader.get(f"{b.url}/reading/", timeout=10).text
    assert b_accession in worklist and "Đọc từ xa cho Bệnh viện huyện A" in worklist
    (b_study_id,) = b.sql("SELECT id FROM studies WHERE order_id = :o", o=b_order_id)[0]
    read_page = f"{b.url}/reading/studies/{b_study_id}"
    assert "Nốt mờ thùy trên phổi phải" in reader.get(read_page, timeout=10).text  # the clinical question
    r = _form_post(reader, read_page, f"{read_page}/report", {
        "c_technique": "CT ngực không tiêm thuốc cản quang.",
        "c_findings": "Nốt đặc thùy trên phổi phải 8 mm, bờ đều.",
        "c_conclusion": "Nốt phổi phải nhỏ, theo dõi CT sau 6 tháng.",
    })
    assert r.status_code == 302, r.text
    (doc_id,) = b.sql("SELECT id FROM documents WHERE order_id = :o", o=b_order_id)[0]
    sign_page = f"{b.url}/signing/documents/{doc_id}/sign"
    form = reader.get(sign_page, timeout=10).text
    content_sha = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', form).group(1)  # type: ignore[union-attr]
    r = reader.post(sign_page, data={"csrf_token": csrf_from(reader, sign_page), "method": "pkcs11",
                                     "secret": DEMO_PIN, "content_sha256": content_sha},
                    allow_redirects=False, timeout=120)
    assert r.status_code == 302, r.text[-2000:]
    (b_pdf_sha,) = b.sql("SELECT pdf_sha256 FROM signed_artifacts WHERE document_id = :d", d=doc_id)[0]

    # The signed report comes back to A and attaches to A's order.
    wait_for(lambda: bool(a.sql("SELECT 1 FROM network_received WHERE kind = 'report'")), timeout=90,
             what="the signed report back at A")
    (status, pdf_sha, signature, order_id), = a.sql(
        "SELECT r.kind, r.pdf_sha256, r.signature_status, r.order_id FROM network_received r WHERE kind = 'report'")
    assert (pdf_sha, order_id) == (b_pdf_sha, order["id"])  # the very PDF B signed
    assert signature == "valid"  # B's CA is one of A's anchors (site trust-ca): trusted, not just intact
    assert a.sql("SELECT status FROM imaging_orders WHERE id = :o", o=order["id"])[0][0] == "reported"
    chart_html = doctor.get(chart, timeout=10).text
    assert "Kết quả đọc từ cơ sở khác" in chart_html and "Bệnh viện tỉnh B" in chart_html
    received_id = a.sql("SELECT id FROM network_received WHERE kind = 'report'")[0][0]
    pdf = doctor.get(f"{a.url}/network/received/{received_id}/report.pdf", timeout=10)
    assert pdf.status_code == 200 and hashlib.sha256(pdf.content).hexdigest() == b_pdf_sha

    # A's archive: the 3 CT slices and the report (A's identity on it, the PDF untouched).
    a_store, b_store = a.store(), b.store()
    wait_for(lambda: "DOC" in _instances(a_store, uid), timeout=30, what="the report in A's Orthanc")
    held_a = _instances(a_store, uid)
    assert len(held_a["CT"]) == 3 and len(held_a["DOC"]) == 1, held_a
    a_study = a_store.find_studies(study_instance_uid=uid)
    assert len(a_study) == 1  # one study: the report carries A's patient identity
    doc_instance = a_store.find_instance(held_a["DOC"][0])
    encapsulated = pydicom.dcmread(io.BytesIO(a_store.instance_file(doc_instance)))
    assert hashlib.sha256(bytes(encapsulated.EncapsulatedDocument)[: int(encapsulated.EncapsulatedDocumentLength)]
                          ).hexdigest() == b_pdf_sha

    # Study and report to B's archive as well: nothing new to store, nothing doubled.
    r = _form_post(doctor, chart, f"{a.url}/network/orders/{order['id']}/send", {"site_id": str(site_b)})
    assert r.status_code == 302, r.text
    wait_for(lambda: a.sql("SELECT status FROM network_transfers WHERE kind = 'study'")[0][0] == "sent",
             timeout=90, what="the study sent to B")
    held_b = _instances(b_store, uid)
    assert held_b == held_a, (held_b, held_a)
    assert len(b_store.find_studies(study_instance_uid=uid)) == 1
    received = b.sql("SELECT kind, patient_id, match_method FROM network_received ORDER BY id")
    assert received == [("read_request", b_patient, "created"), ("study", b_patient, "cccd")]
    listing = reader.get(f"{b.url}/network/received", timeout=10).text
    assert "Bệnh viện huyện A" in listing and "Theo CCCD" in listing

    # Both audit logs: who did what.
    a_audit = {tuple(r) for r in a.sql("SELECT username, action FROM audit_log")}
    b_audit = {tuple(r) for r in b.sql("SELECT username, action FROM audit_log")}
    assert ("bacsi", "network.read_request.queue") in a_audit
    assert ("system", "network.read_request.sent") in a_audit
    assert ("site:Bệnh viện tỉnh B", "network.report.receive") in a_audit
    assert ("site:Bệnh viện huyện A", "network.read_request.receive") in b_audit
    assert ("bschan", "document.sign_step") in b_audit
    assert ("bschan", "network.report.queue") in b_audit
    assert ("system", "network.report.sent") in b_audit

    # A closes the visit: its summary reaches the health record once, the patient named by CCCD.
    (encounter_id,) = a.sql("SELECT encounter_id FROM imaging_orders WHERE id = :o", o=order["id"])[0]
    close = f"{a.url}/patients/{order['patient_id']}/encounters/{encounter_id}/close"
    r = _form_post(doctor, close, close, {"discharge_diagnosis": "Nốt phổi phải, theo dõi"})
    assert r.status_code == 302, r.text[-2000:]
    try:
        wait_for(lambda: len(ehr.accepted) == 1, timeout=90, what="the visit summary at the health record")
    except AssertionError:
        raise AssertionError(a.sql("SELECT kind, status, attempts, last_error FROM outbox_messages")) from None
    (summary,) = ehr.accepted.values()
    (patient,) = summary.resources("Patient")
    assert {"system": CCCD_SYSTEM, "value": "079058123456"} in [
        {"system": i.get("system"), "value": i.get("value")} for i in patient["identifier"]]
    assert len(summary.resources("Encounter")) == 1
    assert ["J18.9"] == [c["code"]["coding"][0]["code"] for c in summary.resources("Condition")]
    studies = summary.resources("ImagingStudy")
    assert [s["identifier"][0]["value"] for s in studies] == [f"urn:oid:{uid}"], studies
    assert summary.bundle["entry"][0]["resource"]["resourceType"] == "Composition"
    assert ehr.requests_with(summary.key or "") == [201]  # sent once, accepted once
    assert ("bacsi", "encounter.close") in {tuple(r) for r in a.sql("SELECT username, action FROM audit_log")}


def test_site_down_while_sending_then_back_nothing_lost_nothing_doubled(sites: tuple[Site, Site]) -> None:
    a, b = sites
    order, uid = _order_with_study(a, "079058123999", "Lê Thị Hoa", "CT bụng", slices=4)
    site_b = a.sql("SELECT id FROM network_sites WHERE ae_title = 'SITEB'")[0][0]
    b.stop()
    doctor = http_login(a.url, *PHYSICIAN)
    chart = f"{a.url}/patients/{order['patient_id']}"
    r = _form_post(doctor, chart, f"{a.url}/network/orders/{order['id']}/send", {"site_id": str(site_b)})
    assert r.status_code == 302, r.text
    wait_for(lambda: a.sql("SELECT status FROM network_transfers WHERE order_id = :o", o=order["id"])[0][0]
             == "failed", timeout=60, what="the failed attempt while B is down")
    (error,) = a.sql("SELECT error FROM network_transfers WHERE order_id = :o", o=order["id"])[0]
    assert "Bệnh viện tỉnh B" in error
    assert "Gửi lỗi" in doctor.get(chart, timeout=10).text  # the chart says so, with the reason
    b.start()
    b.wait_ready()
    wait_for(lambda: a.sql("SELECT status FROM network_transfers WHERE order_id = :o", o=order["id"])[0][0]
             == "sent", timeout=120, what="the transfer delivered once B is back")
    held_b = _instances(b.store(), uid)
    assert held_b == _instances(a.store(), uid) and len(held_b["CT"]) == 4, held_b
    rows = b.sql("SELECT patient_id, match_method FROM network_received WHERE study_instance_uid = :u", u=uid)
    assert len(rows) == 1 and rows[0][1] is None  # no such patient at B: listed, not guessed
    attempts = a.sql("SELECT attempts FROM network_transfers WHERE order_id = :o", o=order["id"])[0][0]
    assert attempts >= 2
