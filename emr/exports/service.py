"""Export operations: check, build, sign, audit. The only module the edges (CLI, web, API) call.

Every export — successful or refused by the check — writes one audit row in
the same transaction as nothing else (exports change no clinical data).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from emr.access import audit
from emr.access.audit import Actor
from emr.core.clock import local_day_bounds, to_local
from emr.core.exceptions import InvalidState, NotFoundError
from emr.i18n import t
from emr.identity.reconcile import export_problems

from ..models import Encounter, utcnow
from .artifacts import ArtifactSource
from .catalogue_check import catalogue_problems
from .config import ExportConfig
from .envelope import build_envelope, sign_envelope
from .exceptions import ExportCheckFailed, FieldProblem, SchemaInvalid
from .facility_key import FacilityKey
from .hsba import build_hsba, hsba_json, hsba_xml
from .records import load_visit
from .xml130 import Rows, build_rows, check_rows, render_table, validate_table

__all__ = [
    "Xml130Export",
    "check_visit",
    "export_xml130",
    "encounters_between",
    "export_xml130_range",
    "RangeResult",
    "write_atomically",
    "HsbaExport",
    "export_hsba",
]

_ORDER = ("XML1", "XML3", "XML4", "XML5")


@dataclass
class Xml130Export:
    encounter_id: int
    visit_code: str  # MA_LK
    filename: str
    envelope: bytes  # signed GIAMDINHHS, UTF-8
    tables: dict[str, bytes]  # LOAIHOSO → table document
    rows: Rows


def _encounter(session: Session, encounter_id: int) -> Encounter:
    enc = session.get(Encounter, encounter_id)
    if enc is None:
        raise NotFoundError("encounter", encounter_id)
    return enc


def check_visit(session: Session, encounter_id: int, config: ExportConfig) -> tuple[Rows, list]:  # type: ignore[type-arg]
    """The visit's rows and every problem the pre-submission check finds (no audit, no output)."""
    record = load_visit(session, _encounter(session, encounter_id))
    rows = build_rows(record, config)
    return rows, check_rows(rows, record=record) + catalogue_problems(session, rows)


def identity_problems(session: Session, actor: Actor, enc: Encounter, config: ExportConfig) -> list[FieldProblem]:
    """Issue 15 §3: the patient's CCCD is checked against the national population database
    before anything leaves the hospital; an open mismatch stops the export (see emr.identity)."""
    keys = export_problems(session, actor, enc.patient_id, timedelta(days=config.identity_recheck_days))
    return [FieldProblem("XML1", 1, "SO_CCCD", key, t(key)) for key in keys]


def _tables(rows: Rows) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in _ORDER:
        if not rows.get(name):
            continue
        doc = render_table(name, rows[name])
        errors = validate_table(name, doc)
        if errors:
            raise SchemaInvalid(name, errors)
        out[name] = doc
    return out


def export_xml130(
    session: Session,
    actor: Actor,
    encounter_id: int,
    config: ExportConfig,
    key: FacilityKey,
    *,
    now: datetime | None = None,
) -> Xml130Export:
    """Check, build, validate and sign one closed visit; audited either way.

    Raises :class:`ExportCheckFailed` with every problem (nothing produced).
    """
    enc = _encounter(session, encounter_id)
    if enc.status == "cancelled":
        raise InvalidState("cancelled encounters are not exported", key="exports.error.cancelled")
    rows, problems = check_visit(session, encounter_id, config)
    problems = identity_problems(session, actor, enc, config) + problems
    if problems:
        audit.record(
            session,
            actor,
            "export.xml130",
            outcome="failure",
            patient_id=enc.patient_id,
            object_type="encounter",
            object_id=enc.id,
            details={"problems": [f"{p.table}[{p.row}].{p.field}" for p in problems][:50]},
        )
        session.commit()
        raise ExportCheckFailed(problems)
    tables = _tables(rows)
    created = to_local(now or utcnow())
    envelope = sign_envelope(build_envelope(config.facility_code, list(tables.items()), created), key)
    audit.record(
        session,
        actor,
        "export.xml130",
        patient_id=enc.patient_id,
        object_type="encounter",
        object_id=enc.id,
        details={
            "visit_code": enc.visit_code,
            "tables": list(tables),
            "sha256": hashlib.sha256(envelope).hexdigest(),
            "key": key.source,
        },
    )
    session.commit()
    return Xml130Export(enc.id, enc.visit_code, f"{enc.visit_code}.xml", envelope, tables, rows)


