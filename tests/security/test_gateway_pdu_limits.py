"""Issue 10, item 8: a PDU claiming 4 GiB must not be buffered.

The gateway runs as its own process so its resident memory can be read from
/proc while a raw socket streams zeros after the claim.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated module

from storage import OrthancProcess
from tests.helpers import free_port, wait_for
from tests.pacs_gateway.conftest import echo

ROOT = Path(__file__).resolve().parents[2]
_CLAIM = 0xFFFFFFFF  # 4 GiB - 1, the largest a PDU header can say
_MIB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway_process(orthanc_process: OrthancProcess, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pacs_gateway.run_gateway", str(port), str(tmp_path / "spool"),
         orthanc_process.settings.url, orthanc_process.credentials.username, orthanc_process.credentials.password],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for(lambda: proc.poll() is None and echo(port), timeout=60, what="gateway process to answer C-ECHO")
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stream_zeros(sock: socket.socket, pid: int, limit: int = 400 * _MIB) -> tuple[int, int]:
    """Send zeros until the gateway closes the connection or ``limit`` is sent; return (sent, peak RSS)."""
    chunk = bytes(_MIB)
    sent, peak = 0, _rss(pid)
    sock.settimeout(10)
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
            if sent % (16 * _MIB) == 0:
                peak = max(peak, _rss(pid))
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    # Give a buffering reader the time to take in what is in flight.
    time.sleep(1.0)
    return sent, max(peak, _rss(pid))


def test_association_request_claiming_4_gib_is_not_buffered(
    gateway_process: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = gateway_process
    before = _rss(proc.pid)
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(struct.pack(">BBL", 0x01, 0, _CLAIM))
        sent, peak = _stream_zeros(sock, proc.pid)
    finally:
        sock.close()
    print(f"A-ASSOCIATE-RQ claiming 4 GiB: {sent / _MIB:.0f} MiB accepted by the socket, "
          f"gateway RSS {before / _MIB:.0f} -> peak {peak / _MIB:.0f} MiB")
    assert peak - before < 50 * _MIB
    assert sent < 400 * _MIB, "the gateway kept reading the claimed request"
    assert proc.poll() is None
    assert echo(port)


def test_p_data_longer_than_negotiated_is_aborted(gateway_process: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = gateway_process
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FILMLESS")
    assert assoc.is_established
    announced = assoc.acceptor.maximum_length
    assert 0 < announced <= 64 * _MIB  # the gateway announces a finite maximum
    before = _rss(proc.pid)
    raw = assoc.dul.socket.socket
    raw.sendall(struct.pack(">BBL", 0x04, 0, _CLAIM))
    sent, peak = 0, before
    try:
        sent, peak = _stream_zeros(raw, proc.pid)
    except OSError:
        pass
    wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=15, what="the association to be aborted")
    assert peak - before < 50 * _MIB
    assert sent < 400 * _MIB
    assert echo(port)
