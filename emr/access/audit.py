"""Writing and verifying the hash-chained audit log.

Rows are appended in the caller's transaction (the change and its audit row
commit together). Appends are serialised by locking the single
``audit_head`` row first (PostgreSQL row lock; SQLite takes its write lock
at BEGIN IMMEDIATE), so the chain never forks.

The chain alone cannot stop someone with superuser rights on the database
from rewriting rows and recomputing every hash and the head. Anchors close
that gap: :func:`create_anchor` asks an RFC 3161 time-stamping authority for
a token over SHA-256 of :func:`anchor_statement` (the head's row id and hash),
stores it in ``audit_anchors`` and appends it as one JSON line to
``<data_dir>/audit-anchors.jsonl`` (a copy kept off the machine survives
deleted anchor rows). :func:`verify_audit_chain` checks every anchor: the
token's signature and TSA certificate chain, that the token certifies exactly
this (row id, hash), and that the row still has that hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from emr.core.exceptions import EmrError
from emr.models import AuditAnchor, AuditEntry, AuditHead

if TYPE_CHECKING:
    from cryptography import x509

    from emr.core.settings import EmrSettings

__all__ = [
    "ANCHORS_FILE_NAME",
    "Actor",
    "AnchorError",
    "AnchorTrust",
    "AuditVerification",
    "GENESIS",
    "SYSTEM",
    "anchor_statement",
    "anchor_time",
    "anchor_trust",
    "anchors_file",
    "create_anchor",
    "latest_anchor",
    "record",
    "verify_audit_chain",
]

log = logging.getLogger(__name__)

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who does something, from where; passed from the edge into services."""

    user_id: int | None
    username: str | None
    role: str | None
    client_ip: str | None = None


SYSTEM = Actor(None, "system", None, None)

_HASHED = (
    "id",
    "at",
    "user_id",
    "username",
    "role",
    "action",
    "outcome",
    "patient_id",
    "object_type",
    "object_id",
    "client_ip",
    "details",
)


