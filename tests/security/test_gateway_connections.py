"""Issue 10, item 7: connections that never associate must not lock modalities out.

Real sockets from several loopback addresses (Linux routes all of
127.0.0.0/8 to lo), a real gateway, DCMTK's echoscu as the modality.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated module

from pacs_gateway import Gateway
from pacs_gateway.admission import Admission
from pacs_gateway.peers import PeerPolicy
from storage import OrthancStore
from tests.pacs_gateway.conftest import dcmtk, gateway_settings


@pytest.fixture
def start_gateway(orthanc: OrthancStore, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(**overrides: object) -> Gateway:
        overrides.setdefault("spool_dir", tmp_path / f"spool{len(started)}")
        gw = Gateway(gateway_settings(**overrides), orthanc)
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the gateway closes ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _echoscu(port: int, aet: str = "CT01") -> tuple[bool, float, str]:
    started = time.monotonic()
    done = dcmtk("echoscu", "-aet", aet, "-aec", "FILMLESS", "-to", "20", "-ta", "20", "127.0.0.1", str(port),
                 timeout=60)
    return done.returncode == 0, time.monotonic() - started, done.stdout + done.stderr


class _Attack:
    """40 silent connections and 300 sending garbage, kept open and busy while the test runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def open(self) -> None:
        # Ten addresses with four silent connections each: under the per-address limit,
        # so only the association-slot accounting can keep them from locking others out.
        for i in range(40):
            self.sockets.append(_connect(self.port, f"127.0.0.{2 + i // 4}"))
        garbage = [_connect(self.port, f"127.0.1.{1 + i // 10}") for i in range(300)]
        self.sockets.extend(garbage)
        # Half random bytes, half an A-ASSOCIATE-RQ header followed by a trickle.
        for n, sock in enumerate(garbage):
            try:
                if n % 2:
                    sock.sendall(b"\x01\x00\x00\x00\x01\x00")
                else:
                    sock.sendall(b"\x47" + os.urandom(1023))
            except OSError:
                pass
        t = threading.Thread(target=self._trickle, args=(garbage,), daemon=True)
        t.start()
        self.threads.append(t)

    def _trickle(self, garbage: list[socket.socket]) -> None:
        while not self.stop.wait(0.5):
            for sock in garbage:
                try:
                    sock.send(b"\x00")
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for sock in self.sockets:
            sock.close()


