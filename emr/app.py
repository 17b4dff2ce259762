"""The Flask app factory: the one composition root of the EMR.

Every blueprint, error handler, template helper and extension is registered
here and nowhere else, so the layers below (``core`` ← ``models``/``db`` ←
``access`` ← features ← ``web``/``api``/``fhir``) never register themselves.
Things the EMR does not own — the image viewer — are mounted by the caller
through ``extensions``: each is called with the app and the
:class:`~emr.access.studies.StudyAccess` callables (see ``filmless.wiring``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import text as sql_text
from werkzeug.exceptions import HTTPException, NotFound

from emr import api, db, ehr
from emr.access.auth import load_session_user
from emr.access.care import OutOfCareScope
from emr.access.login_guard import LoginGuard
from emr.access.studies import StudyAccess, study_access
from emr.core.clock import to_local, use_timezone
from emr.core.dicom_dates import display_da
from emr.core.exceptions import EmrError
from emr.core.settings import EmrSettings
from emr.exports.money import fmt_vnd
from emr.fhir import views as fhir
from emr.hl7 import oru as hl7_oru
from emr.i18n import t
from emr.identity import adapter as identity_adapter
from emr.identity import checks as identity_checks
from emr.ops.instruments import observe_request
from emr.outbox import register_handler
from emr.signing import service as signing_service
from emr.web import (
    admin,
    can,
    care,
    catalogues,
    documents,
    exports,
    hl7,
    identity,
    login,
    network,
    network_api,
    ops,
    orders,
    outbox,
    patients,
    reading,
    reconcile,
    share,
    signing,
    users,
)
from emr.web.security_headers import security_headers

__all__ = ["AppExtension", "create_app", "load_or_create_secret"]

log = logging.getLogger(__name__)

AppExtension = Callable[[Flask, StudyAccess], None]
"""Mounts something the EMR does not own (the viewer) on the app, given the per-study access callables."""


def load_or_create_secret(path: Path) -> str:
    """The session-signing key, generated on first start and kept 0600."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        # Written whole, then linked into place: a process starting at the same moment (the EMR
        # and the gateway share the metrics token) never reads it half-written, and the first wins.
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _ict(value: Any, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """Stored times are naive UTC; show them in the facility's time zone (emr.core.clock)."""
    if value is None:
        return ""
    if hasattr(value, "hour"):
        return to_local(value).strftime(fmt)
    return value.strftime("%d/%m/%Y")


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _observe_request(response: Any) -> Any:
    """Request latency per endpoint (not per URL: no ids in label values), emr.ops.instruments."""
    started = g.get("request_started")
    if started is not None:
        rule = request.url_rule
        observe_request(rule.endpoint if rule is not None else None, request.method, response.status_code,
                        time.perf_counter() - started)
    return response


def _register_blueprints(app: Flask, csrf: CSRFProtect) -> None:
    """Every EMR blueprint; token-authenticated or session-less ones are exempt from CSRF."""
    csrf.exempt(api.bp)  # token-authenticated, no cookies
    app.register_blueprint(api.bp)
    for bp in (login.bp, patients.bp, orders.bp, reconcile.bp, admin.bp, documents.bp, users.bp):
        app.register_blueprint(bp)
    app.register_blueprint(signing.bp)  # signing form, signed PDFs, keys
    app.register_blueprint(signing.verify_bp)  # /verify (the printed QR code's target)
    app.register_blueprint(signing.verify_api_bp)  # /api/verify (public JSON, no session state)
    csrf.exempt(signing.verify_upload)
    api.document_routes(signing.PUBLIC_API_ROUTES)
    csrf.exempt(fhir.bp)  # token-authenticated
    app.register_blueprint(fhir.bp)  # /fhir
    app.register_blueprint(exports.bp)  # /export downloads
    app.register_blueprint(reading.bp)  # /reading
    csrf.exempt(reading.put_measurements)
    app.register_blueprint(share.bp)  # /s share links
    app.register_blueprint(care.bp)  # issue 10: break the glass (/patients/<id>/break-glass) and its review
    app.register_blueprint(outbox.bp)  # issue 15: /admin/outbox, the operator page of the durable outbox
    app.register_blueprint(hl7.bp)  # issue 15 §5: /admin/hl7 message log and replay
    app.register_blueprint(ops.bp)  # issue 16: /admin/ops, the operations page
    csrf.exempt(ops.metrics_bp)  # bearer token, no cookies, GET only
    app.register_blueprint(ops.metrics_bp)  # /metrics for Prometheus
    app.register_blueprint(identity.bp)  # issue 15 §3: /identity reconciliation queue
    app.register_blueprint(catalogues.bp)  # issue 15 §4: /admin/catalogues (Ministry catalogues, read-only)
    app.register_blueprint(network.bp)  # issue 15: sites registry, send / tele-read, received list
    csrf.exempt(network_api.bp)  # other facilities' calls: site bearer token, no cookies
    app.register_blueprint(network_api.bp)


# Blueprint name → how it answers errors; blueprints not listed answer with the HTML error page.
_HTTP_ERRORS: dict[str, Callable[[HTTPException], Any]] = {
    "api": api.http_error_response,
    "verify_api": api.http_error_response,
    "fhir": fhir.http_error_response,
}
_EMR_ERRORS: dict[str, Callable[[EmrError], Any]] = {
    "api": api.error_response,
    "verify_api": api.error_response,
    "fhir": fhir.emr_error_response,
}


def _owner(app: Flask) -> str | None:
    """The blueprint answering this request; for routing errors (no rule matched) the one owning the path."""
    if request.blueprint:
        return request.blueprint.split(".")[0]
    best: tuple[int, str] | None = None
    for name, bp in app.blueprints.items():
        prefix = (bp.url_prefix or "").rstrip("/")
        if prefix and (request.path == prefix or request.path.startswith(prefix + "/")):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), name)
    return best[1] if best else None