def _row_hash(prev_hash: str, values: dict[str, Any]) -> str:
    canonical = json.dumps({k: values[k] for k in _HASHED}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ENTRIES = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
# One statement takes the head row's lock (PostgreSQL: held to commit; a
# concurrent append waits and then reads the row it committed), counts the
# row and returns the link to chain to.
_BUMP_HEAD = (
    update(_HEAD).where(_HEAD.c.id == 1).values(count=_HEAD.c.count + 1)
    .returning(_HEAD.c.last_id, _HEAD.c.last_hash)
)
_INSERT_HEAD = insert(_HEAD).values(id=1, last_id=0, last_hash=GENESIS, count=1)
_INSERT_ENTRY = insert(_ENTRIES)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(
    last_id=bindparam("new_last_id"), last_hash=bindparam("new_last_hash"))


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    outcome: str = "success",
    patient_id: int | None = None,
    object_type: str | None = None,
    object_id: object = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one audit row to the session's transaction (the caller commits); its id.

    Three Core statements on the session's connection (bump and read the
    head, insert the row, move the head): every view, query and retrieve
    writes a row, and the ORM's unit of work cost several times as much
    Python (~2.5 ms per row, held before a DICOM retrieve may send anything).
    Objects the caller added are flushed first, as the ORM's autoflush did.
    """
    session.flush()
    connection = session.connection()
    head = connection.execute(_BUMP_HEAD).first()
    if head is None:
        connection.execute(_INSERT_HEAD)
        last_id, last_hash = 0, GENESIS
    else:
        last_id, last_hash = int(head[0]), str(head[1])
    values: dict[str, Any] = {
        "id": last_id + 1,
        "at": _now(),
        "user_id": actor.user_id,
        "username": actor.username,
        "role": actor.role,
        "action": action,
        "outcome": outcome,
        "patient_id": patient_id,
        "object_type": object_type,
        "object_id": None if object_id is None else str(object_id),
        "client_ip": actor.client_ip,
        "details": json.dumps(details or {}, sort_keys=True, ensure_ascii=False),
    }
    digest = _row_hash(last_hash, values)
    connection.execute(_INSERT_ENTRY, {**values, "prev_hash": last_hash, "hash": digest})
    connection.execute(_MOVE_HEAD, {"new_last_id": values["id"], "new_last_hash": digest})
    return int(values["id"])


# -- anchors -------------------------------------------------------------------

ANCHORS_FILE_NAME = "audit-anchors.jsonl"
ANCHOR_ACTION = "audit.anchor"
# How far the TSA's clock and this server's clock may disagree before the
# order of rows and anchors is called suspicious.
CLOCK_TOLERANCE = timedelta(hours=1)


class AnchorError(EmrError):
    """An anchor could not be made (no TSA, TSA down or answering nonsense, file not writable)."""

    code = "audit_anchor_failed"


@dataclass(frozen=True)
class AnchorTrust:
    """What a token's signature is checked against: the hospital's trust store and known CRLs."""

    trust_anchors: Sequence[x509.Certificate]
    crls: Sequence[x509.CertificateRevocationList] = ()


def anchors_file(settings: EmrSettings) -> Path:
    """``<data_dir>/audit-anchors.jsonl``: every anchor, one JSON line each, outside the database."""
    return settings.data_dir / ANCHORS_FILE_NAME


def anchor_trust(settings: EmrSettings) -> AnchorTrust:
    """The trust store and CRLs that document signatures are verified with (:mod:`emr.signing.trust`)."""
    from emr.signing.pki import load_trust_anchors
    from emr.signing.trust import crl_paths, load_crls, trust_anchors_dir

    anchors = load_trust_anchors(trust_anchors_dir(settings))
    return AnchorTrust(trust_anchors=anchors, crls=load_crls(crl_paths(settings)))


def anchor_statement(last_id: int, last_hash: str) -> bytes:
    """The canonical bytes a token certifies (through their SHA-256): "row ``last_id`` has hash ``last_hash``"."""
    statement = {"filmless_audit_anchor": 1, "last_hash": last_hash, "last_id": last_id}
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("ascii")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _TokenInfo:
    signed_data: Any  # asn1crypto cms.SignedData
    hash_algorithm: str
    hashed_message: bytes
    gen_time: datetime


def _token_info(token: bytes) -> _TokenInfo | None:
    """The parts of an RFC 3161 token the checks need (asn1crypto parses), or None if unreadable."""
    from asn1crypto import cms, tsp

    try:
        info = cms.ContentInfo.load(token, strict=True)
        if info["content_type"].native != "signed_data":
            return None
        signed_data = info["content"]
        tst = signed_data["encap_content_info"]["content"].parsed
        if not isinstance(tst, tsp.TSTInfo):
            return None
        imprint = tst["message_imprint"]
        gen_time = tst["gen_time"].native
        if not isinstance(gen_time, datetime):
            return None
        return _TokenInfo(
            signed_data=signed_data,
            hash_algorithm=str(imprint["hash_algorithm"]["algorithm"].native),
            hashed_message=bytes(imprint["hashed_message"].native),
            gen_time=gen_time if gen_time.tzinfo else gen_time.replace(tzinfo=UTC),
        )
    except Exception:  # hostile bytes: any parse failure means unreadable  # noqa: BLE001
        return None


def latest_anchor(session: Session) -> AuditAnchor | None:
    return session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(1)).first()


def anchor_time(anchor: AuditAnchor) -> datetime | None:
    """When the TSA certified the anchor (UTC), as recorded with it."""
    return _parse_iso(anchor.created_at)


def _append_line(path: Path, anchor: AuditAnchor) -> None:
    line = json.dumps(
        {
            "id": anchor.id,
            "created_at": anchor.created_at,
            "last_id": anchor.last_id,
            "last_hash": anchor.last_hash,
            "tsa_url": anchor.tsa_url,
            "token": base64.b64encode(anchor.token).decode("ascii"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("ascii"))  # one write: lines of concurrent writers do not interleave
        os.fsync(fd)
    finally:
        os.close(fd)


def create_anchor(
    session: Session,
    actor: Actor,
    tsa_url: str | None,
    anchors_path: Path | None,
    *,
    timeout: float = 10.0,
) -> AuditAnchor | None:
    """Timestamp the chain's current head, store the anchor, audit it, append it to ``anchors_path``.

    Ends the session's transaction before asking the TSA (no lock is held
    while waiting for it) and commits; the session must hold no pending
    changes. Returns None when the log is still empty. Raises
    :class:`AnchorError` when no TSA is configured, the TSA fails (the failed
    attempt is audited) or the file cannot be written (the anchor is then in
    the database already).
    """
    if not tsa_url:
        raise AnchorError("no TSA configured", key="audit.anchor.no_tsa")
    head = session.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).first()
    session.rollback()  # SQLite: release the write lock taken at BEGIN while the TSA answers
    if head is None or head.last_id == 0:
        return None
    last_id, last_hash = int(head.last_id), str(head.last_hash)
    digest = hashlib.sha256(anchor_statement(last_id, last_hash)).digest()
    error: str | None = None
    token: bytes = b""
    info: _TokenInfo | None = None
    try:
        from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

        stamper = RequestsHTTPTimeStamper(tsa_url, timeout=timeout)
        token = bytes(asyncio.run(stamper.async_timestamp(digest, "sha256")).dump())
        info = _token_info(token)
        if info is None:
            error = "the TSA answered with an unreadable token"
        elif info.hash_algorithm != "sha256" or info.hashed_message != digest:
            error = "the TSA's token does not certify what was asked"
    except (OSError, ValueError) as exc:  # TimestampRequestError is an OSError
        cause = exc.__cause__
        error = f"{exc}" + (f" ({cause})" if cause is not None else "")
    if error is not None or info is None:
        record(
            session,
            actor,
            ANCHOR_ACTION,
            outcome="failure",
            object_type="audit_anchor",
            details={"last_id": last_id, "tsa_url": tsa_url, "error": error},
        )
        session.commit()
        raise AnchorError(f"TSA {tsa_url} failed: {error}", key="audit.anchor.failed", url=tsa_url, error=error)
    anchor = AuditAnchor(
        created_at=_iso(info.gen_time), last_id=last_id, last_hash=last_hash, token=token, tsa_url=tsa_url
    )
    session.add(anchor)
    session.flush()
    record(
        session,
        actor,
        ANCHOR_ACTION,
        object_type="audit_anchor",
        object_id=anchor.id,
        details={"last_id": last_id, "last_hash": last_hash, "tsa_url": tsa_url, "time": anchor.created_at},
    )
    session.commit()
    if anchors_path is not None:
        try:
            _append_line(anchors_path, anchor)
        except OSError as exc:
            raise AnchorError(
                f"anchor {anchor.id} stored, but {anchors_path} not written: {exc}",
                key="audit.anchor.file_failed",
                id=anchor.id,
                file=str(anchors_path),
                error=str(exc),
            ) from exc
    return anchor


# -- verification --------------------------------------------------------------


@dataclass
class AuditVerification:
    ok: bool
    rows: int
    head_hash: str
    problems: list[str] = field(default_factory=list)
    anchors: int = 0  # anchors checked (database and file)
    newest_anchor: str | None = None  # token time of the newest valid anchor
    tokens_checked: bool = False  # token signatures checked against trust anchors


@dataclass(frozen=True)
class _Anchor:
    """An anchor as read from the database or from a line of the anchors file."""

    id: int
    created_at: str
    last_id: int
    last_hash: str
    token: bytes
    tsa_url: str
    where: str  # "" (database) or "FILE line N"

    def same(self, other: _Anchor) -> bool:
        return (self.created_at, self.last_id, self.last_hash, self.token) == (
            other.created_at,
            other.last_id,
            other.last_hash,
            other.token,
        )


def _read_anchors_file(path: Path, problems: list[str]) -> list[_Anchor]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"anchors file {path}: cannot be read ({exc})")
        return []
    out: list[_Anchor] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            item = json.loads(line)
            anchor = _Anchor(
                id=int(item["id"]),
                created_at=str(item["created_at"]),
                last_id=int(item["last_id"]),
                last_hash=str(item["last_hash"]),
                token=base64.b64decode(str(item["token"]), validate=True),
                tsa_url=str(item.get("tsa_url", "")),
                where=where,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            problems.append(f"{where}: not an anchor record")
            continue
        out.append(anchor)
    return out


def _validation_context(trust: AnchorTrust, moment: datetime | None = None) -> Any:
    from asn1crypto import crl as asn1_crl
    from cryptography.hazmat.primitives import serialization
    from pyhanko_certvalidator import ValidationContext

    from emr.signing.signers import to_asn1_cert

    extra: dict[str, Any] = {"moment": moment, "retroactive_revinfo": True} if moment is not None else {}
    return ValidationContext(
        trust_roots=[to_asn1_cert(c) for c in trust.trust_anchors],
        crls=[asn1_crl.CertificateList.load(c.public_bytes(serialization.Encoding.DER)) for c in trust.crls],
        allow_fetching=False,
        revocation_mode="soft-fail",
        **extra,
    )


def _token_problem(info: _TokenInfo, trust: AnchorTrust, context: Any) -> str | None:
    """pyHanko's verdict on the token's signature and TSA chain, as a problem or None.

    The message imprint is compared with the statement by the caller, so a
    token over another statement and a token with a broken signature are told
    apart; pyHanko here checks that the TSA signed exactly this TSTInfo.
    """
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko.sign.validation.status import TimestampSignatureStatus

    from emr.signing.verify import chain_status

    def status_at(ctx: Any) -> TimestampSignatureStatus:
        kwargs = asyncio.run(validate_tst_signed_data(info.signed_data, ctx, lambda _alg: info.hashed_message))
        return TimestampSignatureStatus(**kwargs)

    try:
        status = status_at(context)
        chain = chain_status(status)  # type: ignore[arg-type]  # uses only the generic status fields
        if chain == "expired":
            # The TSA certificate has expired since: judge it at the token's own time.
            status = status_at(_validation_context(trust, info.gen_time))
            chain = chain_status(status)  # type: ignore[arg-type]
    except Exception as exc:  # hostile token: whatever breaks, it is not valid  # noqa: BLE001
        return f"timestamp token signature invalid ({type(exc).__name__}: {exc})"
    if not (status.intact and status.valid):
        return "timestamp token signature invalid (token tampered)"
    if chain == "revoked":
        return "the TSA certificate is revoked"
    if chain != "trusted":
        return f"the TSA certificate does not chain to a configured trust anchor ({chain})"
    return None


def _check_anchor(
    anchor: _Anchor,
    rows: dict[int, tuple[str, str]],
    trust: AnchorTrust | None,
    context: Any,
) -> tuple[list[str], datetime | None]:
    """Problems of one anchor, and its certified time when it holds."""
    info = _token_info(anchor.token)
    when = _iso(info.gen_time) if info is not None else anchor.created_at
    label = f"anchor #{anchor.id} of {when} (row {anchor.last_id}{', ' + anchor.where if anchor.where else ''})"
    if info is None:
        return [f"{label}: timestamp token unreadable (token tampered)"], None
    problems: list[str] = []
    statement = anchor_statement(anchor.last_id, anchor.last_hash)
    if info.hash_algorithm != "sha256" or info.hashed_message != hashlib.sha256(statement).digest():
        problems.append(f"{label}: the timestamp token does not certify this row id and hash (anchor edited)")
    if anchor.created_at != _iso(info.gen_time):
        problems.append(f"{label}: recorded time {anchor.created_at} is not the token's time (anchor edited)")
    if trust is not None:
        problem = _token_problem(info, trust, context)
        if problem:
            problems.append(f"{label}: {problem}")
    row = rows.get(anchor.last_id)
    if row is None:
        problems.append(
            f"{label}: row {anchor.last_id} no longer exists (rows deleted or the chain rewritten after {when})"
        )
    elif row[0] != anchor.last_hash:
        problems.append(
            f"{label}: row {anchor.last_id} now has hash {row[0][:16]}…, the anchor certifies "
            f"{anchor.last_hash[:16]}… (the chain was rewritten after {when})"
        )
    else:
        # The anchored row was the head when the token was made: it is dated
        # before the token and the row after it is dated after the token.
        # A chain re-anchored today with its old dates fails this.
        written = _parse_iso(row[1])
        if written is not None and written > info.gen_time + CLOCK_TOLERANCE:
            problems.append(f"{label}: row {anchor.last_id} is dated {row[1]}, after the anchor (anchor forged)")
        following = rows.get(anchor.last_id + 1)
        after = _parse_iso(following[1]) if following else None
        if after is not None and after < info.gen_time - CLOCK_TOLERANCE:
            problems.append(
                f"{label}: row {anchor.last_id + 1} is dated {following[1] if following else ''}, before the anchor "
                "was made (anchor made after the fact: the chain was rewritten and re-anchored)"
            )
    return problems, (info.gen_time if not problems else None)


def verify_audit_chain(
    session: Session,
    batch: int = 5000,
    *,
    trust: AnchorTrust | None = None,
    anchors_path: Path | None = None,
) -> AuditVerification:
    """Recompute the chain; report every edited, inserted, reordered or deleted row; check every anchor.

    Anchors come from ``audit_anchors`` and, with ``anchors_path``, from a
    copy of the anchors file (an anchor in the file but not in the database
    was deleted there). With ``trust`` each token's signature and TSA
    certificate chain are checked too (:func:`anchor_trust` gives the EMR's
    trust store); without it only what the token claims is compared.
    """
    problems: list[str] = []
    # Columns, not entities: what the database holds now, never a copy cached in the session.
    stored = [
        _Anchor(a.id, a.created_at, a.last_id, a.last_hash, bytes(a.token), a.tsa_url, "")
        for a in session.execute(
            select(
                AuditAnchor.id,
                AuditAnchor.created_at,
                AuditAnchor.last_id,
                AuditAnchor.last_hash,
                AuditAnchor.token,
                AuditAnchor.tsa_url,
            ).order_by(AuditAnchor.id)
        )
    ]
    from_file = _read_anchors_file(anchors_path, problems) if anchors_path is not None else []
    wanted = {a.last_id for a in (*stored, *from_file)}
    wanted |= {i + 1 for i in wanted}
    anchored_rows: dict[int, tuple[str, str]] = {}  # row id → (hash, at) for the rows anchors need

    prev_hash = GENESIS
    expected_id = 1
    rows = 0
    last_id = 0
    while True:
        chunk = (
            session.execute(
                select(AuditEntry)
                .where(AuditEntry.id > last_id)
                .order_by(AuditEntry.id)
                .limit(batch)
                .execution_options(populate_existing=True)
            )
            .scalars()
            .all()
        )
        if not chunk:
            break
        for entry in chunk:
            rows += 1
            if entry.id != expected_id:
                problems.append(f"row {entry.id}: expected row {expected_id} (rows deleted or inserted)")
            values = {k: getattr(entry, k) for k in _HASHED}
            if entry.prev_hash != prev_hash:
                problems.append(
                    f"row {entry.id}: previous-hash link broken (a row before it was changed, inserted or deleted)"
                )
            if _row_hash(entry.prev_hash, values) != entry.hash:
                problems.append(f"row {entry.id}: content does not match its hash (edited)")
            if entry.id in wanted:
                anchored_rows[entry.id] = (entry.hash, entry.at)
            prev_hash = entry.hash
            expected_id = entry.id + 1
            last_id = entry.id
        session.expunge_all()
    head = session.get(AuditHead, 1, populate_existing=True)
    head_hash = head.last_hash if head else GENESIS
    if head is not None:
        if head.last_id != last_id or head.last_hash != prev_hash:
            problems.append(
                f"chain ends at row {last_id} but the head records row {head.last_id} (rows deleted at the end)"
            )
        if head.count != rows:
            problems.append(f"{rows} rows present, {head.count} were written")
    elif rows:
        problems.append("audit head missing")

    context = _validation_context(trust) if trust is not None and (stored or from_file) else None
    by_id = {a.id: a for a in stored}
    checked = [*stored]
    for copy in from_file:
        original = by_id.get(copy.id)
        if original is None:
            when = _iso(info.gen_time) if (info := _token_info(copy.token)) else copy.created_at
            problems.append(
                f"anchor #{copy.id} of {when} ({copy.where}) is missing from the database (anchor rows deleted)"
            )
            checked.append(copy)
        elif not original.same(copy):
            problems.append(
                f"anchor #{copy.id} of {original.created_at} differs from its copy in {copy.where} (anchor rewritten)"
            )
            checked.append(copy)
    newest: datetime | None = None
    for anchor in checked:
        found, certified = _check_anchor(anchor, anchored_rows, trust, context)
        problems.extend(found)
        if certified is not None and (newest is None or certified > newest):
            newest = certified
    return AuditVerification(
        ok=not problems,
        rows=rows,
        head_hash=head_hash,
        problems=problems,
        anchors=len(checked),
        newest_anchor=_iso(newest) if newest is not None else None,
        tokens_checked=trust is not None,
    )
