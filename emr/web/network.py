"""Provincial network pages (issue 15): the sites registry (admins), sending a study or a
tele-radiology request from an order, the "received from other facilities" list, and the
signed report another site returned."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask import session as login_cookie

from emr.access import audit
from emr.access.auth import current_actor, requires
from emr.access.care import ensure_patient_access
from emr.core.exceptions import EmrError, ValidationFailed
from emr.models import URGENCIES, NetworkReceived
from emr.network import incoming, outgoing, sites
from emr.web.forms import field_errors

from .. import db
from ..i18n import t

bp = Blueprint("network", __name__, url_prefix="/network")

_SITE_FIELDS = ("name", "ae_title", "host", "port", "emr_url", "dicomweb_url", "certificate_pem", "outbound_token",
                "send_by", "dicomweb_username", "dicomweb_password")
_SECRETS = ("outbound_token", "dicomweb_password")  # never shown back
# A secret typed on the first submit of a two-step form (the signing CA's fingerprint check) is carried to the
# confirmation as a sealed value: encrypted and authenticated with a key derived from the app's secret key,
# bound to this login session and this form, and good for _CARRY_TTL seconds. Never in clear in the HTML, the
# URL or the (signed, not encrypted) session cookie; past its time it is refused and the field asks again.
_CARRY_FIELD = "carried_secrets"
_CARRY_TTL = 15 * 60
_clock = time.time  # the sealed value's age is measured against this (tests move it)


def _signing_ca_pem() -> str:
    """The site's signing CA as posted: an uploaded file (PEM or DER) wins over the pasted text.
    DER becomes PEM here, so the confirmation step can show it back in the text box."""
    upload = request.files.get("signing_ca_file")
    if upload is not None and upload.filename:
        return sites.as_pem(upload.read(sites.SIGNING_CA_MAX + 1))
    return request.form.get("signing_ca_pem", "")[: sites.SIGNING_CA_MAX + 1]


def _sealer() -> Any:
    import base64
    import hashlib
    import hmac

    from cryptography.fernet import Fernet

    secret = current_app.secret_key
    raw = secret if isinstance(secret, bytes) else str(secret).encode()
    key = hmac.new(raw, b"filmless.network.carried-secrets", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _carry_binding(form: str) -> dict[str, Any]:
    """Whose and which form a sealed value is: the login session (its id's digest), the user, the form."""
    import hashlib

    sid = login_cookie.get("sid")
    digest = hashlib.sha256(sid.encode()).hexdigest() if isinstance(sid, str) else ""
    return {"s": digest, "u": login_cookie.get("uid"), "f": form}


def _seal(form: str, secrets_typed: dict[str, str]) -> str:
    """The secrets typed so far, sealed for the confirmation round trip ("" when there are none)."""
    import json

    if not secrets_typed:
        return ""
    payload = json.dumps({**_carry_binding(form), "v": secrets_typed}, separators=(",", ":"))
    return _sealer().encrypt(payload.encode()).decode()


def _unseal(form: str, sealed: str) -> dict[str, str] | None:
    """The secrets carried by ``sealed``; None when it is expired, forged, or from another session or form."""
    import json

    from cryptography.fernet import InvalidToken

    try:
        data = json.loads(_sealer().decrypt_at_time(sealed.encode(), ttl=_CARRY_TTL, current_time=int(_clock())))
    except (InvalidToken, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in _carry_binding(form).items()):
        return None
    values = data.get("v")
    if not isinstance(values, dict):
        return None
    return {k: str(v) for k, v in values.items() if k in _SECRETS}


def _secrets_in(form: str) -> tuple[dict[str, str], dict[str, str]]:
    """The secrets of this submit: typed now, else carried from the first submit. Returns them and the
    errors of carried secrets that cannot be used any more (the admin must type them again)."""
    typed = {f: request.form.get(f, "")[:8000] for f in _SECRETS if request.form.get(f, "")}
    sealed = request.form.get(_CARRY_FIELD, "")[:8000]
    if not sealed:
        return typed, {}
    carried = _unseal(form, sealed)
    if carried is None:
        named = request.form.get(_CARRY_FIELD + "_fields", "").split(",")  # names only, not secret
        missing = [f for f in _SECRETS if f in named and f not in typed]
        return typed, {f: t("network.error.secret_expired", minutes=_CARRY_TTL // 60) for f in missing}
    return {**carried, **typed}, {}


def _site_in(signing_ca_pem: str, secrets_typed: dict[str, str]) -> sites.SiteIn:
    return sites.SiteIn(**{f: request.form.get(f, "")[:8000] for f in _SITE_FIELDS if f not in _SECRETS},
                        **{f: secrets_typed.get(f, "") for f in _SECRETS}, signing_ca_pem=signing_ca_pem,
                        signing_ca_confirm=request.form.get("signing_ca_confirm", "")[:1000],
                        withdraw_previous=request.form.get("withdraw_previous") == "1",
                        withdraw_previous_reason=request.form.get("withdraw_previous_reason", "")[:2000])


def _values(site: Any = None, signing_ca_pem: str = "") -> dict[str, Any]:
    if request.method == "POST":
        return {**{f: request.form.get(f, "")[:8000] for f in _SITE_FIELDS if f not in _SECRETS},
                "signing_ca_pem": signing_ca_pem}
    if site is None:
        return {"port": "11112", "send_by": "dicom"}
    return {f: getattr(site, f) or "" for f in _SITE_FIELDS if f not in _SECRETS}


def _anchors_dir() -> Any:
    """The one trust store every signature check reads (emr.signing.trust)."""
    return current_app.extensions["emr.signing_config"].trust_anchors_dir


def _offered(pem: str, saved: bool) -> list[sites.SigningCa]:
    """The CA the admin just posted, shown (subject, fingerprint) until it is confirmed and saved."""
    if saved or not pem.strip():
        return []
    try:
        return sites.read_signing_ca(pem)
    except ValidationFailed:
        return []  # the form says why next to the field


def _trust_store(s: Any) -> list[dict[str, Any]]:
    """The trust anchors, each with the sites whose signing CA it is ("CA của <site>")."""
    from emr.signing.pki import list_trust_anchors

    owners = sites.anchor_owners(s)
    return [{"anchor": a, "owners": owners.get(a.sha256, [])} for a in list_trust_anchors(_anchors_dir())]


def _withdrawn() -> list[Any]:
    """The anchors trusted before and withdrawn since, newest first: what was trusted until when."""
    from emr.signing.pki import list_withdrawn_anchors

    return list_withdrawn_anchors(_anchors_dir())


@bp.route("/trust-anchors/<sha256>/withdraw", methods=["GET", "POST"])
@requires("network.manage")
def withdraw_anchor(sha256: str) -> Any:
    """Stop trusting a CA (compromised, retired): a page that says what it is and whose, asks for the
    reason and a confirmation; the POST withdraws it from the trust store at once (emr.network.sites)."""
    s = db.session()
    row = next((r for r in _trust_store(s) if r["anchor"].sha256 == sha256.lower()), None)
    if row is None:
        abort(404)
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            sites.withdraw_anchor(s, current_actor(), row["anchor"].sha256, request.form.get("reason", "")[:2000],
                                  trust_anchors_dir=_anchors_dir(), confirmed=request.form.get("confirm") == "1")
        except EmrError as exc:
            s.rollback()
            if exc.http_status == 404:
                abort(404)
            errors = field_errors(exc)
        else:
            return redirect(url_for("network.sites_page", withdrawn=row["anchor"].sha256[:16],
                                    _anchor="trust-anchors"))
    return render_template("network/withdraw_anchor.html", row=row, errors=errors,
                           reason=request.form.get("reason", "")[:2000]), (422 if errors else 200)


def _carry(form: str, errors: dict[str, str], secrets_typed: dict[str, str]) -> dict[str, Any]:
    """What the form shows of the secrets when nothing was saved: they go back sealed (see _CARRY_TTL),
    and each field says it holds a value typed before, without showing it."""
    if not errors:
        return {"sealed": "", "fields": [], "minutes": _CARRY_TTL // 60}
    kept = {f: v for f, v in secrets_typed.items() if v and f not in errors}
    return {"sealed": _seal(form, kept), "fields": sorted(kept), "minutes": _CARRY_TTL // 60}


@bp.route("/sites", methods=["GET", "POST"])
@requires("network.manage")
def sites_page() -> Any:
    s = db.session()
    errors: dict[str, str] = {}
    issued = None
    secrets_typed: dict[str, str] = {}
    pem = _signing_ca_pem() if request.method == "POST" else ""
    if request.method == "POST":
        secrets_typed, errors = _secrets_in("new")
        try:
            if errors:  # a secret carried from the first submit is no longer usable: nothing is saved
                raise ValidationFailed({})
            site, issued = sites.create_site(s, current_actor(), _site_in(pem, secrets_typed),
                                             trust_anchors_dir=_anchors_dir())
        except EmrError as exc:
            s.rollback()
            errors = {**field_errors(exc), **errors}
    else:
        audit.record(s, current_actor(), "network.site.list", object_type="network_site")
        s.commit()
    return render_template(
        "network/sites.html", sites=sites.list_sites(s), errors=errors, issued=issued,
        values={} if issued else _values(signing_ca_pem=pem), offered=_offered(pem, saved=issued is not None),
        carry=_carry("new", errors, secrets_typed),
        trust_store=_trust_store(s), withdrawn=_withdrawn(), just_withdrawn=request.args.get("withdrawn", "")[:16],
    ), (422 if errors else 200)


@bp.route("/sites/<int:site_id>", methods=["GET", "POST"])
@requires("network.manage")
def site_page(site_id: int) -> Any:
    s = db.session()
    site = sites.get_site(s, site_id)
    errors: dict[str, str] = {}
    issued = None
    secrets_typed: dict[str, str] = {}
    pem = _signing_ca_pem() if request.method == "POST" else ""
    if request.method == "POST":
        secrets_typed, errors = _secrets_in(f"site-{site_id}")
        try:
            if errors:  # a secret carried from the first submit is no longer usable: nothing is saved
                raise ValidationFailed({})
            site, issued = sites.update_site(
                s, current_actor(), site_id, _site_in(pem, secrets_typed), active=request.form.get("active") == "1",
                new_token=request.form.get("new_token") == "1", trust_anchors_dir=_anchors_dir(),
            )
        except EmrError as exc:
            s.rollback()
            errors = {**field_errors(exc), **errors}
            site = sites.get_site(s, site_id)
    values = _values(site, signing_ca_pem=pem if errors else "")
    if errors:  # every choice made survives the confirmation step (the stored row is unchanged)
        values |= {"withdraw_previous": request.form.get("withdraw_previous") == "1",
                   "withdraw_previous_reason": request.form.get("withdraw_previous_reason", "")[:2000],
                   "active": request.form.get("active") == "1", "new_token": request.form.get("new_token") == "1"}
    return render_template("network/site.html", site=site, errors=errors, issued=issued, values=values,
                           offered=_offered(pem, saved=not errors),
                           carry=_carry(f"site-{site_id}", errors, secrets_typed),
                           current_ca=sites.site_signing_ca(site, _anchors_dir())), (422 if errors else 200)


def _order_action(order_id: int, fn: Any) -> Any:
    s = db.session()
    site_arg = request.form.get("site_id", "")
    try:
        if not site_arg.isdigit() or len(site_arg) > 9:
            raise ValidationFailed({"site_id": "network.error.site"})
        transfer = fn(s, int(site_arg))
    except EmrError as exc:
        s.rollback()
        message = t(exc.key) if exc.key != "errors.validation" else next(iter(field_errors(exc).values()))
        return render_template("error.html", message=message), exc.http_status
    return redirect(url_for("patients.chart", patient_id=transfer.patient_id, _anchor="network"))


@bp.post("/orders/<int:order_id>/send")
@requires("network.send")
def send_order(order_id: int) -> Any:
    return _order_action(order_id, lambda s, site_id: outgoing.send_study(s, current_actor(), order_id, site_id))


@bp.post("/orders/<int:order_id>/read-request")
@requires("network.send")
def read_request(order_id: int) -> Any:
    question = request.form.get("question", "")[:2000]
    urgency = request.form.get("urgency", "routine")
    return _order_action(
        order_id,
        lambda s, site_id: outgoing.request_read(s, current_actor(), order_id, site_id, question, urgency),
    )


@bp.get("/received")
@requires("network.received")
def received() -> Any:
    rows = incoming.received_list(db.session(), current_actor())
    return render_template("network/received.html", rows=rows)


@bp.get("/received/<int:received_id>/view")
@requires("image.view")
def view_received(received_id: int) -> Any:
    """A received study in the viewer, under a header naming the facility that sent it."""
    from sqlalchemy import select

    from emr.core.states import StudyState
    from emr.models import NetworkSite, Patient, Study

    s = db.session()
    row = s.get(NetworkReceived, received_id)
    if row is None or row.kind not in ("study", "read_request") or row.patient_id is None:
        abort(404)
    ensure_patient_access(s, current_actor(), row.patient_id)
    study = s.scalar(select(Study).where(Study.study_instance_uid == row.study_instance_uid,
                                         Study.state == StudyState.LINKED).limit(1))
    if study is None:
        abort(404)  # images not here yet
    site = s.get(NetworkSite, row.site_id)
    audit.record(s, current_actor(), "network.received.view", patient_id=row.patient_id,
                 object_type="study", object_id=row.study_instance_uid,
                 details={"received": row.id, "site": site.name if site else None})
    s.commit()
    return render_template("network/view.html", row=row, site=site, study=study,
                           patient=s.get(Patient, row.patient_id))


@bp.get("/received/<int:received_id>/report.pdf")
@requires("document.read")
def received_report(received_id: int) -> Any:
    """The signed PDF another site returned, byte for byte as it was signed there."""
    from emr.signing.dicom_pdf import extract_pdf

    s = db.session()
    row = s.get(NetworkReceived, received_id)
    if row is None or row.kind != "report" or row.dicom is None:
        abort(404)
    ensure_patient_access(s, current_actor(), row.patient_id)
    audit.record(s, current_actor(), "network.report.view", patient_id=row.patient_id,
                 object_type="network_received", object_id=row.id, details={"signature": row.signature_status})
    s.commit()
    response = Response(extract_pdf(bytes(row.dicom)), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="ket-qua-doc-tu-xa-{row.id}.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response


def chart_context(session: Any, patient_id: int) -> dict[str, Any]:
    """What the patient chart shows of the network: transfers and their status, returned reports."""
    from sqlalchemy import select

    reports = list(session.scalars(
        select(NetworkReceived).where(NetworkReceived.patient_id == patient_id, NetworkReceived.kind == "report")
        .order_by(NetworkReceived.id.desc())
    ))
    site_names = {x.id: x.name for x in sites.list_sites(session)}
    return {
        "transfers": outgoing.transfers_for_patient(session, patient_id),
        "reports": reports,
        "sites": sites.list_sites(session, active_only=True),
        "site_names": site_names,
        "urgencies": URGENCIES,
    }
