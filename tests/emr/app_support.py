"""A real EMR app on a copy of the migrated SQLite template, for module-scoped fixtures (many logins)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from emr import EmrSettings, create_app
from emr.access.login_guard import LoginGuard
from emr.db import make_engine, make_session_factory

__all__ = ["cheap_password_hashing", "logged_in", "sqlite_app"]


def sqlite_app(tmp: Path, template: Path, **settings: Any) -> tuple[EmrSettings, Any, Flask, Any]:
    """(settings, engine, app, session factory); login throttling off (tests log in many times)."""
    shutil.copy(template, tmp / "emr.sqlite3")
    values: dict[str, Any] = {"data_dir": tmp, "secret_key_file": tmp / "key"}
    values.update(settings, database_url=f"sqlite:///{tmp / 'emr.sqlite3'}")
    config = EmrSettings(**values)
    engine = make_engine(config.database_url)
    app = create_app(config, test_config={"TESTING": True, "EMR_ENGINE": engine})
    app.extensions["emr.login_guard"] = LoginGuard(rate_per_minute=10**6, burst=10**6)
    return config, engine, app, make_session_factory(engine)


def cheap_password_hashing() -> pytest.MonkeyPatch:
    """Argon2 at its lowest cost (production's ≈ 50 ms a hash) for a module that logs in often; the
    caller undoes the returned patch when its fixture ends."""
    from argon2 import PasswordHasher

    import emr.access.users as users_module

    patch = pytest.MonkeyPatch()
    patch.setattr(users_module, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    return patch


def logged_in(app: Flask, username: str, password: str | None = None) -> FlaskClient:
    """A test client of ``app`` with ``username`` logged in through the login form (the test password)."""
    from tests.emr.conftest import PASSWORD, csrf_token

    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"username": username, "password": password or PASSWORD,
                               "csrf_token": csrf_token(c, "/login")})
    assert r.status_code == 302, username
    return c
