"""Patient search, registration, chart and encounters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, url_for
from sqlalchemy import select

from emr import outbox
from emr.access.auth import current_actor, requires
from emr.access.care import OutOfCareScope
from emr.access.permissions import CARE_SCOPED_ROLES, allowed
from emr.core.clock import local_today
from emr.core.exceptions import EmrError, NotFoundError, PossibleDuplicate, ValidationFailed
from emr.core.states import EXAM_PROGRESS
from emr.documents import service as documents
from emr.identity.checks import latest_check
from emr.imaging import orders
from emr.patients import encounters
from emr.patients import service as patients
from emr.patients.demographics import demographic_lines
from emr.web import network
from emr.web import outbox as outbox_pages
from emr.web.forms import field_errors, form_dict, form_values
from emr.web.safe_redirect import local_path

from .. import db
from ..i18n import t
from ..models import MODALITIES, Department, Encounter, Patient

bp = Blueprint("patients", __name__, url_prefix="/patients")


@bp.get("/")
@requires("patient.read")
def search() -> Any:
    q = request.args.get("q", "").strip()[:100]
    results: list[Patient] = []
    visits: list[encounters.CurrentVisit] | None = None
    exams: list[orders.DayExam] | None = None
    modality = request.args.get("modality", "")
    modality = modality if modality in MODALITIES else ""
    if q:
        results = patients.search_patients(db.session(), current_actor(), q, 50)
    elif allowed(current_actor().role, "encounter.read"):
        # Without a search: the patients the user is treating now (their department's open visits).
        visits = encounters.current_visits(db.session(), current_actor())
    elif allowed(current_actor().role, "order.worklist"):
        # A technician's home: today's exams (facility day), to perform and done.
        exams = orders.day_exams(db.session(), current_actor(), modality=modality)
    counts = Counter(e.progress for e in exams or ())
    return render_template("patients/search.html", q=q, results=results, visits=visits,
                           visits_limit=encounters.CURRENT_VISITS_LIMIT, exams=exams,
                           exams_limit=orders.DAY_EXAMS_LIMIT, modalities=MODALITIES, modality=modality,
                           today=local_today(), exam_counts=[(p, counts[p]) for p in EXAM_PROGRESS if counts[p]])


@bp.route("/new", methods=["GET", "POST"])
@requires("patient.write")
def new() -> Any:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    namesakes: list[Patient] = []
    if request.method == "POST":
        values = form_dict(request.form, flags=("birth_year_only", "confirm_new_person"))
        try:
            patient = patients.create_patient(db.session(), current_actor(), values)
        except PossibleDuplicate as exc:
            db.session().rollback()
            # Shown like search results (what the desk may see of anyone): open the record, or confirm.
            namesakes = [p for p in (db.session().get(Patient, pid) for pid, _ in exc.matches) if p is not None]
            errors = {"_form": t(exc.key)}
        except EmrError as exc:
            db.session().rollback()
            errors = field_errors(exc)
        else:
            if g.user.role in CARE_SCOPED_ROLES and allowed(g.user.role, "encounter.write"):
                # A physician's care begins with a visit: the chart opens once it is open.
                return redirect(url_for("patients.new_encounter", patient_id=patient.id))
            return redirect(url_for("patients.chart", patient_id=patient.id))
    status = 409 if namesakes else 422 if errors else 200
    return render_template("patients/new.html", errors=errors, values=values, namesakes=namesakes), status


@bp.get("/<int:patient_id>")
@requires("patient.read")
def chart(patient_id: int) -> Any:
    s = db.session()
    patient = patients.get_patient(s, current_actor(), patient_id)
    # Visits (with their ICD-10 diagnoses) and documents only for roles that may read them (a technician
    # has neither encounter.read nor document.read): not loaded otherwise; the template asks the same.
    encs = (
        # may_close: the "Kết thúc lượt khám" button only for the visit's treating physician or one of its department.
        [dict(encounters.encounter_dict(s, e), may_close=encounters.may_close(s, current_actor(), e))
         for e in encounters.list_encounters(s, patient_id)]
        if allowed(g.user.role, "encounter.read")
        else []
    )
    docs = (
        [documents.document_dict(d) for d in documents.list_documents(s, patient_id)]
        if allowed(g.user.role, "document.read")
        else []
    )
    ords = [orders.order_dict(s, o) for o in orders.list_orders(s, patient_id)]
    for o in ords:  # the exam's one report: "Xem kết quả" opens it, "Viết kết quả" only while there is none
        report = documents.live_report(s, o["id"])
        o["report_id"] = report.id if report is not None else None
    sent = outbox.messages_for_patient(s, patient_id)[:20]  # issue 15: what was sent about the patient
    return render_template(
        "patients/chart.html",
        patient=patient,
        encounters=encs,
        documents=docs,
        orders=ords,
        sent_messages=sent,
        outbox_kind=outbox_pages.kind_label,
        identity=latest_check(s, patient.id),  # issue 15 §3: CCCD checked against the population database
        # ethnicity, occupation, religion as "name (code)" from the catalogue in force today
        demographics=demographic_lines(s, patient, local_today()),
        network=network.chart_context(s, patient_id),  # issue 15 §1: transfers and tele-radiology
    )


@bp.route("/<int:patient_id>/encounters/new", methods=["GET", "POST"])
@requires("encounter.write")
def new_encounter(patient_id: int) -> Any:
    s = db.session()
    patient = patients.patient_for_new_visit(s, patient_id)  # care begins here: see create_encounter
    status = 422
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if request.method == "POST":
        values = form_values(request.form)  # shown again as typed after an error ("J18.9 XYZ", not a list)
        data = form_dict(request.form, lists=("diagnoses",))
        data["patient_id"] = patient_id
        try:
            encounters.create_encounter(s, current_actor(), data)
        except OutOfCareScope:
            s.rollback()  # refused and audited (care.denied); the form says what would be allowed
            errors, status = {"_form": t("encounters.error.outside_care")}, 403
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(url_for("patients.chart", patient_id=patient_id))
    departments = list(s.scalars(select(Department).order_by(Department.name)))
    if request.method == "GET":
        own = s.get(Department, g.user.department_id) if g.user.department_id is not None else None
        if own is not None:
            values["department_code"] = own.code  # the user's own department, by default
        if g.user.role in ("physician", "radiologist"):
            values["attending_username"] = g.user.username  # the physician opening the visit, by default
    return render_template(
        "patients/encounter_new.html",
        patient=patient,
        departments=departments,
        attendings=encounters.attending_choices(s),
        errors=errors,
        values=values,
    ), (status if errors else 200)


def _encounter_form(
    patient_id: int,
    encounter_id: int,
    template: str,
    initial: Callable[[Encounter], dict[str, Any]],
    read: Callable[[], dict[str, Any]],
    save: Callable[[dict[str, Any]], object],
) -> Any:
    """A form about one of the patient's encounters: care scope checked and the view audited, 404 when the
    encounter is another patient's; on POST ``save`` (errors beside the fields, nothing kept) then the chart."""
    s = db.session()
    patient = patients.get_patient(s, current_actor(), patient_id, audit_view=False)
    enc = encounters.get_encounter(s, current_actor(), encounter_id)
    if enc.patient_id != patient.id:
        raise NotFoundError("encounter", encounter_id)
    errors: dict[str, str] = {}
    values = initial(enc)
    if request.method == "POST":
        values = read()
        try:
            save(values)
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(url_for("patients.chart", patient_id=patient_id))
    return render_template(template, patient=patient, encounter=enc, errors=errors, values=values), (
        422 if errors else 200
    )