# Blueprints whose clients are programs (JSON, FHIR, other facilities): an unknown path stays a 404 there.
_NO_SLASH_REDIRECT = frozenset({*_HTTP_ERRORS, "network_api"})


def _without_trailing_slash(app: Flask) -> str | None:
    """``/admin/ops/`` → ``/admin/ops`` when only the page without the slash exists (Werkzeug redirects
    the other way by itself). GET and HEAD only; the target is built by ``url_for`` from the matched
    endpoint, never copied from the request, so it cannot lead off the site."""
    path = request.path
    if request.method not in ("GET", "HEAD") or request.url_rule is not None:
        return None
    if len(path) < 2 or not path.endswith("/") or path.endswith("//"):
        return None
    try:
        endpoint, args = app.create_url_adapter(request).match(path[:-1], method="GET")  # type: ignore[union-attr]
    except HTTPException:  # no such page either, another method, or Werkzeug's own redirect
        return None
    target = url_for(endpoint, **args)
    if request.query_string:
        target += "?" + request.query_string.decode("utf-8", "replace")  # the Location is made a URI again
    return target


def _rollback_request_session() -> None:
    """Before an error page: a failed flush or commit leaves the request's session unusable until rolled
    back, and the page itself reads the database (the user's name in the header)."""
    try:
        db.session().rollback()
    except Exception:  # noqa: BLE001 - the error page must still be answered
        log.exception("could not roll back the request's session before the error page")


