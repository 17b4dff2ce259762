"""Pushing visit summaries and signed reports to the electronic health record through the outbox.

When a visit closes (``encounter.closed``) or an imaging report is signed
(``document.signed``), :func:`on_encounter_closed` / :func:`on_document_signed`
build the FHIR document Bundle in that transaction and enqueue it as kind
``ehr.bundle`` with the SHA-256 of its content as key: building the same
content again (a visit re-closed unchanged, a replayed event) finds the
existing message, so nothing is pushed twice. :func:`deliver` POSTs it to
``FILMLESS_EHR_URL`` with the key in an ``Idempotency-Key`` header, so a
receiver that saw the request before a crash of ours drops the repeat.

Answers: 2xx → sent (the receiver's Location or id is kept); 408, 425, 429
and 5xx, timeouts and refused connections → retry with back-off; 401/403
→ retry (a token being renewed), dead after the last attempt; any other 4xx
→ dead at once (the receiver rejected this Bundle; resending it unchanged
cannot help, an operator reads the reason on /admin/outbox).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from sqlalchemy.orm import Session

from emr.core.settings import EmrSettings
from emr.models import Document, DocumentVersion, Encounter
from emr.outbox import DeliveryError, HandlerContext, OutboxMessage, enqueue, register_handler, subscribe

from .bundle import report_bundle, visit_bundle

__all__ = ["KIND", "deliver", "install", "on_document_signed", "on_encounter_closed"]

log = logging.getLogger(__name__)

KIND = "ehr.bundle"
_RETRY_STATUSES = {401, 403, 408, 425, 429}
_PUSHED_FORMS = {"radiology_report"}


def _enqueue(session: Session, settings: EmrSettings, built: Any) -> OutboxMessage:
    assert settings.ehr_url is not None
    return enqueue(
        session,
        KIND,
        built.key,
        built.bundle,
        target=settings.ehr_url,
        patient_id=built.patient_id,
        subject=built.subject,
    )


def on_encounter_closed(session: Session, settings: EmrSettings, *, encounter: Encounter, **_: Any) -> None:
    if settings.ehr_url:
        _enqueue(session, settings, visit_bundle(session, settings, encounter.id))


def on_document_signed(
    session: Session, settings: EmrSettings, *, document: Document, version: DocumentVersion | None = None, **_: Any
) -> None:
    if settings.ehr_url and document.form_type in _PUSHED_FORMS:
        _enqueue(session, settings, report_bundle(session, settings, document.id))


def _token(settings: EmrSettings) -> str | None:
    if settings.ehr_token_file is None:
        return None
    try:
        if settings.ehr_token_file.stat().st_mode & 0o077:
            raise DeliveryError("FILMLESS_EHR_TOKEN_FILE is readable by other accounts: chmod 600 it")
        token = settings.ehr_token_file.read_text("utf-8").strip()
    except OSError as exc:
        raise DeliveryError(f"cannot read FILMLESS_EHR_TOKEN_FILE: {exc.strerror}") from None
    return token or None


def deliver(message: OutboxMessage, context: HandlerContext) -> str:
    """POST the Bundle; raises :class:`DeliveryError` unless the endpoint took it."""
    settings = context.settings
    url = message.target
    headers = {
        "Content-Type": "application/fhir+json; charset=utf-8",
        "Accept": "application/fhir+json",
        "Idempotency-Key": message.key,  # IETF draft-ietf-httpapi-idempotency-key-header
        "X-Request-ID": f"filmless-outbox-{message.id}",
    }
    token = _token(settings)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    cert = (str(settings.ehr_client_cert), str(settings.ehr_client_key)) if settings.ehr_client_cert else None
    try:
        response = requests.post(
            url,
            json=message.payload,
            headers=headers,
            timeout=settings.ehr_timeout,
            cert=cert,
            verify=str(settings.ehr_ca) if settings.ehr_ca else True,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise DeliveryError(f"{url} unreachable: {type(exc).__name__}") from None
    if 200 <= response.status_code < 300:
        return response.headers.get("Location") or f"HTTP {response.status_code}"
    reason = f"HTTP {response.status_code} from {url}: {_problem(response)}"
    permanent = response.status_code < 500 and response.status_code not in _RETRY_STATUSES
    raise DeliveryError(reason, permanent=permanent)


def _problem(response: requests.Response) -> str:
    """The receiver's reason: OperationOutcome diagnostics when it sent one, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues if isinstance(i, dict))[:1000]
    return str(body)[:300]


def install(settings: EmrSettings) -> None:
    """Register the handler and subscribe to the events (the composition root calls this).

    Process-wide, like the handler registry: the settings installed last are the ones used.
    """
    register_handler(KIND, deliver)
    subscribe("encounter.closed", KIND, lambda session, **data: on_encounter_closed(session, settings, **data))
    subscribe("document.signed", KIND, lambda session, **data: on_document_signed(session, settings, **data))
