"""Demo leftovers and printed secrets, with real `filmless up` runs (issue 10, items 14 and 15).

1. ``filmless up --demo`` runs; its banner says where the Orthanc password is
   kept and never prints it.
2. Stopped and started again without ``--demo``, the same data directory is
   refused with a clear message: its demo passwords are published and its
   development CA signs anything.
3. ``filmless demo --disable`` ends the demo; ``filmless up`` then runs, the
   published passwords do not log in, the development CA is not trusted and
   its TSA is not started — and the banner still hides the Orthanc password.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from emr.demo.seed import DEMO_ACCOUNTS
from storage import load_or_create_credentials
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]


class Up:
    """A `filmless up` child with its output collected."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "filmless", "up", *args], env=env, cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                       daemon=True)  # type: ignore[union-attr]
        self.reader.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_banner(self, timeout: float = 240) -> str:
        try:
            wait_for(lambda: "filmless is running" in self.text or self.proc.poll() is not None, timeout=timeout,
                     what="the banner")
        except AssertionError:
            raise AssertionError(self.text[-4000:]) from None
        assert "filmless is running" in self.text, self.text[-4000:]
        return self.text

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.reader.join(5)


def _login(base: str, username: str, password: str) -> int:
    s = requests.Session()
    page = s.get(base + "/login", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    r = s.post(base + "/login", data={"username": username, "password": password, "csrf_token": token.group(1)},
               allow_redirects=False, timeout=60)
    return r.status_code


@pytest.mark.slow
def test_demo_dir_is_refused_without_demo_until_disabled_and_no_password_is_printed(tmp_path: Path) -> None:
    data = tmp_path / "var"
    ports = {name: free_port() for name in ("gw", "http", "dicom", "emr")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env.update({
        "FILMLESS_DATA_DIR": str(data),
        "FILMLESS_GATEWAY_PORT": str(ports["gw"]),
        "FILMLESS_ORTHANC_HTTP_PORT": str(ports["http"]),
        "FILMLESS_ORTHANC_DICOM_PORT": str(ports["dicom"]),
        "FILMLESS_EMR_PORT": str(ports["emr"]),
        "FILMLESS_GATEWAY_MIN_FREE_MB": "16",
        "PYTHONPATH": str(REPO),
    })
    base = f"http://127.0.0.1:{ports['emr']}"
    admin, admin_password = DEMO_ACCOUNTS[0][0], DEMO_ACCOUNTS[0][1]

    demo = Up(env, "--demo")
    try:
        banner = demo.wait_banner()
        secret = load_or_create_credentials(data / "orthanc").password
        assert secret not in banner  # item 14, with --demo
        assert str(data / "orthanc" / "credentials.json") in banner
        assert (data / "orthanc" / "credentials.json").stat().st_mode & 0o077 == 0
        wait_for(lambda: _healthy(base), timeout=60, what="the EMR")
        assert _login(base, admin, admin_password) == 302  # the demo works as published
        assert "started tsa" in demo.text  # the development TSA runs in the demo
    finally:
        assert demo.stop() == 0, demo.text[-3000:]

    again = Up(env)
    code = again.proc.wait(120)
    again.reader.join(5)
    assert code == 2, again.text[-3000:]
    assert "filmless demo --disable" in again.text and admin in again.text
    assert "filmless is running" not in again.text

    disabled = subprocess.run([sys.executable, "-m", "filmless", "demo", "--disable"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=180)
    assert disabled.returncode == 0, disabled.stderr
    assert admin in disabled.stdout and "trust anchor" in disabled.stdout

    real = Up(env)
    try:
        banner = real.wait_banner()
        assert secret not in banner  # item 14, without --demo
        assert "Demo accounts" not in banner
        wait_for(lambda: _healthy(base), timeout=60, what="the EMR")
        for username, password, *_ in DEMO_ACCOUNTS:
            assert _login(base, username, password) == 401, username
        assert "started tsa" not in real.text and not (data / "pki" / "dev" / "ca.pem").exists()
        anchors = data / "pki" / "trust-anchors"
        from emr.signing import list_trust_anchors

        assert not [a for a in list_trust_anchors(anchors) if a.is_development]
    finally:
        assert real.stop() == 0, real.text[-3000:]


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
