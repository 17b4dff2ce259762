"""The gateway under a connection attack (issue 10, items 7 and 8).

Prints, in one run against the gateway run as `python -m filmless gateway`:
  - C-ECHO latency (associate + echo + release, pynetdicom) with nothing else
    going on: the baseline;
  - the same while 40 silent connections and 300 connections sending garbage
    (random bytes, or an A-ASSOCIATE-RQ header followed by a byte trickle)
    are held open from 40 loopback addresses; the ratio against the baseline
    and the target (every echo succeeds, slowest < 2 s);
  - the gateway's RSS before and at peak while a raw socket sends an
    A-ASSOCIATE-RQ header claiming 4 GiB followed by zeros (target: + < 50 MB),
    and how much the socket could push before the gateway closed it.

    .venv/bin/python benchmarks/gateway_attack.py [--echoes 20] [--idle 40] [--garbage 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # noqa: E402

from storage import OrthancProcess, StorageSettings  # noqa: E402

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_gateway(root: Path, orthanc: OrthancProcess, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "FILMLESS_DATA_DIR": str(root),
        "FILMLESS_GATEWAY_PORT": str(port),
        "FILMLESS_GATEWAY_MIN_FREE_MB": "64",
        "FILMLESS_ORTHANC_URL": orthanc.settings.url,
        "FILMLESS_ORTHANC_USER": orthanc.credentials.username,
        "FILMLESS_ORTHANC_PASSWORD": orthanc.credentials.password,
        "FILMLESS_DATABASE_URL": f"sqlite:///{root / 'emr.sqlite3'}",
    })
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "gateway.log", "wb")  # noqa: SIM115 - handed to the child
    subprocess.run([sys.executable, "-m", "filmless", "emr", "migrate"], env=env, stdout=log,
                   stderr=subprocess.STDOUT, check=True)
    proc = subprocess.Popen([sys.executable, "-m", "filmless", "gateway"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if echo_seconds(port) is not None:
            return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"gateway did not start; see {root / 'gateway.log'}")


def echo_seconds(port: int) -> float | None:
    """Seconds for associate + C-ECHO + release, or None when refused or failed."""
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS")
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    if getattr(status, "Status", None) != 0x0000:
        return None
    return time.perf_counter() - started


def echoes(port: int, n: int) -> list[float | None]:
    out = []
    for _ in range(n):
        out.append(echo_seconds(port))
        time.sleep(0.1)
    return out


class Attack:
    def __init__(self, port: int, idle: int, garbage: int) -> None:
        self.port, self.idle, self.garbage = port, idle, garbage
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.opened = threading.Event()

    def _connect(self, source: str) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))
        except OSError:
            return None

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # Reconnect whatever the gateway closed, for as long as the attack runs.
        idle: list[socket.socket | None] = [None] * self.idle
        junk: list[socket.socket | None] = [None] * self.garbage
        while not self.stop.is_set():
            for i, s in enumerate(idle):
                if s is None:
                    idle[i] = self._connect(f"127.0.2.{1 + i // 4}")
            for i, s in enumerate(junk):
                try:
                    if s is None:
                        s = junk[i] = self._connect(f"127.0.3.{1 + i // 10}")
                        if s is not None:
                            s.sendall(b"\x01\x00\x00\x00\x01\x00" if i % 2 else b"\x47" + os.urandom(1023))
                    elif s is not None:
                        s.send(b"\x00")
                except OSError:
                    if s is not None:
                        s.close()
                    junk[i] = None
            self.sockets = [s for s in idle + junk if s is not None]
            self.opened.set()
            self.stop.wait(0.5)
        for s in idle + junk:
            if s is not None:
                s.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def claim_4gib(port: int, pid: int, limit: int = 400 * MIB) -> tuple[int, int, int]:
    before = rss(pid)
    peak = before
    sent = 0
    chunk = bytes(MIB)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        try:
            while sent < limit:
                sock.sendall(chunk)
                sent += MIB
                if sent % (16 * MIB) == 0:
                    peak = max(peak, rss(pid))
        except OSError:
            pass
        time.sleep(1.0)
        peak = max(peak, rss(pid))
    return before, peak, sent


def fmt(samples: list[float | None]) -> str:
    ok = [s for s in samples if s is not None]
    failed = len(samples) - len(ok)
    if not ok:
        return f"all {failed} failed"
    return (f"median {statistics.median(ok) * 1000:.0f} ms, max {max(ok) * 1000:.0f} ms, "
            f"{failed} failed of {len(samples)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echoes", type=int, default=20)
    parser.add_argument("--idle", type=int, default=40)
    parser.add_argument("--garbage", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="filmless-attack-") as tmp:
        root = Path(tmp)
        settings = replace(StorageSettings(), data_dir=root / "orthanc", http_port=free_port(),
                           dicom_port=free_port())
        orthanc = OrthancProcess(settings)
        orthanc.start()
        port = free_port()
        gateway = start_gateway(root / "gw", orthanc, port)
        try:
            baseline = echoes(port, args.echoes)
            attack = Attack(port, args.idle, args.garbage)
            started = time.perf_counter()
            attack.start()
            attack.opened.wait(120)
            print(f"attack: {args.idle + args.garbage} connections made in {time.perf_counter() - started:.1f} s, "
                  f"{len(attack.sockets)} still open on the client side after the first pass")
            during = echoes(port, args.echoes)
            attack.close()
            before, peak, sent = claim_4gib(port, gateway.pid)
            after_ok = echo_seconds(port) is not None
        finally:
            gateway.terminate()
            gateway.wait(30)
            orthanc.stop()
    ok_base = [s for s in baseline if s is not None]
    ok_during = [s for s in during if s is not None]
    print(f"C-ECHO baseline:                       {fmt(baseline)}")
    print(f"C-ECHO during {args.idle} idle + {args.garbage} garbage: {fmt(during)}")
    if ok_base and ok_during:
        ratio = statistics.median(ok_during) / statistics.median(ok_base)
        print(f"  ratio (median during / baseline):    {ratio:.2f}x")
    target = len(ok_during) == len(during) and bool(ok_during) and max(ok_during) < 2.0
    print(f"  target: every echo succeeds, slowest < 2 s: {'met' if target else 'NOT met'}")
    print(f"4 GiB A-ASSOCIATE-RQ claim: gateway RSS {before / MIB:.0f} MiB -> peak {peak / MIB:.0f} MiB "
          f"(+{(peak - before) / MIB:.0f} MiB, target < +50), {sent / MIB:.0f} MiB sent before the close; "
          f"gateway answers C-ECHO afterwards: {after_ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