def encounters_between(session: Session, start: date, end: date) -> list[int]:
    """Closed encounters discharged on local dates ``start``..``end`` inclusive."""
    lo, hi = local_day_bounds(start)[0], local_day_bounds(end)[1]
    return list(
        session.scalars(
            select(Encounter.id)
            .where(Encounter.status == "closed", Encounter.discharged_at >= lo, Encounter.discharged_at < hi)
            .order_by(Encounter.discharged_at, Encounter.id)
        )
    )


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: never a partial file (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class RangeResult:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, list] = field(default_factory=dict)  # type: ignore[type-arg]  # MA_LK → problems


def export_xml130_range(
    session: Session,
    actor: Actor,
    encounter_ids: list[int],
    config: ExportConfig,
    key: FacilityKey,
    out_dir: Path,
    *,
    progress: Callable[[Iterator[int]], Iterator[int]] | None = None,
    now: datetime | None = None,
) -> RangeResult:
    """One signed envelope file per visit into ``out_dir``; visits failing the check get no file."""
    result = RangeResult()
    ids: Iterator[int] = iter(encounter_ids)
    if progress is not None:
        ids = progress(ids)
    for eid in ids:
        try:
            exp = export_xml130(session, actor, eid, config, key, now=now)
        except ExportCheckFailed as exc:
            enc = session.get(Encounter, eid)
            result.failed[enc.visit_code if enc else str(eid)] = exc.problems
            continue
        path = out_dir / exp.filename
        write_atomically(path, exp.envelope)
        result.written.append(path)
    return result


@dataclass
class HsbaExport:
    encounter_id: int
    filename: str
    media_type: str
    data: bytes
    record: dict  # type: ignore[type-arg]  # the HoSoBenhAn object


def export_hsba(
    session: Session,
    actor: Actor,
    encounter_id: int,
    config: ExportConfig,
    key: FacilityKey | None,
    fmt: str = "json",
    *,
    artifacts: ArtifactSource | None = None,
    now: datetime | None = None,
) -> HsbaExport:
    """Any encounter (open or closed) as ``HoSoBenhAn`` JSON or XML; audited."""
    import json

    if fmt not in ("json", "xml"):
        raise ValueError(fmt)
    enc = _encounter(session, encounter_id)
    problems = identity_problems(session, actor, enc, config)
    if problems:
        audit.record(
            session,
            actor,
            "export.hsba",
            outcome="failure",
            patient_id=enc.patient_id,
            object_type="encounter",
            object_id=enc.id,
            details={"problems": [p.key for p in problems]},
        )
        session.commit()
        raise ExportCheckFailed(problems)
    record = build_hsba(load_visit(session, enc), config, artifacts)
    when = now or utcnow()
    if fmt == "json":
        data = json.dumps(hsba_json(record, key, when), ensure_ascii=False, indent=2).encode("utf-8")
        media = "application/json"
    else:
        data = hsba_xml(record, key, when)
        media = "application/xml"
    audit.record(
        session,
        actor,
        "export.hsba",
        patient_id=enc.patient_id,
        object_type="encounter",
        object_id=enc.id,
        details={"format": fmt, "sha256": hashlib.sha256(data).hexdigest(), "signed": key is not None},
    )
    session.commit()
    return HsbaExport(enc.id, f"HoSoBenhAn_{enc.visit_code}.{fmt}", media, data, record)
