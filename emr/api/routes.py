"""API resources: thin wrappers that call one service function and return plain data."""

from __future__ import annotations

from typing import Any

from flask import current_app

from emr.access.audit import Actor
from emr.documents import service as docs
from emr.imaging import linking, orders
from emr.patients import encounters as encs
from emr.patients import service as patients

from .. import db
from ..schemas import (
    DocumentIn,
    DocumentOut,
    DocumentVersionIn,
    DraftIn,
    EncounterIn,
    EncounterOut,
    EncounterPage,
    LinkIn,
    MergeIn,
    OrderIn,
    OrderOut,
    OrderPage,
    PatientIn,
    PatientOut,
    PatientPage,
    PatientSearchQuery,
    ReasonIn,
    StudyOut,
    StudyPage,
)
from . import endpoint


@endpoint(
    "/patients",
    "GET",
    "patient.read",
    summary="Search patients (name prefix with or without diacritics, CCCD, BHYT, patient code)",
    query=PatientSearchQuery,
    response=PatientPage,
)
def search_patients(actor: Actor, query: PatientSearchQuery) -> dict[str, Any]:
    return {"items": patients.search_patients(db.session(), actor, query.q, query.limit)}


@endpoint(
    "/patients", "POST", "patient.write", summary="Register a patient", body=PatientIn, response=PatientOut, status=201
)
def create_patient(actor: Actor, body: PatientIn) -> Any:
    return patients.create_patient(db.session(), actor, body)


@endpoint("/patients/<int:patient_id>", "GET", "patient.read", summary="One patient", response=PatientOut)
def get_patient(actor: Actor, patient_id: int) -> Any:
    return patients.get_patient(db.session(), actor, patient_id)


@endpoint(
    "/patients/<int:patient_id>",
    "PUT",
    "patient.write",
    summary="Update a patient",
    body=PatientIn,
    response=PatientOut,
)
def update_patient(actor: Actor, patient_id: int, body: PatientIn) -> Any:
    return patients.update_patient(db.session(), actor, patient_id, body)


@endpoint(
    "/patients/merge",
    "POST",
    "patient.merge",
    summary="Merge two patient records (audited)",
    body=MergeIn,
    response=PatientOut,
)
def merge_patients(actor: Actor, body: MergeIn) -> Any:
    return patients.merge_patients(db.session(), actor, body.source_id, body.target_id, body.reason)


@endpoint(
    "/patients/<int:patient_id>/encounters",
    "GET",
    "encounter.read",
    summary="A patient's encounters",
    response=EncounterPage,
)
def patient_encounters(actor: Actor, patient_id: int) -> Any:
    s = db.session()
    patients.get_patient(s, actor, patient_id)
    return {"items": [encs.encounter_dict(s, e) for e in encs.list_encounters(s, patient_id)]}


@endpoint(
    "/patients/<int:patient_id>/orders", "GET", "order.read", summary="A patient's imaging orders", response=OrderPage
)
def patient_orders(actor: Actor, patient_id: int) -> Any:
    s = db.session()
    patients.get_patient(s, actor, patient_id)
    return {"items": [orders.order_dict(s, o) for o in orders.list_orders(s, patient_id)]}


@endpoint(
    "/encounters",
    "POST",
    "encounter.write",
    summary="Open an encounter",
    body=EncounterIn,
    response=EncounterOut,
    status=201,
)
def create_encounter(actor: Actor, body: EncounterIn) -> Any:
    s = db.session()
    return encs.encounter_dict(s, encs.create_encounter(s, actor, body))


@endpoint("/encounters/<int:encounter_id>", "GET", "encounter.read", summary="One encounter", response=EncounterOut)
def get_encounter(actor: Actor, encounter_id: int) -> Any:
    s = db.session()
    return encs.encounter_dict(s, encs.get_encounter(s, actor, encounter_id))


@endpoint(
    "/documents",
    "POST",
    "document.write",
    summary="Create a document (draft, version 1)",
    body=DocumentIn,
    response=DocumentOut,
    status=201,
)
def create_document(actor: Actor, body: DocumentIn) -> Any:
    return docs.document_dict(docs.create_document(db.session(), actor, body))


