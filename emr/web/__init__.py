"""Server-rendered Vietnamese web UI, one blueprint per domain."""

from __future__ import annotations

from flask import Flask, g

from emr.access.permissions import allowed

__all__ = ["register"]


def can(action: str) -> bool:
    """For templates: show a button only to roles that may use it (the route checks again)."""
    user = g.get("user")
    return user is not None and allowed(user.role, action)


def register(app: Flask) -> None:
    from emr.web import admin, documents, orders, patients, reconcile, users
    from emr.web import login as auth

    for bp in (auth.bp, patients.bp, orders.bp, reconcile.bp, admin.bp, documents.bp, users.bp):
        app.register_blueprint(bp)
    app.jinja_env.globals["can"] = can
    from emr.web import signing

    signing.register(app)  # signing form, signed PDFs, /verify (QR target) and /api/verify