@bp.route("/<int:patient_id>/encounters/<int:encounter_id>/benefit-level", methods=["GET", "POST"])
@requires("encounter.write")
def benefit_level(patient_id: int, encounter_id: int) -> Any:
    """Enter or correct the visit's benefit level (MUC_HUONG) after checking the card."""
    return _encounter_form(
        patient_id,
        encounter_id,
        "patients/benefit_level.html",
        lambda enc: {
            "benefit_level": "" if enc.benefit_level is None else str(enc.benefit_level),
            "benefit_level_note": enc.benefit_level_note or "",
        },
        lambda: form_dict(request.form),
        lambda values: encounters.set_benefit_level(db.session(), current_actor(), encounter_id, values),
    )


@bp.route("/<int:patient_id>/encounters/<int:encounter_id>/close", methods=["GET", "POST"])
@requires("encounter.close")
def close_encounter(patient_id: int, encounter_id: int) -> Any:
    """End the visit (issue 15): the discharge diagnosis and its ICD-10 codes are recorded, the visit summary
    goes to the health record. Only its treating physician or one of its department (refused with 403 and
    audited before the form is shown); the visit's imaging orders still on the worklist are listed, and the
    physician says whether they stay for outpatient follow-up or are cancelled. The form offers the discharge
    paper's diagnosis when the visit has one; ``next`` (a path on this site only) is where the physician goes
    once it is closed, e.g. back to the paper's sign page that linked here."""
    s = db.session()
    patient = patients.get_patient(s, current_actor(), patient_id, audit_view=False)
    enc = encounters.get_encounter(s, current_actor(), encounter_id)
    if enc.patient_id != patient.id:
        raise NotFoundError("encounter", encounter_id)
    encounters.require_closer(s, current_actor(), enc)
    back = local_path(request.args.get("next"))  # e.g. the discharge paper's sign page that linked here
    if enc.status != "open":  # closed already (e.g. in another tab): no form, the way back instead
        return render_template("patients/encounter_close.html", patient=patient, encounter=enc, errors={},
                               values={}, pending_orders=[], back=back, closed=True, prefill=None,
                               from_paper=False), (409 if request.method == "POST" else 200)
    prefill = encounters.close_form_prefill(s, enc)
    values, from_paper = prefill.values, prefill.from_paper
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in (*values, "pending")}
        # A field left out of the post (not one left empty) keeps the visit's codes as they are.
        secondary = values["secondary_codes"].replace(",", " ").replace(";", " ").split()
        try:
            encounters.close_encounter(
                s, current_actor(), encounter_id, values["discharge_diagnosis"],
                main_code=values["main_code"] if "main_code" in request.form else None,
                secondary_codes=secondary if "secondary_codes" in request.form else None,
                pending=values["pending"] or None,
            )
        except EmrError as exc:
            s.rollback()
            errors = field_errors(exc)
        else:
            return redirect(back or url_for("patients.chart", patient_id=patient_id))
    waiting = [orders.order_dict(s, o) for o in encounters.pending_orders(s, encounter_id)]
    return render_template("patients/encounter_close.html", patient=patient, encounter=enc, errors=errors,
                           values=values, pending_orders=waiting, back=back, closed=False,
                           prefill=prefill if request.method == "GET" else None,
                           from_paper=from_paper and request.method == "GET"), (422 if errors else 200)