@endpoint(
    "/documents/<int:document_id>", "GET", "document.read", summary="A document with all versions", response=DocumentOut
)
def get_document(actor: Actor, document_id: int) -> Any:
    return docs.document_dict(docs.get_document(db.session(), actor, document_id))


@endpoint(
    "/documents/<int:document_id>/draft",
    "PUT",
    "document.write",
    summary="Edit the unsigned current version (send base_sha256: 409 document_changed when it moved on)",
    body=DraftIn,
    response=DocumentOut,
)
def edit_draft(actor: Actor, document_id: int, body: DraftIn) -> Any:
    return docs.document_dict(
        docs.update_draft(db.session(), actor, document_id, body.content, base_sha256=body.base_sha256)
    )


@endpoint(
    "/documents/<int:document_id>/amendments",
    "POST",
    "document.write",
    summary="Amend a signed document: a new version with a reason",
    body=DocumentVersionIn,
    response=DocumentOut,
    status=201,
)
def amend_document(actor: Actor, document_id: int, body: DocumentVersionIn) -> Any:
    return docs.document_dict(docs.amend_document(db.session(), actor, document_id, body.content, body.reason))


@endpoint(
    "/documents/<int:document_id>/cancel",
    "POST",
    "document.cancel",
    summary="Cancel (with a reason)",
    body=ReasonIn,
    response=DocumentOut,
)
def cancel_document(actor: Actor, document_id: int, body: ReasonIn) -> Any:
    return docs.document_dict(docs.cancel_document(db.session(), actor, document_id, body.reason))


@endpoint(
    "/documents/<int:document_id>/restore",
    "POST",
    "document.cancel",
    summary="Restore (with a reason)",
    body=ReasonIn,
    response=DocumentOut,
)
def restore_document(actor: Actor, document_id: int, body: ReasonIn) -> Any:
    return docs.document_dict(docs.restore_document(db.session(), actor, document_id, body.reason))


@endpoint(
    "/orders",
    "POST",
    "order.create",
    summary="Order imaging (gets accession number and Study UID)",
    body=OrderIn,
    response=OrderOut,
    status=201,
)
def create_order(actor: Actor, body: OrderIn) -> Any:
    s = db.session()
    stations = getattr(current_app.extensions.get("emr.settings"), "modality_stations", ())
    return orders.order_dict(s, orders.create_order(s, actor, body, typed=True, stations=stations))


@endpoint("/orders/<int:order_id>", "GET", "order.read", summary="One order with its studies", response=OrderOut)
def get_order(actor: Actor, order_id: int) -> Any:
    s = db.session()
    return orders.order_dict(s, orders.get_order(s, actor, order_id))


@endpoint(
    "/orders/<int:order_id>/cancel",
    "POST",
    "order.cancel",
    summary="Cancel an order without images",
    body=ReasonIn,
    response=OrderOut,
)
def cancel_order(actor: Actor, order_id: int, body: ReasonIn) -> Any:
    s = db.session()
    return orders.order_dict(s, orders.cancel_order(s, actor, order_id, body.reason))


@endpoint("/studies/unmatched", "GET", "study.read", summary="Reconciliation queue", response=StudyPage)
def unmatched_studies(actor: Actor) -> Any:
    return {"items": [orders.study_dict(st) for st in linking.list_unmatched(db.session())]}


@endpoint(
    "/studies/<int:study_id>/link",
    "POST",
    "study.reconcile",
    summary="Link a queued study to an order",
    body=LinkIn,
    response=StudyOut,
)
def link_study(actor: Actor, study_id: int, body: LinkIn) -> Any:
    from flask import current_app

    study = linking.link_study_manually(
        db.session(),
        actor,
        study_id,
        body.order_id,
        body.reason,
        store=current_app.extensions.get("emr.store"),
        acknowledge_mismatch=body.acknowledge_mismatch,
    )
    return orders.study_dict(study)
