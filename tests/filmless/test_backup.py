"""The restore drill: back up a running demo, restore it into a fresh data directory, check it all came back.

Real parts only: ``filmless up --demo`` (Orthanc, gateway, EMR), DCMTK
``storescu`` as the modality, the ``filmless`` commands a hospital would run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
import requests

from storage import open_store
from storage.settings import StorageSettings
from tests.dicom_factory import ct_instance
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.slow

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FILMLESS_DATA_DIR": str(data_dir),
        "FILMLESS_GATEWAY_PORT": str(free_port()),
        "FILMLESS_ORTHANC_HTTP_PORT": str(free_port()),
        "FILMLESS_ORTHANC_DICOM_PORT": str(free_port()),
        "FILMLESS_EMR_PORT": str(free_port()),
        "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
    })
    return env


def _filmless(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "filmless", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def _running(env: dict[str, str]) -> Iterator[list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "filmless", "up", "--demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            wait_for(lambda: "filmless is running" in "".join(output) or proc.poll() is not None, timeout=300,
                     what="filmless up")
        except AssertionError:
            raise AssertionError("".join(output)[-3000:]) from None
        assert proc.poll() is None, "".join(output)[-3000:]
        wait_for(lambda: _port_open(int(env["FILMLESS_EMR_PORT"])), timeout=120, what="the EMR to listen")
        yield output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _store(env: dict[str, str]) -> object:
    data = Path(env["FILMLESS_DATA_DIR"]) / "orthanc"
    return open_store(StorageSettings(data_dir=data, http_port=int(env["FILMLESS_ORTHANC_HTTP_PORT"])))


def _archive(store: object) -> dict[str, str]:
    """Orthanc ID → SHA-256 of the instance's pixel data (or whole file when it has none)."""
    found: dict[str, str] = {}
    offset = 0
    while page := store.instance_ids(since=offset, limit=500):  # type: ignore[attr-defined]
        offset += len(page)
        for instance_id in page:
            data = store.instance_file(instance_id)  # type: ignore[attr-defined]
            ds = pydicom.dcmread(io.BytesIO(data))
            found[instance_id] = hashlib.sha256(ds.PixelData if "PixelData" in ds else data).hexdigest()
    return found


def _signed_pdf(store: object, out: Path) -> Path:
    offset = 0
    while page := store.instance_ids(since=offset, limit=500):  # type: ignore[attr-defined]
        offset += len(page)
        for instance_id in page:
            ds = pydicom.dcmread(io.BytesIO(store.instance_file(instance_id)))  # type: ignore[attr-defined]
            if ds.SOPClassUID == ENCAPSULATED_PDF:
                out.write_bytes(bytes(ds.EncapsulatedDocument).rstrip(b"\0"))
                return out
    raise AssertionError("the demo's signed report is not in the archive")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _login(env: dict[str, str], username: str, password: str) -> int:
    base = f"http://127.0.0.1:{env['FILMLESS_EMR_PORT']}"
    http = requests.Session()
    page = http.get(f"{base}/login", timeout=20).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = http.post(f"{base}/login", data={"username": username, "password": password, "csrf_token": token},
                  allow_redirects=False, timeout=20)
    return r.status_code