def test_echo_succeeds_while_40_idle_and_300_garbage_connections_are_open(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway(allowed_peers=("CT01@127.0.0.1", "*@127.0.0.0/8"), max_associations=32)
    attack = _Attack(gw.port)
    try:
        attack.open()
        ok, seconds, output = _echoscu(gw.port)
        assert ok, output
        # Generous bound (the 2 s target is measured in benchmarks/gateway_attack.py).
        assert seconds < 20
        # A pynetdicom modality too, several times while the attack continues.
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        for _ in range(3):
            assoc = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
            assert assoc.is_established, "association refused during the attack"
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
    finally:
        attack.close()
    # The garbage was thrown out (at the gate, or at accept once 256 were waiting), not parked.
    assert gw.admission.refused["no_request"] + gw.admission.refused["pending"] >= 150


@pytest.mark.parametrize("opening", [b"", b"\x01", b"\x01\x00\x00\x00\x00\xc8\x00\x01"], ids=["silent", "one-byte",
                                                                                          "header-then-trickle"])
def test_connection_without_a_timely_request_is_closed(
    start_gateway: Callable[..., Gateway], opening: bytes
) -> None:
    gw = start_gateway(request_timeout=2.0, network_timeout=60.0)
    sock = _connect(gw.port, "127.0.0.1")
    try:
        if opening:
            sock.sendall(opening)
        stop = threading.Event()

        def trickle() -> None:
            # One byte at a time, as the probe did every 30 s (faster here).
            while not stop.wait(0.5):
                try:
                    sock.send(b"\x00")
                except OSError:
                    return

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        started = time.monotonic()
        assert _closed_by_peer(sock, within=20), "gateway kept a connection without a request open"
        assert time.monotonic() - started < 20
        stop.set()
        t.join(5)
    finally:
        sock.close()


def test_disallowed_address_is_closed_at_accept(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(allowed_peers=("CT01@127.0.0.1",), request_timeout=30.0, network_timeout=60.0)
    sock = _connect(gw.port, "127.0.0.5")
    try:
        # Nothing was sent: the address alone is enough to refuse, before any slot or thread.
        assert _closed_by_peer(sock, within=3)
    finally:
        sock.close()
    assert gw.admission.refused["address"] == 1
    ok, _, output = _echoscu(gw.port)
    assert ok, output


def test_a_flood_of_refused_connections_does_not_flood_the_log(
    start_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pacs_gateway")
    gw = start_gateway(allowed_peers=("CT01@127.0.0.1",))
    for _ in range(50):
        sock = _connect(gw.port, "127.0.0.5")
        assert _closed_by_peer(sock, within=3)
        sock.close()
    assert gw.admission.refused["address"] == 50
    lines = [r.getMessage() for r in caplog.records if "refusing connection from 127.0.0.5" in r.getMessage()]
    assert 1 <= len(lines) <= 10


def test_connections_per_address_are_limited(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(max_connections_per_ip=4, request_timeout=30.0, network_timeout=60.0)
    held = [_connect(gw.port, "127.0.0.6") for _ in range(4)]
    extra = _connect(gw.port, "127.0.0.6")
    try:
        assert _closed_by_peer(extra, within=3), "fifth connection from one address was kept"
        assert gw.admission.refused["per_ip"] >= 1
        # Others are not affected, and the held connections still count as open.
        ok, _, output = _echoscu(gw.port)
        assert ok, output
        assert gw.admission.open_connections("127.0.0.6") == 4
    finally:
        for s in [*held, extra]:
            s.close()


def test_association_slots_still_limit_real_associations(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(max_associations=2)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    second = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    third = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    try:
        assert first.is_established and second.is_established
        assert third.is_rejected
        assert (third.acceptor.primitive.result, third.acceptor.primitive.diagnostic) == (0x02, 0x02)
    finally:
        first.release()
        second.release()
    fourth = ae.associate("127.0.0.1", gw.port, ae_title="FILMLESS")
    assert fourth.is_established
    fourth.release()


def test_address_book_forgets_closed_connections_of_many_addresses() -> None:
    """A scan from thousands of addresses must not grow the per-address book for ever."""
    admission = Admission(PeerPolicy(["*"]), max_associations=4, per_ip=2, max_pending=10_000,
                          request_timeout=1.0, max_pdu_size=1 << 20)
    for i in range(1500):
        sock = socket.socket()
        assert admission.accept(sock, (f"10.{i // 250}.{i % 250}.1", 104)) is None
        admission.request_done()
        sock.close()
    assert len(admission._connections) <= 1025
    held = socket.socket()
    try:
        assert admission.accept(held, ("10.9.9.9", 104)) is None
        assert admission.open_connections("10.9.9.9") == 1
    finally:
        held.close()


def test_the_emr_sites_list_is_refreshed_without_holding_up_connections() -> None:
    """Only the first check waits for the EMR's list; later ones use the last good list while
    a background thread reads the new one (the acceptor thread never waits on the database)."""
    answers = [["SITEB@10.0.0.0/8"], ["SITEC@192.168.0.0/16"]]
    release = threading.Event()
    calls: list[int] = []

    def sites() -> list[str]:
        calls.append(1)
        if len(calls) > 1:
            release.wait(30)  # a slow database
        return answers[min(len(calls), 2) - 1]

    policy = PeerPolicy(["CT01@127.0.0.1"], extra=sites, refresh=0.0)
    assert policy.address_allowed("10.1.2.3") and policy.check("SITEB", "10.1.2.3") is None
    done = threading.Event()

    def connect() -> None:
        for _ in range(5):
            assert policy.address_allowed("10.1.2.3")  # stale but good, while the refresh hangs
            assert not policy.address_allowed("192.168.1.1")
        done.set()

    threading.Thread(target=connect, daemon=True).start()
    assert done.wait(10), "a connection waited for the EMR's list"
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert policy.address_allowed("10.1.2.3")
    assert len(calls) == 2  # one refresh at a time
    release.set()
    deadline = time.monotonic() + 10
    while not policy.address_allowed("192.168.1.1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert policy.check("SITEC", "192.168.1.1") is None
    assert policy.check("SITEB", "10.1.2.3") is not None
