"""Download routes for the visit page (/export/...) and the registration of the FHIR blueprint.

Logged-in users only (session cookie), rights from :mod:`emr.access.permissions`:
``export.insurance`` for the signed 4750 envelope, ``export.record`` for the
HoSoBenhAn files. A visit failing the pre-submission check gets a page
listing every problem in Vietnamese and no file.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template

from emr.access.auth import current_actor, requires
from emr.access.care import ensure_patient_access
from emr.exports.config import load_config
from emr.exports.exceptions import ExportCheckFailed, FacilityKeyError
from emr.exports.facility_key import open_facility_key
from emr.exports.service import export_hsba, export_xml130
from emr.models import Encounter

from .. import db

__all__ = ["bp"]

bp = Blueprint("exports", __name__, url_prefix="/export")


def _download(data: bytes, filename: str, media: str) -> Response:
    resp = Response(data, mimetype=media)
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@bp.get("/encounters/<int:encounter_id>/xml130")
@requires("export.insurance")
def xml130(encounter_id: int) -> Any:
    config = load_config(current_app.extensions["emr.settings"])
    try:
        with open_facility_key(config) as key:
            exp = export_xml130(db.session(), current_actor(), encounter_id, config, key)
    except ExportCheckFailed as exc:
        return render_template("exports/problems.html", problems=exc.problems, encounter_id=encounter_id), 422
    return _download(exp.envelope, exp.filename, "application/xml")


@bp.get("/encounters/<int:encounter_id>/hsba.<fmt>")
@requires("export.record")
def hsba(encounter_id: int, fmt: str) -> Any:
    if fmt not in ("json", "xml"):
        abort(404)  # the app's Vietnamese "not found" page, like every other 404
    enc = db.session().get(Encounter, encounter_id)
    if enc is not None:
        ensure_patient_access(db.session(), current_actor(), enc.patient_id)  # issue 10: care scope
    config = load_config(current_app.extensions["emr.settings"])
    artifacts = current_app.extensions.get("emr.signed_artifacts")
    try:
        try:
            with open_facility_key(config) as key:
                exp = export_hsba(db.session(), current_actor(), encounter_id, config, key, fmt, artifacts=artifacts)
        except FacilityKeyError as exc:
            if exc.key != "exports.error.no_key":
                raise
            exp = export_hsba(db.session(), current_actor(), encounter_id, config, None, fmt, artifacts=artifacts)
    except ExportCheckFailed as exc:  # issue 15: an open identity mismatch
        return render_template("exports/problems.html", problems=exc.problems, encounter_id=encounter_id), 422
    return _download(exp.data, exp.filename, exp.media_type)