def _error_page(message_key: str, status: int) -> Any:
    """The Vietnamese error page; if even that cannot be rendered (the database is gone), plain text."""
    try:
        return render_template("error.html", message=t(message_key)), status
    except Exception:  # noqa: BLE001 - never fall through to the server's bare English page
        log.exception("could not render the error page")
        return t(message_key) + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        return render_template("error.html", message=t("errors.csrf")), 400

    @app.errorhandler(EmrError)
    def _emr(exc: EmrError) -> Any:
        db.session().rollback()
        render = _EMR_ERRORS.get(_owner(app) or "")
        if render is not None:
            response = app.make_response(render(exc))
        else:
            response = app.make_response((render_template("error.html", message=t(exc.key)), exc.http_status))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(OutOfCareScope)
    def _out_of_care(exc: OutOfCareScope) -> Any:
        """HTML pages offer break-the-glass; API-style blueprints answer as for any EMR error."""
        if (_owner(app) or "") in _EMR_ERRORS:
            return _emr(exc)
        return care.out_of_scope(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        """HTTP errors, and (as InternalServerError) any exception a view did not handle."""
        _rollback_request_session()  # e.g. an IntegrityError: rendering would hit PendingRollbackError
        owner = _owner(app) or ""
        if isinstance(exc, NotFound) and owner not in _NO_SLASH_REDIRECT:
            target = _without_trailing_slash(app)
            if target is not None:
                return redirect(target, 308)
        render = _HTTP_ERRORS.get(owner)
        if render is not None:
            return render(exc)
        code = exc.code or 500
        key = {403: "errors.forbidden", 404: "errors.not_found", 413: "errors.too_large"}.get(code, "errors.generic")
        return _error_page(key, code)


def create_app(
    settings: EmrSettings,
    *,
    store: Any = None,
    test_config: dict[str, Any] | None = None,
    extensions: Iterable[AppExtension] = (),
) -> Flask:
    """The EMR web app; ``extensions`` mount what the EMR does not own (``filmless.wiring.viewer_extension``)."""
    use_timezone(settings.timezone)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=load_or_create_secret(settings.secret_key_file),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        SESSION_COOKIE_NAME="filmless_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["emr.settings"] = settings
    app.extensions["emr.store"] = store
    engine = app.config.get("EMR_ENGINE") or db.make_engine(settings.database_url)
    app.extensions["emr.engine"] = engine
    db.init_app(app, db.make_session_factory(engine))
    signing_config = signing_service.signing_config(settings, store)
    if settings.hl7.receiver:  # issue 15 §5: the signed report goes to the HIS as ORU^R01 through the outbox
        signing_config = replace(signing_config, on_report_signed=(*signing_config.on_report_signed,
                                                                   hl7_oru.report_signed_hook(settings)))
        register_handler(hl7_oru.KIND, hl7_oru.deliver_oru)
    app.extensions["emr.signing_config"] = signing_config
    app.extensions["emr.signed_artifacts"] = signing_service.DbArtifacts()  # what the exports attach
    ehr.install(settings)  # issue 15: push visit summaries and signed reports to the health record (outbox)
    app.extensions["emr.metrics_token"] = load_or_create_secret(
        settings.metrics_token_file or settings.data_dir / "metrics-token"
    )
    # Issue 15 §3: the population-database gateway (None: identity checks off).
    identity_adapter.configure(
        identity_adapter.gateway_from_settings(
            settings.identity_url, settings.identity_credential_file, settings.identity_timeout
        )
    )
    register_handler(identity_checks.OUTBOX_KIND, identity_checks.deliver)  # queued checks run by the outbox worker

    csrf = CSRFProtect(app)
    _register_blueprints(app, csrf)
    access = study_access()
    for extend in extensions:
        extend(app, access)
    _register_error_handlers(app)

    app.jinja_env.globals.update(t=t, hospital_name=settings.hospital_name, can=can, **signing.template_helpers())
    # base.html: the administration menu (the same list as /admin) and the banner of emergency accesses in force.
    app.jinja_env.globals.update(admin_sections=admin.admin_sections, break_glass_banner=care.break_glass_banner)
    app.jinja_env.globals["role_label"] = login.role_label  # "Trưởng khoa" for a head of department
    app.jinja_env.filters["ict"] = _ict
    app.jinja_env.filters["da"] = display_da
    app.jinja_env.filters["zip"] = lambda a, b: zip(a, b, strict=False)
    app.jinja_env.filters["vnd"] = fmt_vnd
    app.before_request(load_session_user)
    app.before_request(_start_timer)
    app.after_request(_observe_request)

    @app.get("/healthz")
    def _healthz() -> Any:
        """For `filmless check` and load balancers: the database answers and is migrated. No data shown."""
        plain = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
        try:
            db.session().execute(sql_text("SELECT version_num FROM alembic_version"))  # reachable and migrated
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            db.session().rollback()
            return "database unavailable\n", 503, plain
        return "ok\n", 200, plain

    app.extensions["emr.login_guard"] = LoginGuard(
        rate_per_minute=settings.login_rate_per_minute,
        failures_before_backoff=settings.lockout_failures,
        max_backoff=settings.lockout_minutes * 60.0,
    )
    app.after_request(security_headers(https=settings.public_url.startswith("https://")))

    @app.get("/favicon.ico")
    def _favicon() -> Any:
        """Browsers ask every page (and the viewer) for /favicon.ico: answer it instead of a 404."""
        return app.send_static_file("favicon.ico")

    return app
