"""Login attacks against a real `filmless emr serve`: attempts per second vs chart latency.

Issue 10 found that 16 threads of login attempts pushed chart latency from
20 ms to 2.3 s (Argon2 on every attempt, no limit) and that 110 unfinished
requests made /healthz time out. This script starts the EMR in its own
process (SQLite in a temp dir, production Argon2 parameters), logs a
physician in and measures ``GET /patients/<id>`` (the chart) sequentially:

* baseline — nobody attacks;
* one source — 16 threads of wrong passwords from one address;
* many sources — 16 threads, every attempt from a new address (through the
  trusted proxy's X-Forwarded-For, as a botnet behind nginx would look), so
  the per-source limits never trigger and only the bounded hashing protects;
* half-open — 110 connections from 110 addresses that never finish their
  request; /healthz latency instead of the chart.

Prints p50/p95 per phase, the ratio to the baseline measured in the same
run, and the attack's rate: attempts/s, of which password checks/s (401),
refused by the rate limit (429) and busy (503).

    .venv/bin/python benchmarks/login_attack.py [--seconds 10] [--threads 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emr import Actor, EmrSettings, open_session, upgrade_database  # noqa: E402
from emr.access.users import create_user  # noqa: E402
from emr.patients import encounters  # noqa: E402
from emr.patients import service as patients  # noqa: E402

PASSWORD = "correct horse battery"
SETUP = Actor(None, "bench", "admin", "127.0.0.1")


class _From(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(pool_maxsize=4)

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def _session(source: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", _From(source))
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _csrf(text: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert m
    return m.group(1)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _chart_latencies(session: requests.Session, url: str, seconds: float) -> list[float]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        r = session.get(url, timeout=120)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.status_code
    return out


def _attacker(base: str, threads: int, spread: bool, warmup: float, seconds: float, out: Any) -> None:
    """In its own process (its own GIL: the measuring side must not compete with 16 client threads):
    ``threads`` loops of wrong passwords; puts the status counts of the measured window on ``out``."""
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    window = {"open": False}

    def run(n: int) -> None:
        s = _session("127.0.0.1" if spread else "127.0.0.2")
        token = _csrf(s.get(base + "/login", timeout=60).text)
        i = 0
        while not stop.is_set():
            i += 1
            headers = {"X-Forwarded-For": f"10.{n}.{(i >> 8) & 255}.{i & 255}"} if spread else {}
            try:
                r = s.post(base + "/login", data={"username": "bacsi", "password": f"wrong-{n}-{i}",
                                                  "csrf_token": token}, headers=headers, allow_redirects=False,
                           timeout=120)
                code = r.status_code
            except requests.RequestException:
                code = 0
            if window["open"]:
                with lock:
                    counts[code] += 1

    workers = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    time.sleep(warmup)
    window["open"] = True
    time.sleep(seconds)
    window["open"] = False
    stop.set()
    out.put(dict(counts))
    for w in workers:
        w.join(130)


def _half_open(port: int, count: int) -> list[socket.socket]:
    held = []
    for i in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.{2 + i // 250}.{1 + i % 250}", 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /patients/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(sock)
    return held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--threads", type=int, default=16, help="attacking threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="filmless-login-attack-") as tmp:
        data = Path(tmp)
        port = _free_port()
        settings = EmrSettings(data_dir=data, database_url=f"sqlite:///{data / 'emr.sqlite3'}", port=port,
                               secret_key_file=data / "secret_key")
        upgrade_database(settings)
        with open_session(settings) as s:
            dep = encounters.ensure_department(s, "K19", "Khoa Nội tổng hợp")
            s.commit()
            doctor = create_user(s, SETUP, "bacsi", PASSWORD, "physician", "BS. Nguyễn Văn An",
                                 department_id=dep.id)
            p = patients.create_patient(s, SETUP, {"full_name": "Nguyễn Thị Hồng Nhung", "birth_date": "1990-05-17",
                                                   "sex": "F", "address": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
                                                   "province_code": "79", "phone": "0901234567"})
            encounters.create_encounter(s, Actor(doctor.id, "bacsi", "physician", None), {
                "patient_id": p.id, "kind": "outpatient", "department_code": "K19", "reason": "Ho, sốt"})
            patient_id = p.id
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
        env.update({"FILMLESS_DATA_DIR": str(data), "FILMLESS_EMR_PORT": str(port),
                    "FILMLESS_ORTHANC_URL": f"http://127.0.0.1:{_free_port()}",
                    "FILMLESS_EMR_TRUSTED_PROXY": "127.0.0.1", "PYTHONPATH": str(ROOT)})
        log = open(data / "emr.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen([sys.executable, "-m", "filmless", "emr", "serve"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the EMR did not start: " + (data / "emr.log").read_text()[-2000:])
                time.sleep(0.2)
            chart = base + f"/patients/{patient_id}"
            doctor_session = _session("127.0.0.1")
            token = _csrf(doctor_session.get(base + "/login", timeout=30).text)
            r = doctor_session.post(base + "/login", data={"username": "bacsi", "password": PASSWORD,
                                                           "csrf_token": token}, allow_redirects=False, timeout=60)
            assert r.status_code == 302, r.status_code
            _chart_latencies(doctor_session, chart, 1.0)  # warm-up

            rows = []
            base_lat = _chart_latencies(doctor_session, chart, args.seconds)
            rows.append(("baseline (no attack)", base_lat, None, 0.0))
            for name, spread in (("one source, 16 threads", False), ("many sources, 16 threads", True)):
                results: Any = multiprocessing.Queue()
                attacker = multiprocessing.Process(target=_attacker, daemon=True,
                                                   args=(base, args.threads, spread, 2.0, args.seconds, results))
                attacker.start()
                time.sleep(2.0)
                lat = _chart_latencies(doctor_session, chart, args.seconds)
                window: Counter[int] = Counter(results.get(timeout=300))
                attacker.join(150)
                rows.append((name, lat, window, sum(window.values()) / args.seconds))

            held = _half_open(port, 110)
            try:
                health = []
                deadline = time.monotonic() + args.seconds
                while time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    assert requests.get(base + "/healthz", timeout=30).status_code == 200
                    health.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.05)
            finally:
                for sock in held:
                    sock.close()
        finally:
            server.terminate()
            server.wait(30)
            log.close()

    b50 = statistics.median(base_lat)
    print(f"EMR under login attack ({args.seconds:.0f} s per phase, production Argon2, {os.cpu_count()} cores)")
    print(f"{'phase':<28}{'chart p50':>10}{'p95':>9}{'x base':>8}{'attempts/s':>12}{'401/s':>8}{'429/s':>8}"
          f"{'503/s':>8}")
    for name, lat, counts, rate in rows:
        p50, p95 = statistics.median(lat), _pct(lat, 0.95)
        if counts is None:
            print(f"{name:<28}{p50:>8.1f}ms{p95:>7.1f}ms{p50 / b50:>8.2f}{'-':>12}{'-':>8}{'-':>8}{'-':>8}")
            continue
        total = sum(counts.values()) or 1
        share = {code: rate * counts[code] / total for code in (401, 429, 503)}
        print(f"{name:<28}{p50:>8.1f}ms{p95:>7.1f}ms{p50 / b50:>8.2f}{rate:>12.1f}{share[401]:>8.1f}"
              f"{share[429]:>8.1f}{share[503]:>8.1f}")
    h50, h95 = statistics.median(health), _pct(health, 0.95)
    print(f"{'110 half-open requests':<28}{h50:>8.1f}ms{h95:>7.1f}ms{h50 / b50:>8.2f}   (/healthz, not the chart)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
