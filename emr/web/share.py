"""Film-less patient access, public side: ``/s/<code>`` asks for the PIN, then shows one study and its report.

No login: the short code names the link, the PIN proves the slip is in hand
(remembered in the visitor's session for that link only). The viewer gets a
short-lived signed token naming the link; the DICOMweb proxy re-checks the
link (expiry, revocation) on every request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, render_template, request, send_file, session, url_for

from emr.core.exceptions import EmrError, NotFoundError
from emr.models.lookup import get_or_404
from emr.sharing import service as sharing
from emr.sharing.tokens import viewer_token

from .. import db
from ..models import ImagingOrder, Patient, ShareLink, Study

bp = Blueprint("share", __name__, url_prefix="/s")

_SESSION_KEY = "share_links"


def _unlocked(link: ShareLink) -> bool:
    return link.id in session.get(_SESSION_KEY, [])


@bp.route("/<code>", methods=["GET", "POST"])
def landing(code: str) -> Any:
    s = db.session()
    link = sharing.find_link(s, code)
    error = None
    status = 200
    if request.method == "POST":
        try:
            sharing.check_pin(s, link, request.form.get("pin", "")[:20], request.remote_addr)
        except sharing.WrongPin as exc:
            error, status = exc.key, exc.http_status
        except sharing.ShareLocked as exc:
            error, status = exc.key, exc.http_status
        else:
            unlocked = [i for i in session.get(_SESSION_KEY, []) if i != link.id][-9:]
            session[_SESSION_KEY] = [*unlocked, link.id]
            return redirect(url_for("share.landing", code=code))
    if not _unlocked(link):
        return render_template("share/pin.html", code=code, error=error), status
    sharing.record_share_access(s, link, request.remote_addr, "share.view")
    study = get_or_404(s, Study, link.study_id, "study")
    patient = get_or_404(s, Patient, link.patient_id, "patient")
    order = s.get(ImagingOrder, study.order_id or 0)
    return render_template(
        "share/study.html",
        code=code,
        link=link,
        study=study,
        patient=patient,
        order=order,
        report=sharing.shared_report(s, link),
        has_pdf=sharing.shared_report_pdf(s, link) is not None,
        viewer_url="/viewer/?" + urlencode({"study": link.study_instance_uid, "token": viewer_token(link)}),
    )


@bp.get("/<code>/report.pdf")
def report_pdf(code: str) -> Any:
    """The signed report PDF (with its QR code to /verify), for the patient to keep or forward."""
    from flask import Response

    s = db.session()
    link = sharing.find_link(s, code)
    if not _unlocked(link):
        return redirect(url_for("share.landing", code=code))
    pdf = sharing.shared_report_pdf(s, link)
    if pdf is None:
        raise NotFoundError("signed report", link.id)
    sharing.record_share_access(s, link, request.remote_addr, "share.download", {"what": "report_pdf"})
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="ket-qua-{link.study_id}.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<code>/study.zip")
def download(code: str) -> Any:
    """The study as a ZIP with a DICOMDIR (Circular 54/2017), built on disk, streamed from a temp file."""
    from emr.imaging.dicomdir import study_zip

    s = db.session()
    link = sharing.find_link(s, code)
    if not _unlocked(link):
        return redirect(url_for("share.landing", code=code))
    store = current_app.extensions.get("emr.store")
    if store is None:
        raise EmrError("no image store", key="share.error.no_store")
    study = get_or_404(s, Study, link.study_id, "study")
    sharing.record_share_access(s, link, request.remote_addr, "share.download")
    spooled = study_zip(store, study.orthanc_id)
    return send_file(
        spooled, mimetype="application/zip", as_attachment=True, download_name=f"ca-chup-{study.id}.zip", max_age=0
    )