@bp.route("/merge", methods=["GET", "POST"])
@requires("patient.merge")
def merge() -> Any:
    """Two steps: name both records by code and see what each holds, then confirm with a reason."""
    s = db.session()
    values = {k: request.values.get(k, "").strip()[:1000] for k in ("source", "target", "reason")}
    errors: dict[str, str] = {}
    preview: dict[str, Any] | None = None
    if request.method == "POST":
        problems: dict[str, str] = {}
        found: dict[str, Patient] = {}
        for field in ("source", "target"):
            try:
                found[field] = patients.find_by_code(s, values[field], field)
            except ValidationFailed as exc:
                problems.update(exc.fields)
        if not problems and found["source"].id == found["target"].id:
            problems["target"] = "patients.error.merge_same"
        for field, p in found.items():
            if p.status != "active":
                problems[field] = "patients.error.merged"
        if problems:
            errors = field_errors(ValidationFailed(problems))
        else:
            source, target = found["source"], found["target"]
            preview = {
                "source": source,
                "target": target,
                "source_counts": patients.record_counts(s, source.id),
                "target_counts": patients.record_counts(s, target.id),
            }
            previewed = request.form.get("previewed") == f"{source.code}>{target.code}"
            if request.form.get("step") == "confirm" and previewed:
                try:
                    merged = patients.merge_patients(s, current_actor(), source.id, target.id, values["reason"])
                except EmrError as exc:
                    s.rollback()
                    errors = field_errors(exc)
                else:
                    return redirect(url_for("patients.chart", patient_id=merged.id, merged=source.code))
    return render_template("patients/merge.html", values=values, errors=errors, preview=preview), (
        422 if errors else 200
    )
