"""Exports and interoperability (issue 7): QĐ 130/4750 insurance XML, HoSoBenhAn, FHIR R4.

Public API (the CLI and other packages import only these):

- :func:`export_xml130` / :func:`export_xml130_range` – check, build, sign one visit / a date range.
- :func:`check_visit` – the pre-submission check alone (rows + per-field problems).
- :func:`export_hsba` – HoSoBenhAn JSON or XML of any encounter.
- :func:`encounters_between` – closed visits discharged between two local dates.
- :func:`verify_envelope` / :func:`read_envelope` – check and decode a signed envelope.
- :func:`load_config` / :func:`save_config` / :func:`open_facility_key` – configuration and key.
- :class:`ExportCheckFailed` (``.problems``: list of :class:`FieldProblem`), :class:`ExportError`.
"""

from __future__ import annotations

from .artifacts import ArtifactSource, InMemoryArtifacts, NoArtifacts
from .config import ExportConfig, TokenKeyConfig, load_config, save_config
from .envelope import encode_for_submission, read_envelope, verify_envelope
from .exceptions import ExportCheckFailed, ExportError, FacilityKeyError, FieldProblem
from .facility_key import FacilityKey, load_pkcs12_key, open_facility_key, open_token_key
from .service import (
    HsbaExport,
    RangeResult,
    Xml130Export,
    check_visit,
    encounters_between,
    export_hsba,
    export_xml130,
    export_xml130_range,
    write_atomically,
)

__all__ = [
    "ArtifactSource",
    "ExportCheckFailed",
    "ExportConfig",
    "ExportError",
    "FacilityKey",
    "FacilityKeyError",
    "FieldProblem",
    "HsbaExport",
    "InMemoryArtifacts",
    "NoArtifacts",
    "RangeResult",
    "TokenKeyConfig",
    "Xml130Export",
    "check_visit",
    "encode_for_submission",
    "encounters_between",
    "export_hsba",
    "export_xml130",
    "export_xml130_range",
    "load_config",
    "load_pkcs12_key",
    "open_facility_key",
    "open_token_key",
    "read_envelope",
    "save_config",
    "verify_envelope",
    "write_atomically",
]
