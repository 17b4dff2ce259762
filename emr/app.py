"""The Flask app factory."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import text as sql_text
from werkzeug.exceptions import HTTPException

from emr.access.auth import load_session_user
from emr.core.exceptions import EmrError
from emr.core.settings import EmrSettings

from . import db
from .core.dicom_dates import display_da
from .exports.money import fmt_vnd
from .i18n import t

__all__ = ["create_app", "load_or_create_secret"]


def load_or_create_secret(path: Path) -> str:
    """The session-signing key, generated on first start and kept 0600."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def _ict(value: Any, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """Stored times are naive UTC; show them in Vietnam time (UTC+7)."""
    if value is None:
        return ""
    if hasattr(value, "hour"):
        return (value + timedelta(hours=7)).strftime(fmt)
    return value.strftime("%d/%m/%Y")


def create_app(settings: EmrSettings, *, store: Any = None, test_config: dict[str, Any] | None = None) -> Flask:
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

    csrf = CSRFProtect(app)
    from emr.web import register as register_views
    from emr.web.exports import register as register_exports

    from .api import bp as api_bp
    from .api import error_response

    csrf.exempt(api_bp)  # token-authenticated, no cookies
    app.register_blueprint(api_bp)
    register_views(app)
    register_exports(app, csrf)  # /export downloads and the /fhir API
    from emr.web.viewer_mount import register_reading

    register_reading(app, csrf, settings, store)  # /viewer, /reading, /s share links, /dicomweb proxy (with a store)

    app.jinja_env.globals.update(t=t, hospital_name=settings.hospital_name)
    app.jinja_env.filters["ict"] = _ict
    app.jinja_env.filters["da"] = display_da
    app.jinja_env.filters["zip"] = lambda a, b: zip(a, b, strict=False)
    app.jinja_env.filters["vnd"] = fmt_vnd
    app.before_request(load_session_user)

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

    @app.get("/favicon.ico")
    def _favicon() -> Any:
        """Browsers ask every page (and the viewer) for /favicon.ico: answer it instead of a 404."""
        return app.send_static_file("favicon.ico")

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/api/") or g.get("user") is not None:
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        return render_template("error.html", message=t("errors.csrf")), 400

    @app.errorhandler(EmrError)
    def _emr(exc: EmrError) -> Any:
        db.session().rollback()
        if request.path.startswith("/api/"):
            response = app.make_response(error_response(exc))
        else:
            response = app.make_response((render_template("error.html", message=t(exc.key)), exc.http_status))
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = exc.code or 500
        if request.path.startswith("/api/"):
            name = {
                400: "bad_request",
                401: "unauthorized",
                403: "forbidden",
                404: "not_found",
                405: "method_not_allowed",
                413: "too_large",
            }.get(code, "error")
            return jsonify({"error": name, "message": exc.description or name, "fields": {}}), code
        key = {403: "errors.forbidden", 404: "errors.not_found", 413: "errors.too_large"}.get(code, "errors.generic")
        return render_template("error.html", message=t(key)), code

    return app
