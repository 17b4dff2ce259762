"""Shared pieces of the HL7 tests: a real MLLP client on a plain socket, messages, a site with a listener."""

from __future__ import annotations

import shutil
import socket
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emr import EmrSettings, upgrade_database
from emr.core.settings import Hl7Settings
from emr.db import make_engine, make_session_factory
from emr.hl7.mllp import Listener, start_listener

VT, FS_CR = b"\x0b", b"\x1c\r"


def frame(data: bytes) -> bytes:
    return VT + data + FS_CR


def mllp(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send one framed message on a new connection and read the framed answer (b'' if closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame(data))
        return read_frame(sock)


def read_frame(sock: socket.socket) -> bytes:
    buf = b""
    while FS_CR not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        buf += chunk
    return buf.split(FS_CR, 1)[0].lstrip(VT)


def msa(ack: bytes, codec: str = "utf-8") -> list[str]:
    """MSA fields of an ACK: [MSA, code, control id, text]."""
    for seg in ack.decode(codec).split("\r"):
        if seg.startswith("MSA|"):
            return seg.split("|")
    raise AssertionError(f"no MSA in {ack!r}")


def err(ack: bytes, codec: str = "utf-8") -> list[str]:
    for seg in ack.decode(codec).split("\r"):
        if seg.startswith("ERR|"):
            return seg.split("|")
    raise AssertionError(f"no ERR in {ack!r}")


def msh(control: str, kind: str, *, facility: str = "BV01", charset: str = "UNICODE UTF-8", version: str = "2.5"
        ) -> str:
    return f"MSH|^~\\&|HIS|{facility}|FILMLESS|00000|20261207083000+0700||{kind}|{control}|P|{version}||||||{charset}"


def adt(control: str, event: str, his_id: str, name: str = "Nguyễn^An^Văn", *, born: str = "19800102",
        sex: str = "M", cccd: str = "", extra: str = "", **kw: Any) -> bytes:
    ids = f"{his_id}^^^BV01^PI" + (f"~{cccd}^^^^NNVNM" if cccd else "")
    segs = [msh(control, f"ADT^{event}^ADT_A01", **kw), f"EVN|{event}|20261207083000",
            f"PID|1||{ids}||{name}||{born}|{sex}|||12 Lê Lợi^^Phường Bến Thành^Thành phố Hồ Chí Minh||0901234567",
            "PV1|1|O"]
    if extra:
        segs.append(extra)
    return "\r".join(segs).encode("utf-8")


def start_in(hours: float) -> str:
    """An order's start ``hours`` from now as an HL7 DTM in UTC: orders are held to the scheduling window
    (today to one year ahead, facility time), so the messages cannot carry a fixed date."""
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y%m%d%H%M%S+0000")


def orm(control: str, placer: str, his_id: str, *, control_code: str = "NW", modality: str = "CT",
        name: str = "Nguyễn^An^Văn", start: str | None = None) -> bytes:
    return "\r".join([
        msh(control, "ORM^O01", version="2.3"),
        f"PID|1||{his_id}^^^BV01^PI||{name}||19800102|M",
        "PV1|1|O",
        f"ORC|{control_code}|{placer}^HIS|||||^^^{start or start_in(1)}^^S",
        f"OBR|1|{placer}^HIS||CT.SN^Chụp CT sọ não không tiêm thuốc cản quang|||||||||Đau đầu, chóng mặt sau ngã"
        f"|||||||||||{modality}",
    ]).encode("utf-8")


def omi(control: str, placer: str, his_id: str, *, start: str | None = None, station: str = "") -> bytes:
    return "\r".join([
        msh(control, "OMI^O23^OMI_O23"),
        f"PID|1||{his_id}^^^BV01^PI||Trần^Bích^Thị||19751120|F",
        "PV1|1|O",
        f"ORC|NW|{placer}^HIS",
        f"TQ1|1||||||{start or start_in(2)}||R",
        f"OBR|1|{placer}^HIS||US.OB^Siêu âm ổ bụng tổng quát",
        "IPC|ACC-HIS-1|RP1|1.2.3.4.999|SPS1|US" + (f"||||{station}" if station else ""),  # IPC-9 scheduled AE
    ]).encode("utf-8")


_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}


def cp1258(text: str) -> bytes:
    """Vietnamese as a Windows-1258 HIS writes it: base letters precomposed, tone marks combining."""
    out = b""
    for ch in text:
        try:
            out += ch.encode("cp1258")
        except UnicodeEncodeError:
            parts = unicodedata.normalize("NFD", ch)
            base = unicodedata.normalize("NFC", "".join(p for p in parts if p not in _TONES))
            out += (base + "".join(p for p in parts if p in _TONES)).encode("cp1258")
    return out


@dataclass
class Site:
    settings: EmrSettings
    factory: Any
    listener: Listener

    @property
    def port(self) -> int:
        return self.listener.port

    def session(self) -> Any:
        return self.factory()


def sqlite_database(tmp: Path, template: Path | None) -> str:
    """A migrated SQLite file: a copy of the session's template, or migrated here (the benchmark)."""
    path = tmp / "emr.sqlite3"
    url = f"sqlite:///{path}"
    if template is not None:
        shutil.copy(template, path)
    else:
        upgrade_database(EmrSettings(database_url=url))
    return url


def site(url: str, tmp: Path, *, stations: tuple[str, ...] = (), **hl7: Any) -> Iterator[Site]:
    settings = EmrSettings(
        data_dir=tmp, database_url=url, secret_key_file=tmp / "secret_key", public_url="https://emr.benhvien.example",
        facility_code="79001", modality_stations=stations,
        hl7=Hl7Settings(**{"allowed": ("BV01@127.0.0.0/8", "BV02@127.0.0.0/8"), "read_timeout": 3.0, **hl7}),
    )
    engine = make_engine(url)
    factory = make_session_factory(engine)
    listener = start_listener(settings, factory, port=0)
    try:
        yield Site(settings, factory, listener)
    finally:
        listener.stop()
        engine.dispose()
