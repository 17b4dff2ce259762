"""One inbound HL7 message: decode by its charset, check the sender, apply it, answer with an ACK, log it.

Acknowledgement in original mode (HL7 v2.5 §2.9.2): AA when applied, AE when
understood but not applied (unknown patient, refused data), AR when refused
unread (unknown sender, unsupported type, malformed, undecodable). Errors carry an
ERR segment (§2.15.5: ERR-2 location, ERR-3 code from table 0357 "HL70357", ERR-4
severity E) and MSA-3 text for HIS that read only v2.3 acknowledgements. The
ACK goes out in the charset the message came in (MSH-18 copied).

A retransmission (same sending facility and MSH-10 control ID as a message
already applied) is answered AA again without applying it twice.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import hl7
from hl7.util import generate_message_control_id
from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.settings import Hl7Settings
from emr.models import Hl7Message

from .charsets import UnknownCharset, decode_message
from .fields import Hl7Error, escape, get
from .orders import apply_order
from .patients import apply_adt

__all__ = ["Outcome", "process", "peer_allowed", "facility_allowed", "refuse_connection"]

log = logging.getLogger(__name__)

_ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}


@dataclass(frozen=True)
class Outcome:
    ack: bytes
    message_id: int
    ack_code: str


def _networks(allowed: tuple[str, ...]) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    out = []
    for entry in allowed:
        facility, _, addr = entry.rpartition("@")
        out.append((facility, ipaddress.ip_network(addr, strict=False)))
    return out


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address (IPv4, IPv6 with or without brackets or zone) as an IP; IPv4-mapped IPv6 as IPv4."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None else ip


def peer_allowed(settings: Hl7Settings, ip: str) -> bool:
    """May this address connect at all (some entry names its network)?"""
    addr = _ip(ip)
    return addr is not None and any(addr in net for _, net in _networks(settings.allowed))


def facility_allowed(settings: Hl7Settings, facility: str, ip: str) -> bool:
    addr = _ip(ip)
    return addr is not None and any(
        (name == "*" or name == facility) and addr in net for name, net in _networks(settings.allowed)
    )


def _now_hl7() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def _ack(msg: hl7.Message | None, code: str, error: Hl7Error | None, settings: Hl7Settings, facility_code: str,
         control_id: str, sender: tuple[str, str] = ("", "")) -> str:
    if msg is not None:
        ack = msg.create_ack(ack_code=code, application=settings.application, facility=facility_code)
        lines = str(ack).split("\r")
        msh = lines[0].split("|")
        msh[6] = _now_hl7()  # python-hl7 writes naive UTC; say so (+0000)
        charset = get(msg, "MSH", 18)
        if charset:  # MSH-18 copied: python-hl7's create_ack stops at MSH-12
            msh += [""] * (18 - len(msh))
            msh[17] = escape(charset)
        lines[0] = "|".join(msh)
        text = "\r".join(lines)
    else:
        # Unreadable message: our own MSH, its control ID (from the ASCII header) in MSA-2.
        text = (f"MSH|^~\\&|{escape(settings.application)}|{escape(facility_code)}|{escape(sender[0])}|"
                f"{escape(sender[1])}|{_now_hl7()}||ACK|{generate_message_control_id()}|P|2.5\r"
                f"MSA|{code}|{escape(control_id)}")
    if error is not None:
        lines = text.split("\r")
        msa = lines[1].split("|")
        msa += [""] * (4 - len(msa))
        msa[3] = escape(error.text[:80])
        lines[1] = "|".join(msa[:4])
        lines.append(f"ERR||{error.location}|{error.code}^{escape(error.text[:200])}^HL70357|E||||"
                     f"{escape(error.text[:250])}")
        text = "\r".join(lines)
    return text


def _header(raw: bytes) -> dict[int, str]:
    """MSH-n (first component) read from the undecoded bytes as Latin-1: MSH is ASCII in every
    table 0211 set but UTF-16/32, so the control ID can be answered even when the body cannot be read."""
    first = raw.replace(b"\n", b"\r").split(b"\r", 1)[0].decode("latin-1")
    if not first.startswith("MSH") or len(first) < 8:
        return {}
    sep, comp = first[3], first[4]
    fields = first.split(sep)
    out = {n: fields[n - 1] for n in range(3, min(len(fields) + 1, 13))}
    if 9 in out:
        out[9] = "^".join(out[9].split(comp)[:2])
    return out


def _log(session: Session, **values: object) -> Hl7Message:
    row = Hl7Message(direction="in", **values)
    session.add(row)
    session.flush()
    return row


def refuse_connection(session: Session, peer: str, reason: str, raw: bytes = b"") -> int:
    """A connection or message refused before it was read (unknown address, too big, too slow): logged, audited."""
    row = _log(session, peer=peer[:80], raw=raw[:65536], status="rejected", ack_code=None, error=reason[:2000])
    audit.record(session, Actor(None, "hl7", None, peer.rsplit(":", 1)[0][:64]), "hl7.refused", outcome="denied",
                 object_type="hl7_message", object_id=row.id, details={"peer": peer, "reason": reason[:200]})
    session.commit()
    return row.id


def _duplicate(session: Session, facility: str, control_id: str) -> Hl7Message | None:
    if not control_id:
        return None
    return session.scalar(
        select(Hl7Message).where(
            Hl7Message.direction == "in",
            Hl7Message.sending_facility == facility,
            Hl7Message.control_id == control_id,
            Hl7Message.status == "processed",
        ).limit(1)
    )


def process(
    session: Session,
    raw: bytes,
    *,
    peer: str,
    settings: Hl7Settings,
    facility_code: str,
    replay_of: int | None = None,
    replayed_by: Actor | None = None,
    stations: Collection[str] = (),
) -> Outcome:
    """Apply one message and return the ACK bytes; never raises for a bad message (it is answered).

    ``stations``: ``EmrSettings.modality_stations``, the AE titles an order's station (IPC-9) may name."""
    ip = peer.rsplit(":", 1)[0] if replay_of is None else "127.0.0.1"
    msg: hl7.Message | None = None
    codec = settings.default_charset
    facility = control_id = kind = app = ""
    error: Hl7Error | None = None
    status, code = "processed", "AA"
    patient_id = order_id = None
    try:
        header = _header(raw)  # read from the ASCII part: logged and answered even when the rest cannot be
        app, facility, control_id = header.get(3, "")[:180], header.get(4, "")[:180], header.get(10, "")[:199]
        kind = header.get(9, "")[:20]
        try:
            text, codec = decode_message(raw, settings.default_charset)
        except UnknownCharset as exc:
            raise Hl7Error("103", f"MSH-18 {exc} is not a known character set", location="MSH^1^18",
                           ack_code="AR") from None
        except UnicodeDecodeError as exc:
            raise Hl7Error("102", f"the message is not valid {codec} (byte {exc.start})", location="MSH^1^18",
                           ack_code="AR") from None
        text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        if not text.startswith("MSH") or len(text) < 8:
            raise Hl7Error("100", "the message does not begin with an MSH segment", location="MSH", ack_code="AR")
        try:
            msg = hl7.parse(text)
        except Exception as exc:  # noqa: BLE001 - python-hl7 raises plain errors on malformed input
            raise Hl7Error("100", f"malformed message: {exc}", location="MSH", ack_code="AR") from None
        facility, app, control_id = get(msg, "MSH", 4)[:180], get(msg, "MSH", 3)[:180], get(msg, "MSH", 10)[:199]
        kind, event = get(msg, "MSH", 9, 1).upper(), get(msg, "MSH", 9, 2).upper()
        if not event and get(msg, "EVN", 1):
            event = get(msg, "EVN", 1).upper()
        if not kind:
            raise Hl7Error("101", "MSH-9 message type is required", location="MSH^1^9", ack_code="AR")
        kind = f"{kind}^{event}"
        if not control_id:
            raise Hl7Error("101", "MSH-10 message control ID is required", location="MSH^1^10", ack_code="AR")
        if replay_of is None and not facility_allowed(settings, facility, ip):
            raise Hl7Error("207", f"sending facility {facility!r} from {ip} is not allowed", location="MSH^1^4",
                           ack_code="AR")
        actor = Actor(None, f"hl7:{facility}"[:64] or "hl7", None, ip[:64])
        previous = _duplicate(session, facility, control_id) if replay_of is None else None
        if previous is not None:
            status, patient_id, order_id = "duplicate", previous.patient_id, previous.order_id
        elif kind.startswith("ADT^"):
            patient = apply_adt(session, actor, msg, event, facility, control_id)
            patient_id = patient.id
        elif (kind.split("^")[0], event) in _ORDER_TYPES:
            order = apply_order(session, actor, msg, facility, stations=stations)
            order_id, patient_id = order.id, order.patient_id
        elif kind.split("^")[0] in ("ADT", "ORM", "OMI"):
            raise Hl7Error("201", f"{kind} is not supported", location="MSH^1^9^1^2", ack_code="AR")
        else:
            raise Hl7Error("200", f"{kind} is not supported (ADT, ORM^O01, OMI^O23 are)", location="MSH^1^9",
                           ack_code="AR")
    except Hl7Error as exc:
        session.rollback()
        error, code = exc, exc.ack_code
        status = "rejected" if code == "AR" else "error"
    except Exception as exc:  # noqa: BLE001 - an internal failure is answered AE and logged, never a hang
        session.rollback()
        log.exception("HL7 message from %s failed", peer)
        error, code, status = Hl7Error("207", f"internal error: {type(exc).__name__}: {exc}"), "AE", "error"
    ack_text = _ack(msg, code, error, settings, facility_code, control_id, (app, facility))
    try:
        ack = ack_text.encode(codec)
    except (UnicodeEncodeError, LookupError):
        ack = ack_text.encode("utf-8")
    row = _log(
        session,
        peer=peer[:80],
        sending_application=app or None,
        sending_facility=facility or None,
        message_type=kind[:20] or None,
        control_id=control_id or None,
        charset=codec,
        raw=raw,
        status=status,
        ack_code=code,
        ack=ack,
        error=f"{error.code} {error.location}: {error.text}"[:2000] if error else None,
        patient_id=patient_id,
        order_id=order_id,
        replay_of_id=replay_of,
        replayed_by=replayed_by.username if replayed_by else None,
    )
    audit.record(
        session,
        replayed_by or Actor(None, f"hl7:{facility}"[:64] or "hl7", None, ip[:64]),
        "hl7.replay" if replay_of else "hl7.receive",
        outcome="success" if code == "AA" else "failure",
        patient_id=patient_id,
        object_type="hl7_message",
        object_id=row.id,
        details={"type": kind, "control_id": control_id, "ack": code, "status": status,
                 **({"replay_of": replay_of} if replay_of else {}),
                 **({"error": error.code} if error else {})},
    )
    session.commit()
    return Outcome(ack=ack, message_id=row.id, ack_code=code)