def test_backup_of_a_running_demo_restores_into_a_fresh_data_directory(tmp_path: Path) -> None:
    source = _env(tmp_path / "var")
    dest = tmp_path / "backup"
    with _running(source) as output:
        banner = "".join(output)
        demo_user = re.search(r"^\s+\S+\s+(bacsi)\s+(\S+)\s*$", banner, re.M)
        assert demo_user, banner
        study = tmp_path / "ct.dcm"
        study.write_bytes(ct_instance(patient_id="BK-1", patient_name="Lê^Thị Hồng"))
        sent = subprocess.run(["storescu", "-aet", "CT01", "-aec", "FILMLESS", "127.0.0.1",
                               source["FILMLESS_GATEWAY_PORT"], str(study)],
                              capture_output=True, text=True, env=dict(source, TCP_NODELAY="1"))
        assert sent.returncode == 0, sent.stderr
        store = _store(source)
        wait_for(lambda: bool(store.find_studies(patient_id="BK-1")), timeout=60,  # type: ignore[attr-defined]
                 what="the study in Orthanc")
        # Anchor the audit chain at a time-stamping service (the development TSA of the demo PKI).
        tsa_port = free_port()
        tsa = subprocess.Popen([sys.executable, "-m", "filmless", "pki", "tsa", "--port", str(tsa_port)], env=source,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _port_open(tsa_port), timeout=60, what="the development TSA")
            anchored = _filmless(dict(source, FILMLESS_TSA_URL=f"http://127.0.0.1:{tsa_port}/tsa"), "audit", "anchor")
            assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        finally:
            tsa.terminate()
            tsa.wait(30)

        first = _filmless(source, "backup", str(dest))  # while everything runs
        assert first.returncode == 0, first.stdout + first.stderr
        second = _filmless(source, "backup", str(dest))
        assert second.returncode == 0, second.stdout + second.stderr
        before = _archive(store)
        rows_before = _filmless(source, "audit", "verify")
        assert rows_before.returncode == 0, rows_before.stdout + rows_before.stderr

    snapshots = sorted((dest / "snapshots").iterdir())
    assert len(snapshots) == 2 and not [s for s in snapshots if "." in s.name]
    manifests = [json.loads((s / "manifest.json").read_text()) for s in snapshots]
    assert {i["id"] for i in manifests[0]["instances"]} == set(before)
    # The second backup fetched nothing again: the pool holds each instance once.
    pool_files = [p for p in (dest / "instances").rglob("*.dcm")]
    assert len(pool_files) == len(before)
    assert re.search(r"\((\d+) ảnh mới", second.stdout).group(1) == "0", second.stdout  # type: ignore[union-attr]
    # Secrets stay secret in the backup too.
    assert (dest / "snapshots").stat().st_mode & 0o077 == 0 or dest.stat().st_mode & 0o077 == 0
    assert (snapshots[-1] / "emr.sqlite3").stat().st_mode & 0o077 == 0

    check = _filmless(source, "restore", "--check", str(dest))
    assert check.returncode == 0, check.stdout + check.stderr

    target = _env(tmp_path / "restored")
    restored = _filmless(target, "restore", str(dest))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    again = _filmless(target, "restore", str(dest))
    assert again.returncode == 1 and "not empty" in again.stderr, again.stderr

    with _running(target):
        store = _store(target)
        assert _archive(store) == before
        assert _login(target, "bacsi", demo_user.group(2)) == 302
        verified = _filmless(target, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # The restored chain holds every row the backup had (and the restored EMR's own since), and the anchor.
        count = re.compile(r"intact: (\d+) rows.*; (\d+) anchor")
        rows, anchors = map(int, count.search(rows_before.stdout).groups())  # type: ignore[union-attr]
        rows_after, anchors_after = map(int, count.search(verified.stdout).groups())  # type: ignore[union-attr]
        # The restored EMR's own anchor scheduler may anchor again; the backed-up anchor must be there.
        assert rows_after >= rows and anchors_after >= anchors == 1
        pdf = _signed_pdf(store, tmp_path / "report.pdf")
        signature = _filmless(target, "verify", str(pdf))
        assert signature.returncode == 0, signature.stdout + signature.stderr
        # A study that arrives after the restore is still picked up by the linker.
        late = tmp_path / "late.dcm"
        late.write_bytes(ct_instance(patient_id="BK-2", patient_name="Trần^Văn Nam"))
        sent = subprocess.run(["storescu", "-aet", "CT01", "-aec", "FILMLESS", "127.0.0.1",
                               target["FILMLESS_GATEWAY_PORT"], str(late)],
                              capture_output=True, text=True, env=dict(target, TCP_NODELAY="1"))
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: bool(store.find_studies(patient_id="BK-2")), timeout=60,  # type: ignore[attr-defined]
                 what="a new study after the restore")


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = _env(tmp_path / "var")
    with _running(source):
        assert _filmless(source, "backup", str(tmp_path / "backup")).returncode == 0
    pool = sorted((tmp_path / "backup" / "instances").rglob("*.dcm"))
    assert pool, "the demo's archive has instances"
    pool[0].write_bytes(pool[0].read_bytes()[:-10] + b"0123456789")
    target = _env(tmp_path / "restored")
    result = _filmless(target, "restore", str(tmp_path / "backup"))
    assert result.returncode == 1
    assert "damaged" in result.stderr and pool[0].name in result.stderr
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())


def test_backups_started_within_one_second_get_their_own_snapshot_in_order(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs in the same second (a cron job and an operator) must not collide: the last CI run did."""
    from datetime import datetime as real_datetime

    import filmless.backup as backup_module

    class FrozenClock(real_datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return real_datetime(2026, 12, 7, 9, 14, 5).astimezone(tz)

    monkeypatch.setattr(backup_module, "datetime", FrozenClock)
    folder = tmp_path / "backup" / "snapshots"
    claimed = [backup_module._claim_snapshot(folder) for _ in range(12)]
    names = [snapshot.name for snapshot, _work in claimed]
    assert len(set(names)) == 12
    assert names == sorted(names), "latest_snapshot picks the last name: the order must be the start order"
    for snapshot, work in claimed:
        assert work.is_dir() and not snapshot.exists()
        work.rename(snapshot)
    assert backup_module.latest_snapshot(tmp_path / "backup").name == names[-1]
