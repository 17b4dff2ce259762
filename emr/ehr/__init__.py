"""Push to the electronic health record (issue 15 §2): FHIR document Bundles (VN Core IG) via the outbox.

Public API:

- :func:`install` — register the ``ehr.bundle`` handler and subscribe to
  ``encounter.closed`` / ``document.signed`` (called by :func:`emr.app.create_app`;
  does nothing visible while ``FILMLESS_EHR_URL`` is unset).
- :func:`visit_bundle` / :func:`report_bundle` — the Bundle for a closed visit / a signed report.
- :func:`content_key` — the idempotency key of a Bundle's content.
"""

from __future__ import annotations

from .bundle import Built, content_key, report_bundle, visit_bundle
from .push import KIND, deliver, install, on_document_signed, on_encounter_closed

__all__ = [
    "KIND",
    "Built",
    "content_key",
    "deliver",
    "install",
    "on_document_signed",
    "on_encounter_closed",
    "report_bundle",
    "visit_bundle",
]
