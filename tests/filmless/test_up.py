"""``filmless up`` as a user runs it: everything starts, a study goes in, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from storage import load_or_create_credentials, open_store
from storage.settings import StorageSettings
from tests.dicom_factory import ct_instance
from tests.helpers import free_port, wait_for


def _children(pid: int) -> set[int]:
    """All descendants of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_up_runs_the_stack_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("gw", "http", "dicom", "emr", "hl7", "metrics")}
    env = dict(os.environ)
    env.update({
        "FILMLESS_DATA_DIR": str(tmp_path / "var"),
        "FILMLESS_GATEWAY_PORT": str(ports["gw"]),
        "FILMLESS_ORTHANC_HTTP_PORT": str(ports["http"]),
        "FILMLESS_ORTHANC_DICOM_PORT": str(ports["dicom"]),
        "FILMLESS_EMR_PORT": str(ports["emr"]),
        "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
        "FILMLESS_HL7_PORT": str(ports["hl7"]),  # issue 15 §5: the HL7 listener is a part of the stack
        "FILMLESS_GATEWAY_METRICS_PORT": str(ports["metrics"]),
    })
    proc = subprocess.Popen([sys.executable, "-m", "filmless", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "filmless is running" in "".join(output), timeout=90, what="the banner")
        text = "".join(output)
        creds = load_or_create_credentials(tmp_path / "var" / "orthanc")
        assert f"port {ports['gw']}" in text
        assert creds.password not in text  # never printed (issue 10): the banner says where it is kept
        assert str(tmp_path / "var" / "orthanc" / "credentials.json") in text
        assert (tmp_path / "var" / "orthanc" / "credentials.json").stat().st_mode & 0o077 == 0

        wait_for(lambda: subprocess.run(["echoscu", "-aet", "CT01", "-aec", "FILMLESS", "127.0.0.1",
                                         str(ports["gw"])], capture_output=True).returncode == 0,
                 timeout=30, what="the gateway to answer C-ECHO")
        study = tmp_path / "study.dcm"
        study.write_bytes(ct_instance(patient_id="UP-1", patient_name="Võ^Thị Sáu"))
        sent = subprocess.run(["storescu", "-aet", "CT01", "-aec", "FILMLESS", "127.0.0.1", str(ports["gw"]),
                               str(study)], capture_output=True, text=True, env=dict(env, TCP_NODELAY="1"))
        assert sent.returncode == 0, sent.stderr
        store = open_store(StorageSettings(data_dir=tmp_path / "var" / "orthanc", http_port=ports["http"]))
        try:
            wait_for(lambda: bool(store.find_studies(patient_id="UP-1")), timeout=30, what="the study in Orthanc")
        except AssertionError:
            raise AssertionError("".join(output)[-4000:]) from None
        assert store.find_studies(patient_id="UP-1")[0].patient_name == "Võ^Thị Sáu"

        # Issue 16 §3: the gateway process's /metrics counted the instance; the EMR's answers too.
        token = (tmp_path / "var" / "metrics-token").read_text().strip()
        bearer = {"Authorization": f"Bearer {token}"}
        gateway_metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", headers=bearer, timeout=10)
        assert "filmless_gateway_instances_received_total 1.0" in gateway_metrics.text, gateway_metrics.text[:2000]
        emr_metrics = requests.get(f"http://127.0.0.1:{ports['emr']}/metrics", headers=bearer, timeout=10)
        assert emr_metrics.status_code == 200 and "filmless_emr_orthanc_up 1.0" in emr_metrics.text

        check = subprocess.run([sys.executable, "-m", "filmless", "check"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert "[ok  ] storage" in check.stdout and "[ok  ] gateway" in check.stdout, check.stdout
        assert "[ok  ] emr" in check.stdout, check.stdout

        assert f"HL7 v2 (MLLP)    port {ports['hl7']}" in text
        from tests.emr.hl7_support import adt, mllp, msa

        wait_for(lambda: _listening(ports["hl7"]), timeout=30, what="the HL7 listener")
        assert msa(mllp(ports["hl7"], adt("UP-HL7-1", "A04", "HISUP1", "Võ^Sáu^Thị", facility="BV01")))[1] == "AA"

        children = _children(proc.pid)
        assert len(children) >= 4  # storage (with Orthanc under it), gateway, hl7, ...
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "".join(output)[-3000:]
    # A first start on an empty data folder: the gateway never finds the EMR's tables missing.
    assert "no such table" not in "".join(output), [line for line in output if "no such table" in line]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "children left running after Ctrl-C"
