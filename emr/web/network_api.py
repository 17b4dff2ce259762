"""The inter-site API (issue 15): what another filmless site calls, with the token we issued to it.

No session, no CSRF (token-authenticated like /api). A missing, unknown or
disabled site's token is refused with 401 and audited; JSON errors only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from emr.access import audit
from emr.access.audit import Actor
from emr.access.auth import bearer_token
from emr.core.exceptions import EmrError
from emr.models import NetworkSite
from emr.network import incoming, sites
from storage import StorageError

from .. import db

bp = Blueprint("network_api", __name__, url_prefix="/network/api/v1")


def _site() -> NetworkSite | None:
    s = db.session()
    site = sites.site_for_token(s, bearer_token())
    if site is None:
        s.rollback()
        audit.record(s, Actor(None, None, None, request.remote_addr), "network.api", outcome="denied",
                     object_type="route", object_id=request.path[:64], details={"method": request.method})
        s.commit()
    return site


def _call(fn: Any) -> Any:
    site = _site()
    if site is None:
        return jsonify(error="unauthorized"), 401, {"WWW-Authenticate": 'Bearer realm="filmless-network"'}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="a JSON object is required"), 400
    s = db.session()
    try:
        return jsonify(fn(s, site, body)), 200
    except EmrError as exc:
        s.rollback()
        return jsonify(error=str(exc)[:300], key=exc.key), exc.http_status
    except StorageError as exc:
        s.rollback()
        return jsonify(error=f"archive unavailable: {str(exc)[:200]}"), 503
    except IntegrityError:  # a concurrent delivery of the same thing won the race: the sender retries
        s.rollback()
        return jsonify(error="conflict with a concurrent request; try again"), 409


@bp.post("/studies")
def studies() -> Any:
    return _call(lambda s, site, body: incoming.receive_study(s, site, body, request.remote_addr))


@bp.post("/read-requests")
def read_requests() -> Any:
    return _call(lambda s, site, body: incoming.receive_read_request(s, site, body, request.remote_addr))


@bp.post("/reports")
def reports() -> Any:
    return _call(lambda s, site, body: incoming.receive_report(
        s, site, body, store=current_app.extensions.get("emr.store"),
        signing_config=current_app.extensions.get("emr.signing_config"), client_ip=request.remote_addr,
    ))


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Any:
    return jsonify(error=exc.name), exc.code or 500
